"""``avatarflow.v1.Avatars``: RegisterAvatar and the bidirectional Session stream, translated
to and from the session front, which owns everything a session does."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace

import grpc

from avatarflow.contracts.codec import controls_from_pb
from avatarflow.contracts.errors import AvatarflowError, InvalidInput, PermissionDenied
from avatarflow.contracts.grpc_status import abort
from avatarflow.contracts.output import resolve_output
from avatarflow.contracts.v1 import api_pb2, api_pb2_grpc
from avatarflow.runtime.tasks import TaskGroup
from avatarflow.session import LiveSession, SessionFront
from avatarflow.session.portraits import avatar_id_for, check_owner
from avatarflow.telemetry import tracing
from avatarflow_gateway import outbound, responses
from avatarflow_gateway.admission import REJECTED, Admission, Ticket
from avatarflow_gateway.auth import caller
from avatarflow_gateway.config import parse_config, pcm_from_bytes
from avatarflow_gateway.keys import Tenant
from avatarflow_gateway.wire import Undecodable, checked

Requests = AsyncIterator[api_pb2.SessionRequest | Undecodable]


class AvatarsServicer(api_pb2_grpc.AvatarsServicer):
    """The handlers; the caller's tenant comes from the auth interceptor (``auth.caller``)."""

    def __init__(self, front: SessionFront, admission: Admission) -> None:
        self.front, self.admission = front, admission

    async def RegisterAvatar(self, request: api_pb2.RegisterAvatarRequest | Undecodable,
                             context: grpc.aio.ServicerContext) -> api_pb2.RegisterAvatarResponse:
        tenant = caller()
        try:
            request = checked(request)
            o = request.output
            mode, width, height, fps = resolve_output(o.mode, o.width, o.height, o.fps)
            output = api_pb2.OutputFormat(mode=mode, width=width, height=height, fps=fps)
            if not request.image:
                raise InvalidInput("RegisterAvatar needs the portrait's bytes in 'image' "
                                   "(PNG, JPEG, WebP ...)")
            self.admission.register(tenant)
            async with self._counted(tenant, request.image, ""):
                avatar_id = await self.front.avatars.ensure(request.image, "", output,
                                                            tenant.name)
        except AvatarflowError as exc:
            await abort(context, exc)
        return api_pb2.RegisterAvatarResponse(
            avatar_id=avatar_id, output=output, ttl_s=int(self.front.avatars.registry.ttl_s))

    @asynccontextmanager
    async def _counted(self, tenant: Tenant, image: bytes, avatar_id: str
                       ) -> AsyncIterator[None]:
        """Counts the portrait a block stores (``image``) or uses (``avatar_id``) against the
        tenant's avatars; an upload the block fails on (a bad image) is uncounted again."""
        if not image:
            await self.admission.used_avatar(tenant, avatar_id)
            yield
            return
        avatar_id = avatar_id_for(image, tenant.name)
        new = await self.admission.add_avatar(tenant, avatar_id)
        try:
            yield
        except AvatarflowError:
            if new:
                await self.admission.forget_avatar(tenant, avatar_id)
            raise

    async def Session(self, request_iterator: Requests,
                      context: grpc.aio.ServicerContext) -> None:
        tenant = caller()
        session: LiveSession | None = None
        ticket: Ticket | None = None
        try:
            spec = replace(parse_config(await _first_config(request_iterator)),
                           tenant=tenant.name)
            if spec.avatar_id:
                _owned(spec.avatar_id, tenant)  # before any limit or lookup
            ticket = await self.admission.open_session(tenant)
            async with self._counted(tenant, spec.image, spec.avatar_id):
                session = await self.front.open(
                    spec, tracing.from_metadata(context.invocation_metadata()))
            await context.write(responses.started(session.started))
            async with TaskGroup(f"session-{session.sid}") as tasks:
                tasks.spawn(_read(session, request_iterator), "read")
                await outbound.send_events(context, session, spec.encoding,
                                           lambda: self.front.release(session))
        except AvatarflowError as exc:
            await abort(context, exc)
        finally:
            if session is not None:
                self.front.release(session)
            if ticket is not None:
                self.admission.release(ticket)


def _owned(avatar_id: str, tenant: Tenant) -> None:
    try:
        check_owner(avatar_id, tenant.name)
    except PermissionDenied:
        REJECTED.labels("permission_denied").inc()
        raise


async def _first_config(requests: Requests) -> api_pb2.SessionConfig:
    first = await anext(aiter(requests), None)
    if first is not None:
        first = checked(first)
    kind = None if first is None else first.WhichOneof("kind")
    if first is None or kind != "config":
        raise InvalidInput(f"the first message of a session must be a SessionConfig, got "
                           f"{kind or 'nothing'}")
    return first.config


async def _read(s: LiveSession, requests: Requests) -> None:
    """The client's messages, in order, as calls on the session."""
    try:
        async for request in requests:
            r = checked(request)
            kind = r.WhichOneof("kind")
            if kind == "audio":
                await s.send_audio(pcm_from_bytes(r.audio.pcm16, s.rate))
            elif kind == "controls":
                await s.set_controls(controls_from_pb(r.controls.controls))
            elif kind == "interrupt":
                await s.interrupt()
            elif kind == "end":
                await s.end()
            elif kind == "config":
                raise InvalidInput("a session takes one SessionConfig, at the start")
            else:
                raise InvalidInput("empty SessionRequest: set one of its fields")
        await s.end()  # the client closed its side: same as EndAudio
    except AvatarflowError as exc:
        s.fail(exc)
    # The call may stay open a while for its status to reach a client that is not reading;
    # what the client still sends meanwhile is dropped, so its writes do not block. (A write
    # left blocked fails when the call ends, and grpc.aio then reports INTERNAL to that client
    # instead of the status.) Once the call is over, grpc ends the requests with AbortError.
    with contextlib.suppress(grpc.aio.AbortError):
        async for _ in requests:
            pass
