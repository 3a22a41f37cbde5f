"""``avatarflow.v1.Avatars``: RegisterAvatar and the bidirectional Session stream."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import uuid
from collections.abc import AsyncIterator

import grpc

from avatarflow.avatars.store import avatar_key
from avatarflow.bus import keys
from avatarflow.bus.base import Commit
from avatarflow.bus.streams import RedisBus
from avatarflow.contracts import messages as m
from avatarflow.contracts.codec import controls_from_pb
from avatarflow.contracts.errors import AvatarflowError, InvalidInput, NotFound
from avatarflow.contracts.grpc_status import abort, error_for
from avatarflow.contracts.images import decode_image
from avatarflow.contracts.output import resolve_output
from avatarflow.contracts.v1 import api_pb2, api_pb2_grpc, internal_pb2, internal_pb2_grpc
from avatarflow.runtime.registry import FRAMES
from avatarflow.runtime.settings import Settings
from avatarflow.runtime.tasks import TaskGroup
from avatarflow.telemetry import tracing
from avatarflow_gateway.config import parse_config, pcm_from_bytes
from avatarflow_gateway.session import CLOSED, GatewaySession

log = logging.getLogger(__name__)

PREPARE_TIMEOUT_S = 60.0
ABANDON_WAIT_S = 10.0


class AvatarsServicer(api_pb2_grpc.AvatarsServicer):
    def __init__(self, settings: Settings, bus: RedisBus,
                 portraits: internal_pb2_grpc.PortraitsStub) -> None:
        self.settings, self.bus, self.portraits = settings, bus, portraits
        self.sessions: dict[str, GatewaySession] = {}
        self._preparing: dict[str, asyncio.Future[None]] = {}
        self.background = TaskGroup("gateway")

    def mean_fps(self) -> float:
        """Mean achieved frame rate of the sessions over their last summary period."""
        rates = [s.fps_now for s in self.sessions.values() if s.fps_now > 0]
        return sum(rates) / len(rates) if rates else 0.0

    # -- portraits -------------------------------------------------------------------------

    async def RegisterAvatar(self, request: api_pb2.RegisterAvatarRequest,
                             context: grpc.aio.ServicerContext) -> api_pb2.RegisterAvatarResponse:
        try:
            o = request.output
            output = api_pb2.OutputFormat(**dict(zip(
                ("mode", "width", "height", "fps"),
                resolve_output(o.mode, o.width, o.height, o.fps), strict=True)))
            avatar_id = await self._ensure_avatar(request.image, "", output)
        except AvatarflowError as exc:
            await abort(context, exc)
        return api_pb2.RegisterAvatarResponse(avatar_id=avatar_id, output=output,
                                              ttl_s=int(self.settings.avatar_ttl_s))

    async def _ensure_avatar(self, image: bytes, avatar_id: str,
                             output: api_pb2.OutputFormat) -> str:
        """Stores an uploaded portrait and has the renderer analyse it for ``output``, unless
        that analysis is cached. Returns the avatar id."""
        ttl_ms = int(self.settings.avatar_ttl_s * 1000)
        if image:
            await asyncio.to_thread(decode_image, image)  # a clear error before anything else
            avatar_id = "av-" + hashlib.sha256(image).hexdigest()[:32]
            await self.bus.redis.set(keys.avatar(f"{avatar_id}:image"), image, px=ttl_ms)
        analysis = keys.avatar(avatar_key(avatar_id, output.mode, output.width, output.height))
        if await self.bus.redis.pexpire(analysis, ttl_ms):
            return avatar_id  # analysed before; its lease is renewed
        if not await self.bus.redis.exists(keys.avatar(f"{avatar_id}:image")):
            raise NotFound(f"unknown avatar id {avatar_id!r}: register the portrait with "
                           "RegisterAvatar (registrations expire after "
                           f"{self.settings.avatar_ttl_s:g} s unused)")
        # Sessions that ask for the same new analysis at once share one renderer call.
        key = analysis
        if key not in self._preparing:
            self._preparing[key] = asyncio.ensure_future(self._prepare(avatar_id, output))
            self._preparing[key].add_done_callback(lambda _: self._preparing.pop(key, None))
        await asyncio.shield(self._preparing[key])
        return avatar_id

    async def _prepare(self, avatar_id: str, output: api_pb2.OutputFormat) -> None:
        try:
            await self.portraits.Prepare(
                internal_pb2.PrepareRequest(avatar_id=avatar_id, output=output),
                timeout=PREPARE_TIMEOUT_S)
        except grpc.aio.AioRpcError as exc:
            raise error_for(exc.code(), exc.details() or "portrait analysis failed") from None

    # -- sessions --------------------------------------------------------------------------

    async def Session(self, request_iterator: AsyncIterator[api_pb2.SessionRequest],
                      context: grpc.aio.ServicerContext) -> AsyncIterator[api_pb2.SessionResponse]:
        session: GatewaySession | None = None
        try:
            session = await self._open(request_iterator,
                                       tracing.from_metadata(context.invocation_metadata()))
            self.sessions[session.sid] = session
            yield await session.open()
            async with TaskGroup(f"session-{session.sid}") as tasks:
                tasks.spawn(self._read(session, request_iterator), "read")
                tasks.spawn(session.send_loop(), "send")
                tasks.spawn(session.tick_loop(), "tick")
                while True:
                    item = await session.out.get()
                    if item is CLOSED:
                        return
                    if isinstance(item, BaseException):
                        raise item
                    yield item
        except AvatarflowError as exc:
            await abort(context, exc)
        finally:
            if session is not None:
                self.background.spawn(self._close(session), f"close-{session.sid}")

    async def _open(self, requests: AsyncIterator[api_pb2.SessionRequest],
                    traceparent: str = "") -> GatewaySession:
        first = await anext(aiter(requests), None)
        kind = None if first is None else first.WhichOneof("kind")
        if kind != "config":
            raise InvalidInput(f"the first message of a session must be a SessionConfig, got "
                               f"{kind or 'nothing'}")
        spec = parse_config(first.config)
        avatar_id = await self._ensure_avatar(spec.image, spec.avatar_id, spec.output())
        return GatewaySession(uuid.uuid4().hex, spec, avatar_id, self.bus, self.settings,
                              traceparent)

    async def _read(self, s: GatewaySession,
                    requests: AsyncIterator[api_pb2.SessionRequest]) -> None:
        try:
            async for r in requests:
                kind = r.WhichOneof("kind")
                if kind == "audio":
                    await s.audio(pcm_from_bytes(r.audio.pcm16, s.rate))
                elif kind == "controls":
                    await s.controls(m.ControlUpdate(
                        session_id=s.sid, controls=controls_from_pb(r.controls.controls)))
                elif kind == "interrupt":
                    await s.interrupt()
                elif kind == "end":
                    await s.end_audio()
                elif kind == "config":
                    raise InvalidInput("a session takes one SessionConfig, at the start")
                else:
                    raise InvalidInput("empty SessionRequest: set one of its fields")
            await s.end_audio()  # the client closed its side: same as EndAudio
        except AvatarflowError as exc:
            s.out.put_nowait(exc)

    async def _close(self, s: GatewaySession) -> None:
        """After the response stream ends: release the session on every stage."""
        try:
            if not s.finished:
                await s.abandon()
                await _until_end(s, ABANDON_WAIT_S)
        finally:
            self.sessions.pop(s.sid, None)
            self.bus.detach(s.sid, FRAMES)
            await self.bus.end_session(s.sid)

    async def dispatch(self) -> None:
        """Routes final frames from the bus to their sessions and acknowledges them."""
        while True:
            batch = await self.bus.receive_batch(FRAMES, keys.GATEWAY_GROUP, 16)
            for d in batch:
                s = self.sessions.get(d.msg.session_id)
                if s is not None:
                    s.deliver(d.turn, d.msg)
            await self.bus.commit_many(None, [
                Commit(d, (), ended=isinstance(d.msg, m.EndOfAudio | m.SessionError))
                for d in batch])


async def _until_end(s: GatewaySession, timeout: float) -> None:
    """Waits (bounded) for the pipeline to pass EndOfAudio back after an abandon, so every
    stage has released the session."""
    async def wait() -> None:
        while True:
            _, msg = await s.inbox.get()
            if isinstance(msg, m.EndOfAudio | m.SessionError):
                return

    try:
        await asyncio.wait_for(wait(), timeout)
    except TimeoutError:
        log.warning("session %s: the pipeline did not confirm its end within %.0f s", s.sid,
                    timeout)
