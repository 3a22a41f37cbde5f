"""Redis connection classes that say why a connection failed when the cause is
configuration, not the network: a refused password (AUTH) or a failed TLS verification raise
Unavailable naming the setting to fix (not retryable); a TLS handshake that never completes or
a TLS connection dropped at once keep their redis-py type (callers retry those) with a hint.
``avatarflow.bus.connect`` builds every client with them.
"""

from __future__ import annotations

import ssl
from typing import Any, TypeVar

import redis
from redis.asyncio import connection as aconn
from redis.exceptions import AuthenticationError, ConnectionError
from redis.exceptions import TimeoutError as RedisTimeout

from avatarflow.contracts.errors import Unavailable

E = TypeVar("E", bound=BaseException)


def explain(exc: BaseException, where: str) -> Unavailable | None:
    """Unavailable naming the cause when ``exc`` is an AUTH or TLS failure, else None (a
    plain connection error stays retryable as it is)."""
    if isinstance(exc, AuthenticationError):
        return _auth_failed(exc, where)
    cause = _ssl_cause(exc)
    if cause is None:
        return None
    if isinstance(cause, ssl.SSLCertVerificationError):
        return Unavailable(
            f"TLS verification of redis at {where} failed ({cause.verify_message}): its "
            "certificate must be signed by AVATARFLOW_REDIS_TLS_CA and name the URL's host",
            retryable=False)
    return Unavailable(
        f"TLS handshake with redis at {where} failed ({cause}): a rediss:// URL needs a TLS "
        "port; a server that checks client certificates needs AVATARFLOW_REDIS_TLS_CERT/_KEY",
        retryable=False)


def _auth_failed(exc: AuthenticationError, where: str) -> Unavailable:
    text = str(exc)
    if text.startswith(("NOAUTH", "Authentication required")):
        hint = "it requires a password: set AVATARFLOW_REDIS_PASSWORD"
    elif "no password is set" in text or "without any password configured" in text:
        hint = "it has no password set: unset AVATARFLOW_REDIS_PASSWORD (or the URL's)"
    else:
        hint = "check AVATARFLOW_REDIS_PASSWORD (or the password in the URL)"
    return Unavailable(f"redis at {where} refused authentication ({text}): {hint}",
                       retryable=False)


def _no_handshake(where: str, timeout: float | None) -> RedisTimeout:
    """Still a timeout (retryable, as callers expect), saying what probably went wrong."""
    return RedisTimeout(f"no TLS handshake with redis at {where} within {timeout} s: does that "
                        "port serve TLS? (rediss:// needs a TLS port)")


def _closed(exc: ConnectionError, where: str) -> ConnectionError | None:
    """For a TLS connection the server dropped right after the handshake (with TLS 1.3 that
    is how a refused client certificate shows) the error with a hint, else None."""
    if "closed by server" not in str(exc) and _cause(exc, ConnectionResetError) is None:
        return None
    return ConnectionError(f"{exc} (redis at {where} closed the TLS connection at once: if it "
                           "checks client certificates, set AVATARFLOW_REDIS_TLS_CERT/_KEY to "
                           "one its CA signed)")


def _tls_failure(exc: Exception, where: str, timeout: float | None) -> Exception | None:
    """What a failed TLS connect raises instead, with a hint (None: re-raise ``exc``)."""
    if isinstance(exc, RedisTimeout):
        return _no_handshake(where, timeout)
    if isinstance(exc, ConnectionError):
        return _closed(exc, where)
    return None


def _ssl_cause(exc: BaseException) -> ssl.SSLError | None:
    """The ssl error behind a redis ConnectionError (redis-py raises it from the except)."""
    if not isinstance(exc, ConnectionError):
        return None
    return _cause(exc, ssl.SSLError)


def _cause(exc: BaseException, kind: type[E]) -> E | None:
    """The first exception of ``kind`` in ``exc``'s chain of causes."""
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None or isinstance(seen, kind):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


class _AsyncExplained:
    """Turns AUTH and TLS failures of an asyncio connection into Unavailable."""

    async def connect(self) -> None:
        try:
            await super().connect()  # type: ignore[misc]
        except (AuthenticationError, ConnectionError) as exc:
            explained = explain(exc, self._host_error())  # type: ignore[attr-defined]
            if explained is None:
                raise
            raise explained from exc

    async def read_response(self, *args: Any, **kwargs: Any) -> Any:
        try:  # NOAUTH comes back as the reply to the first command
            return await super().read_response(*args, **kwargs)  # type: ignore[misc]
        except AuthenticationError as exc:
            raise _auth_failed(exc, self._host_error()) from exc  # type: ignore[attr-defined]


class _SyncExplained:
    """Turns AUTH and TLS failures of a blocking connection into Unavailable."""

    def connect(self) -> None:
        try:
            super().connect()  # type: ignore[misc]
        except (AuthenticationError, ConnectionError) as exc:
            explained = explain(exc, self._host_error())  # type: ignore[attr-defined]
            if explained is None:
                raise
            raise explained from exc

    def read_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().read_response(*args, **kwargs)  # type: ignore[misc]
        except AuthenticationError as exc:
            raise _auth_failed(exc, self._host_error()) from exc  # type: ignore[attr-defined]


class _AsyncTCP(_AsyncExplained, aconn.Connection):
    pass


class _AsyncTLS(_AsyncExplained, aconn.SSLConnection):
    async def connect(self) -> None:
        try:
            await super().connect()
        except (RedisTimeout, ConnectionError) as exc:
            better = _tls_failure(exc, self._host_error(), self.socket_connect_timeout)
            if better is None:
                raise
            raise better from exc


class _AsyncUnix(_AsyncExplained, aconn.UnixDomainSocketConnection):
    pass


class _SyncTCP(_SyncExplained, redis.Connection):
    pass


class _SyncTLS(_SyncExplained, redis.SSLConnection):
    def connect(self) -> None:
        try:
            super().connect()
        except (RedisTimeout, ConnectionError) as exc:
            better = _tls_failure(exc, self._host_error(), self.socket_connect_timeout)
            if better is None:
                raise
            raise better from exc

    def _wrap_socket_with_ssl(self, sock: Any) -> Any:
        # redis-py does the blocking handshake under socket_timeout (None: forever)
        sock.settimeout(self.socket_connect_timeout)
        wrapped = super()._wrap_socket_with_ssl(sock)
        wrapped.settimeout(self.socket_timeout)
        return wrapped


class _SyncUnix(_SyncExplained, redis.UnixDomainSocketConnection):
    pass


# redis-py's connection class for a URL scheme -> ours
ASYNC_CLASSES: dict[type, type] = {aconn.Connection: _AsyncTCP, aconn.SSLConnection: _AsyncTLS,
                                   aconn.UnixDomainSocketConnection: _AsyncUnix}
SYNC_CLASSES: dict[type, type] = {redis.Connection: _SyncTCP, redis.SSLConnection: _SyncTLS,
                                  redis.UnixDomainSocketConnection: _SyncUnix}
