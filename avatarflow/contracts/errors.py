"""One small error hierarchy. Services map ``category`` to a gRPC status in one place; the CLI
maps it to an exit code and a message."""

from __future__ import annotations

SHOWN_CHARS = 64  # of a caller's string echoed in an error message
MAX_MESSAGE_CHARS = 1024  # of a status message: well inside gRPC's metadata limit


def shown(value: str) -> str:
    """A caller-supplied string as an error message quotes it: repr, cut to SHOWN_CHARS with
    an ellipsis, so a 10 KB id cannot blow up the status it is reported in."""
    if len(value) > SHOWN_CHARS:
        return repr(value[:SHOWN_CHARS]) + f"... ({len(value)} chars)"
    return repr(value)


def bounded(message: str) -> str:
    """``message`` cut to MAX_MESSAGE_CHARS: the last guard before it travels as metadata."""
    if len(message) > MAX_MESSAGE_CHARS:
        return message[:MAX_MESSAGE_CHARS - 3] + "..."
    return message


class AvatarflowError(Exception):
    """Base error: ``category`` names what kind of failure it is, ``retryable`` whether the
    same request may succeed later."""

    category = "internal"
    retryable = False

    def __init__(self, message: str, *, retryable: bool | None = None) -> None:
        super().__init__(message)
        self.message = message
        if retryable is not None:
            self.retryable = retryable


class InvalidInput(AvatarflowError):
    """The caller sent something unusable (bad image, bad audio, bad setting)."""

    category = "invalid_argument"


class NotFound(AvatarflowError):
    """A referenced thing (avatar id, session) does not exist."""

    category = "not_found"


class OutOfRange(AvatarflowError):
    """A value is outside its allowed range."""

    category = "out_of_range"


class Unavailable(AvatarflowError):
    """A dependency is temporarily unavailable."""

    category = "unavailable"
    retryable = True


class Unauthenticated(AvatarflowError):
    """The caller did not prove who it is (no API key, or a key no tenant holds)."""

    category = "unauthenticated"


class PermissionDenied(AvatarflowError):
    """The caller is known but may not use this thing (another tenant's avatar)."""

    category = "permission_denied"


class ResourceExhausted(AvatarflowError):
    """A limit is reached (a quota, a full gateway, a client too slow to keep up);
    ``retry_after_s`` is when trying again may succeed (None: not by waiting)."""

    category = "resource_exhausted"

    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(message, retryable=retry_after_s is not None)
        self.retry_after_s = retry_after_s


class DeadlineExceeded(AvatarflowError):
    """Something did not happen in the time allowed (e.g. a session's idle limit)."""

    category = "deadline_exceeded"


class MissingExtra(AvatarflowError):
    """An optional dependency is not installed; the message names the extra to install."""

    category = "failed_precondition"

    def __init__(self, module: str, extra: str) -> None:
        super().__init__(f"{module} is not installed: pip install 'avatarflow[{extra}]'")


EXIT_CODES = {"invalid_argument": 2, "out_of_range": 2, "not_found": 3,
              "failed_precondition": 4, "unavailable": 5, "unauthenticated": 6,
              "permission_denied": 6, "resource_exhausted": 7, "deadline_exceeded": 8,
              "internal": 1}
