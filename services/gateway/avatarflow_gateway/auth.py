"""Who is calling: the API keys file, re-read when it changes, and the one server interceptor
that checks ``authorization: Bearer <key>`` on the public API and tells the handler the tenant.

Health and reflection stay open (kubelet probes them without a key). A missing or unknown key
ends the call with UNAUTHENTICATED before the handler runs; a key is never logged or echoed.

A tenant is a namespace. Its own: its avatar ids (they carry its tag, so another tenant's id
is PERMISSION_DENIED from the id alone), the portraits and analyses stored under them (every
avatar key in Redis derives from the id), its ledger keys and quotas. Shared by all: the stages,
their streams and replicas (a session is a random UUID no client is told of but its own), the
gateway's capacity (``max_sessions``).
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import logging
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import grpc

from avatarflow.contracts.errors import AvatarflowError, InvalidInput, Unauthenticated
from avatarflow.contracts.grpc_status import abort
from avatarflow.runtime.settings import Settings
from avatarflow_gateway.admission import REJECTED
from avatarflow_gateway.keys import NO_TENANT, KeyTable, Quotas, Tenant

log = logging.getLogger(__name__)

PROTECTED = "/avatarflow.v1.Avatars/"
_CALLER: ContextVar[Tenant] = ContextVar("avatarflow_caller", default=NO_TENANT)


def caller() -> Tenant:
    """The tenant of the call being handled (the tenant "" without keys)."""
    return _CALLER.get()


class KeyFile:
    """The keys file at ``path``: loaded at start (InvalidInput when unusable), then re-read
    whenever its content changes (a Kubernetes Secret volume swaps the file through a symlink,
    so the path is read and its bytes compared). A bad new version is logged and the keys in
    force stay."""

    def __init__(self, path: str, defaults: Quotas) -> None:
        self.path, self.defaults = Path(path), defaults
        self._digest = self._bad = b""  # of the file in force, of the last bad version
        try:
            data = self.path.read_bytes()
        except OSError as exc:
            raise InvalidInput(f"cannot read the API keys file {path} "
                               f"(AVATARFLOW_API_KEYS_FILE): {exc.strerror}") from None
        self.table = self._parse(data)

    def _parse(self, data: bytes) -> KeyTable:
        table = KeyTable.parse(data, self.defaults, str(self.path))
        self._digest = hashlib.sha256(data).digest()
        log.info("API keys from %s: %d tenant(s), %d key(s)", self.path, len(table.tenants),
                 len(table))
        return table

    def refresh(self) -> bool:
        """Re-reads the file; True when new keys are in force."""
        try:
            data = self.path.read_bytes()
        except OSError as exc:
            self._failed(hashlib.sha256(str(exc).encode()).digest(),
                         f"cannot read the API keys file {self.path}: {exc.strerror}")
            return False
        digest = hashlib.sha256(data).digest()
        if digest in (self._digest, self._bad):
            return False
        try:
            self.table = self._parse(data)
        except InvalidInput as exc:
            self._failed(digest, exc.message)
            return False
        self._bad = b""
        return True

    def _failed(self, digest: bytes, message: str) -> None:
        """Logs a failed reload once per bad version, not at every check."""
        if digest != self._bad:
            self._bad = digest
            log.error("%s; the keys loaded before stay in force", message)

    async def watch(self, every_s: float) -> None:
        """Refreshes every ``every_s`` seconds, for as long as the gateway runs."""
        while True:
            await asyncio.sleep(every_s)
            await asyncio.to_thread(self.refresh)


def load_keys(settings: Settings) -> KeyFile | None:
    """The gateway's keys file; None with ``auth`` off. InvalidInput (the gateway does not
    start) when keys are required and none are set, or the file is unusable."""
    if settings.auth == "off":
        return None
    if not settings.api_keys_file:
        raise InvalidInput(
            "the gateway requires API keys (AVATARFLOW_AUTH=required, the default): set "
            "AVATARFLOW_API_KEYS_FILE to a keys file (`avatarflow keys new --tenant NAME "
            "--file keys.yaml` makes one), or set AVATARFLOW_AUTH=off to serve without keys "
            "on a trusted network")
    return KeyFile(settings.api_keys_file, Quotas(
        settings.tenant_max_sessions, settings.tenant_max_avatars, settings.register_per_minute))


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Checks the API key of every ``avatarflow.v1.Avatars`` call against the keys file."""

    def __init__(self, keys: KeyFile) -> None:
        self.keys = keys

    async def intercept_service(
            self, continuation: Callable[[grpc.HandlerCallDetails],
                                         Awaitable[grpc.RpcMethodHandler]],
            details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None or not details.method.startswith(PROTECTED):
            return handler
        try:
            tenant = self.authenticate(details.invocation_metadata or ())
        except Unauthenticated as exc:
            REJECTED.labels("unauthenticated").inc()
            refuse = _refusal(exc)
            return _behaving(handler, lambda _: refuse)
        return _behaving(handler, lambda b: _as(tenant, b))

    def authenticate(self, metadata: Any) -> Tenant:
        """The tenant whose key the call carries; Unauthenticated otherwise."""
        values = [v for k, v in metadata if k == "authorization"]
        if not values:
            raise Unauthenticated("missing API key: send the gRPC metadata "
                                  "'authorization: Bearer <API key>'")
        scheme, _, key = str(values[0]).partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise Unauthenticated("the 'authorization' metadata must be 'Bearer <API key>'")
        tenant = self.keys.table.tenant_for(key.strip())
        if tenant is None:
            raise Unauthenticated("invalid API key: no tenant holds it (revoked, mistyped or "
                                  "for another deployment)")
        return tenant


Behaviour = Callable[..., Any]
BEHAVIOURS = ("unary_unary", "unary_stream", "stream_unary", "stream_stream")


def _behaving(handler: grpc.RpcMethodHandler,
              wrap: Callable[[Behaviour], Behaviour]) -> grpc.RpcMethodHandler:
    """``handler`` with its behaviour replaced by ``wrap(behaviour)``."""
    return handler._replace(**{name: wrap(getattr(handler, name)) for name in BEHAVIOURS
                               if getattr(handler, name) is not None})


def _refusal(exc: AvatarflowError) -> Behaviour:
    async def refuse(request: Any, context: grpc.aio.ServicerContext) -> None:
        await abort(context, exc)
    return refuse


def _as(tenant: Tenant, behaviour: Behaviour) -> Behaviour:
    """``behaviour`` run with ``caller()`` returning ``tenant`` (and every task it spawns)."""
    if inspect.isasyncgenfunction(behaviour):
        async def stream(request: Any, context: grpc.aio.ServicerContext) -> Any:
            _CALLER.set(tenant)
            async for response in behaviour(request, context):
                yield response
        return stream

    async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
        _CALLER.set(tenant)
        return await behaviour(request, context)
    return call
