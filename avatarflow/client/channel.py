"""The channel to a gateway: plaintext or TLS (mutual with a client certificate), and the API
key as ``authorization: Bearer <key>`` metadata on every call.

The key travels as plain metadata rather than as grpc call credentials, which grpc refuses on
a channel without TLS (a gateway on loopback), and not through an aio client interceptor,
which in grpcio 1.62 makes a stream's ``read()`` raise StopAsyncIteration at its end instead
of returning EOF.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from avatarflow.contracts.errors import InvalidInput
from avatarflow.contracts.v1 import api_pb2, api_pb2_grpc

Metadata = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class TlsOptions:
    """How the client checks the gateway's certificate and, for mutual TLS, proves itself.

    ``ca``: PEM file of the CA that signed the gateway's certificate ("" = the system's roots);
    ``cert``/``key``: the client's certificate chain and key (mutual TLS); ``server_name``:
    the name the certificate must carry when it differs from the target's host.
    """

    ca: str = ""
    cert: str = ""
    key: str = ""
    server_name: str = ""

    def __post_init__(self) -> None:
        if bool(self.cert) != bool(self.key):
            raise InvalidInput("a client certificate needs its key, and a key its certificate "
                               "(--cert and --key together)")

    def credentials(self) -> grpc.ChannelCredentials:
        def read(path: str, what: str) -> bytes | None:
            if not path:
                return None
            try:
                return Path(path).read_bytes()
            except OSError as exc:
                raise InvalidInput(f"cannot read the {what} {path}: {exc.strerror}") from None

        return grpc.ssl_channel_credentials(read(self.ca, "CA certificate"),
                                            read(self.key, "client key"),
                                            read(self.cert, "client certificate"))


def open_channel(target: str, tls: TlsOptions | None,
                 max_message_mb: float = 16) -> grpc.aio.Channel:
    """A channel to ``target``: plaintext without ``tls``."""
    limit = int(max_message_mb * 1024 * 1024)
    options: list[tuple[str, Any]] = [("grpc.max_send_message_length", limit),
                                      ("grpc.max_receive_message_length", limit)]
    if tls is None:
        return grpc.aio.insecure_channel(target, options=options)
    if tls.server_name:
        options.append(("grpc.ssl_target_name_override", tls.server_name))
    return grpc.aio.secure_channel(target, tls.credentials(), options=options)


def key_metadata(api_key: str) -> Metadata:
    """The metadata that carries ``api_key`` (none without a key)."""
    if any(c in api_key for c in "\r\n") or api_key != api_key.strip():
        raise InvalidInput("the API key has a line break in it or spaces around it: copy it "
                           "as `avatarflow keys new` printed it")
    return (("authorization", f"Bearer {api_key}"),) if api_key else ()


def with_metadata(stub: api_pb2_grpc.AvatarsStub, metadata: Metadata) -> api_pb2_grpc.AvatarsStub:
    """``stub`` whose methods send ``metadata`` ahead of what each call passes."""
    if metadata:
        for name in api_pb2.DESCRIPTOR.services_by_name["Avatars"].methods_by_name:
            setattr(stub, name, _Keyed(getattr(stub, name), metadata))
    return stub


class _Keyed:
    """A stub method that adds the client's metadata to each call."""

    def __init__(self, method: Any, metadata: Metadata) -> None:
        self._method = method
        self._metadata = metadata

    def __call__(self, *args: Any, metadata: Sequence[tuple[str, str]] | None = None,
                 **kwargs: Any) -> Any:
        return self._method(*args, metadata=(*self._metadata, *(metadata or ())), **kwargs)
