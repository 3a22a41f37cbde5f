"""The auth interceptor on an in-process gRPC server: the public API needs a key and its
handlers learn the tenant; health stays open; a refusal never echoes the key."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from avatarflow.contracts.v1 import api_pb2
from avatarflow_gateway.auth import AuthInterceptor, KeyFile, caller
from avatarflow_gateway.keys import Quotas, hash_key, new_key

KEY = new_key()


class Echo:
    """Answers with the tenant the interceptor named, unary and streaming."""

    async def RegisterAvatar(self, request: api_pb2.RegisterAvatarRequest,
                             context: grpc.aio.ServicerContext) -> api_pb2.RegisterAvatarResponse:
        return api_pb2.RegisterAvatarResponse(avatar_id=caller().name)

    async def Session(self, requests: AsyncIterator[api_pb2.SessionRequest],
                      context: grpc.aio.ServicerContext) -> None:
        async def in_a_task() -> str:  # tasks the handler spawns know the tenant too
            return caller().name

        name = await asyncio.create_task(in_a_task())
        await context.write(api_pb2.SessionResponse(
            started=api_pb2.SessionStarted(session_id=name)))


def _serve(tmp_path: Path, body: Callable[[grpc.aio.Channel], Awaitable[Any]]) -> Any:
    path = tmp_path / "keys.yaml"
    path.write_text(yaml.safe_dump({"tenants": {"acme": {"keys": [hash_key(KEY)]}}}))

    async def main() -> Any:
        server = grpc.aio.server(interceptors=[AuthInterceptor(
            KeyFile(str(path), Quotas(1, 1, 1.0)))])
        echo = Echo()
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
            "avatarflow.v1.Avatars", {
                "RegisterAvatar": grpc.unary_unary_rpc_method_handler(
                    echo.RegisterAvatar, api_pb2.RegisterAvatarRequest.FromString,
                    api_pb2.RegisterAvatarResponse.SerializeToString),
                "Session": grpc.stream_stream_rpc_method_handler(
                    echo.Session, api_pb2.SessionRequest.FromString,
                    api_pb2.SessionResponse.SerializeToString)}),))
        health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                return await asyncio.wait_for(body(channel), 30)
        finally:
            await server.stop(0)

    return asyncio.run(main())


def _register(metadata: tuple[tuple[str, str], ...]) -> Callable[[grpc.aio.Channel], Any]:
    async def call(channel: grpc.aio.Channel) -> Any:
        stub = channel.unary_unary("/avatarflow.v1.Avatars/RegisterAvatar",
                                   api_pb2.RegisterAvatarRequest.SerializeToString,
                                   api_pb2.RegisterAvatarResponse.FromString)
        try:
            return (await stub(api_pb2.RegisterAvatarRequest(), metadata=metadata)).avatar_id
        except grpc.aio.AioRpcError as exc:
            return exc
    return call


def test_a_known_key_names_the_tenant_in_unary_and_streaming_handlers(tmp_path: Path) -> None:
    async def both(channel: grpc.aio.Channel) -> tuple[str, str]:
        unary = await _register((("authorization", f"Bearer {KEY}"),))(channel)
        call = channel.stream_stream("/avatarflow.v1.Avatars/Session",
                                     api_pb2.SessionRequest.SerializeToString,
                                     api_pb2.SessionResponse.FromString)(
            metadata=(("authorization", f"bearer {KEY}"),))
        await call.done_writing()
        return unary, (await call.read()).started.session_id

    assert _serve(tmp_path, both) == ("acme", "acme")


@pytest.mark.parametrize("metadata,words", [
    ((), "missing API key"),
    ((("authorization", "Bearer " + new_key()),), "invalid API key"),
    ((("authorization", KEY),), "must be 'Bearer <API key>'"),
    ((("authorization", "Basic " + KEY),), "must be 'Bearer <API key>'"),
])
def test_a_missing_or_wrong_key_is_unauthenticated_without_echoing_it(
        tmp_path: Path, metadata: tuple, words: str) -> None:
    err = _serve(tmp_path, _register(metadata))
    assert isinstance(err, grpc.aio.AioRpcError)
    assert err.code() == grpc.StatusCode.UNAUTHENTICATED and words in err.details()
    assert "afk_" not in err.details()


def test_health_needs_no_key(tmp_path: Path) -> None:
    async def check(channel: grpc.aio.Channel) -> int:
        reply = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=""))
        return int(reply.status)

    assert _serve(tmp_path, check) == health_pb2.HealthCheckResponse.SERVING
