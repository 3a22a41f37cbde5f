"""The client's side of keys and TLS: the key reaches the gateway on every call (streams too,
ending as streams do), the flags of ``avatarflow client`` and ``avatarflow up``."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

import grpc
import pytest

from avatarflow.cli import client as client_cli
from avatarflow.cli import up
from avatarflow.client.api import AvatarClient, TlsOptions
from avatarflow.contracts.errors import InvalidInput
from avatarflow.contracts.v1 import api_pb2, api_pb2_grpc


class _Echo(api_pb2_grpc.AvatarsServicer):
    """Answers with the authorization and traceparent metadata it got."""

    async def RegisterAvatar(self, request, context):  # noqa: N802 - the generated name
        md = dict(context.invocation_metadata())
        return api_pb2.RegisterAvatarResponse(avatar_id=md.get("authorization", "-"))

    async def Session(self, requests, context):  # noqa: N802
        md = dict(context.invocation_metadata())
        async for _ in requests:
            yield api_pb2.SessionResponse(started=api_pb2.SessionStarted(
                session_id=md.get("authorization", "-"), avatar_id=md.get("traceparent", "-")))
            return


def test_the_key_goes_with_every_call() -> None:
    async def main() -> tuple[str, str, str, bool]:
        server = grpc.aio.server()
        api_pb2_grpc.add_AvatarsServicer_to_server(_Echo(), server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            async with AvatarClient(f"127.0.0.1:{port}", api_key="afk_secret") as c:
                registered = (await c.register(b"x")).avatar_id
                session = c.open(api_pb2.SessionConfig(), metadata=[("traceparent", "t-1")])
                started = await session.start()
                # the stream still ends as grpc streams end: EOF, then OK
                ended = [r async for r in session.responses()] == []
                return registered, started.session_id, started.avatar_id, ended
        finally:
            await server.stop(0)

    assert asyncio.run(main()) == ("Bearer afk_secret", "Bearer afk_secret", "t-1", True)


def test_bad_keys_and_tls_options_are_named(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="line break"):
        AvatarClient("127.0.0.1:1", api_key="afk_x\n")
    with pytest.raises(InvalidInput, match="--cert and --key together"):
        TlsOptions(cert="client.pem")
    with pytest.raises(InvalidInput, match="cannot read the CA certificate"):
        AvatarClient("127.0.0.1:1", tls=TlsOptions(ca=str(tmp_path / "missing.pem")))


def _client_args(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    client_cli.add_arguments(p)
    return p.parse_args(["--image", "i.png", "--audio", "a.wav", "--out", "o.mp4", *argv])


def test_client_flags(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.delenv("AVATARFLOW_API_KEY", raising=False)
    assert client_cli.security(_client_args()) == (None, "")
    tls, key = client_cli.security(_client_args("--ca", "ca.pem", "--server-name", "gw"))
    assert tls == TlsOptions(ca="ca.pem", server_name="gw") and key == ""
    monkeypatch.setenv("AVATARFLOW_API_KEY", " afk_from_env\n")  # as `cat`-ed from a file
    assert client_cli.security(_client_args("--tls")) == (TlsOptions(), "afk_from_env")
    assert capsys.readouterr().err == ""
    client_cli.security(_client_args("--target", "gw.example:443"))
    assert "without TLS" in capsys.readouterr().err


def _rpc_error(code: grpc.StatusCode, trailing: tuple = ()) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(*trailing),
                                details="refused")


def test_refusals_say_what_to_do() -> None:
    assert "AVATARFLOW_API_KEY" in client_cli._hint(_rpc_error(grpc.StatusCode.UNAUTHENTICATED))
    assert "another tenant" in client_cli._hint(_rpc_error(grpc.StatusCode.PERMISSION_DENIED))
    hint = client_cli._hint(_rpc_error(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                       (("retry-after-ms", "2500"),)))
    assert "try again in 2.5 s" in hint
    assert client_cli._hint(_rpc_error(grpc.StatusCode.NOT_FOUND)) == ""


def _up_args(*argv: str) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    up.add_arguments(p)
    return p.parse_args(list(argv))


def test_up_security_flags(tmp_path: Path) -> None:
    files = {name: tmp_path / name for name in ("keys.yaml", "c.pem", "c.key", "ca.pem")}
    for f in files.values():
        f.write_text("x")
    assert up.gateway_env(_up_args()) == {}
    assert up.security_line({}) == "plaintext (no TLS), no API keys"
    env = up.gateway_env(_up_args("--api-keys", str(files["keys.yaml"]),
                                  "--tls-cert", str(files["c.pem"]),
                                  "--tls-key", str(files["c.key"]),
                                  "--tls-client-ca", str(files["ca.pem"])))
    assert env == {"AVATARFLOW_GATEWAY_AUTH": "required",
                   "AVATARFLOW_GATEWAY_API_KEYS_FILE": str(files["keys.yaml"]),
                   "AVATARFLOW_GATEWAY_TLS_CERT": str(files["c.pem"]),
                   "AVATARFLOW_GATEWAY_TLS_KEY": str(files["c.key"]),
                   "AVATARFLOW_GATEWAY_TLS_CLIENT_CA": str(files["ca.pem"])}
    assert up.security_line(env) == f"mutual TLS, API keys from {files['keys.yaml']}"
    with pytest.raises(InvalidInput, match="--tls-cert and --tls-key go together"):
        up.gateway_env(_up_args("--tls-cert", str(files["c.pem"])))
    with pytest.raises(InvalidInput, match="--api-keys: no such file"):
        up.gateway_env(_up_args("--api-keys", str(tmp_path / "nope.yaml")))
