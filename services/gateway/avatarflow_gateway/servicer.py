"""``avatarflow.v1.Avatars``: RegisterAvatar and the bidirectional Session stream, translated
to and from the session front, which owns everything a session does."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from avatarflow.contracts.codec import controls_from_pb
from avatarflow.contracts.errors import AvatarflowError, InvalidInput
from avatarflow.contracts.grpc_status import abort
from avatarflow.contracts.output import resolve_output
from avatarflow.contracts.v1 import api_pb2, api_pb2_grpc
from avatarflow.runtime.tasks import TaskGroup
from avatarflow.session import LiveSession, SessionFront
from avatarflow.telemetry import tracing
from avatarflow_gateway import outbound, responses
from avatarflow_gateway.config import parse_config, pcm_from_bytes
from avatarflow_gateway.wire import Undecodable, checked

Requests = AsyncIterator[api_pb2.SessionRequest | Undecodable]


class AvatarsServicer(api_pb2_grpc.AvatarsServicer):
    def __init__(self, front: SessionFront) -> None:
        self.front = front

    async def RegisterAvatar(self, request: api_pb2.RegisterAvatarRequest | Undecodable,
                             context: grpc.aio.ServicerContext) -> api_pb2.RegisterAvatarResponse:
        try:
            request = checked(request)
            o = request.output
            mode, width, height, fps = resolve_output(o.mode, o.width, o.height, o.fps)
            output = api_pb2.OutputFormat(mode=mode, width=width, height=height, fps=fps)
            avatar_id = await self.front.avatars.ensure(request.image, "", output)
        except AvatarflowError as exc:
            await abort(context, exc)
        return api_pb2.RegisterAvatarResponse(
            avatar_id=avatar_id, output=output, ttl_s=int(self.front.avatars.registry.ttl_s))

    async def Session(self, request_iterator: Requests,
                      context: grpc.aio.ServicerContext) -> None:
        session: LiveSession | None = None
        try:
            spec = parse_config(await _first_config(request_iterator))
            session = await self.front.open(
                spec, tracing.from_metadata(context.invocation_metadata()))
            await context.write(responses.started(session.started))
            async with TaskGroup(f"session-{session.sid}") as tasks:
                tasks.spawn(_read(session, request_iterator), "read")
                await outbound.send_events(context, session, spec.encoding)
        except AvatarflowError as exc:
            await abort(context, exc)
        finally:
            if session is not None:
                self.front.release(session)


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
