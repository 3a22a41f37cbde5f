"""Errors -> gRPC status codes: the one place where the mapping lives."""

from __future__ import annotations

import grpc

from avatarflow.contracts.errors import AvatarflowError, bounded

CODES = {
    "invalid_argument": grpc.StatusCode.INVALID_ARGUMENT,
    "not_found": grpc.StatusCode.NOT_FOUND,
    "out_of_range": grpc.StatusCode.OUT_OF_RANGE,
    "failed_precondition": grpc.StatusCode.FAILED_PRECONDITION,
    "resource_exhausted": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "unauthenticated": grpc.StatusCode.UNAUTHENTICATED,
    "permission_denied": grpc.StatusCode.PERMISSION_DENIED,
    "unavailable": grpc.StatusCode.UNAVAILABLE,
    "deadline_exceeded": grpc.StatusCode.DEADLINE_EXCEEDED,
    "cancelled": grpc.StatusCode.CANCELLED,
    "internal": grpc.StatusCode.INTERNAL,
}
CATEGORIES = {code: category for category, code in CODES.items()}


def code_for(category: str) -> grpc.StatusCode:
    return CODES.get(category, grpc.StatusCode.INTERNAL)


def error_for(code: grpc.StatusCode, message: str) -> AvatarflowError:
    """An error raised by a peer service, as our own error with the same category."""
    err = AvatarflowError(message, retryable=code is grpc.StatusCode.UNAVAILABLE)
    err.category = CATEGORIES.get(code, "internal")
    return err


RETRY_AFTER_KEY = "retry-after-ms"  # trailing metadata: when trying again may succeed


async def abort(context: grpc.aio.ServicerContext, exc: AvatarflowError) -> None:
    """Ends the call with the error's status and, for a limit that waiting can lift, the
    retry hint in trailing metadata; raises (grpc's abort never returns)."""
    retry_after_s = getattr(exc, "retry_after_s", None)
    trailing = () if retry_after_s is None else (
        (RETRY_AFTER_KEY, str(max(1, round(retry_after_s * 1000)))),)
    await context.abort(code_for(exc.category), bounded(exc.message), trailing)
