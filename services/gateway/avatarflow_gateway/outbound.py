"""A session's events out to its client, as ``SessionResponse`` messages, and the status that
ends the call when the session fails.

A client that stops reading stops ``context.write``: HTTP/2 flow control holds the write once
the client's receive window is full, and it never returns. So each write is awaited at most
``evict_s``; one that takes longer means the client has taken no frame for that long while
frames wait, and the call ends with RESOURCE_EXHAUSTED. Found with grpc.aio 1.62 (a server
writing 75 KB messages to a client that stops reading):

- the write cancelled by the timeout leaves the call usable;
- ``context.abort`` queues the status behind the data already in flight and then waits until
  the client has read that data, which may be never; awaited for a moment and then left (the
  handler ending with ``AbortError``, as abort itself would), the status stays queued: a
  client that reads again gets what its receive window held, then the status;
- the client's receive window is what it buffers beyond the gateway's reach: 64 KB with
  grpc's BDP probing off; with probing on (grpc's default) some 4-6 MB, 57-79 frames of
  75 KB, on loopback;
- ``context.cancel`` does not exist on grpc.aio's server side.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import grpc

from avatarflow.contracts.errors import AvatarflowError, ResourceExhausted
from avatarflow.contracts.grpc_status import abort
from avatarflow.contracts.v1 import api_pb2
from avatarflow.session import LiveSession
from avatarflow.telemetry import metrics
from avatarflow_gateway import responses

STATUS_WAIT_S = 1.0  # for a client to take the status before the handler lets go of it
CATCH_UP_S = 0.5  # for an evicted client that reads again to empty its receive window


async def send_events(context: grpc.aio.ServicerContext, session: LiveSession,
                      encoding: api_pb2.FrameEncoding,
                      release: Callable[[], None] = lambda: None) -> None:
    """Writes every event of ``session`` until it ends; a session that fails (or a client
    that stopped reading) is released on every stage at once (``release``) and the call ends
    with the error's status (raises ``AbortError``)."""
    evict_s = session.settings.evict_s
    try:
        async for event in session.events():
            await _write(context, responses.response(event, encoding), evict_s, release)
    except AvatarflowError as exc:
        release()
        await end_call(context, exc)


async def _write(context: grpc.aio.ServicerContext, response: api_pb2.SessionResponse,
                 evict_s: float | None, release: Callable[[], None]) -> None:
    """One write, awaited at most ``evict_s``. Past that the client is ended: its session is
    released at once, and the status follows once the client reads on (within
    ``evict_s`` more), behind the frames it has not taken. Sending the status while the
    write still waits would have the call reset, and a grpc.aio client that is still writing
    its audio then reports its own failed write (INTERNAL) instead of the status."""
    write = asyncio.ensure_future(context.write(response))
    try:
        done, _ = await asyncio.wait({write}, timeout=evict_s)
        if not done:
            metrics.GATEWAY_ENDED.labels(reason="slow").inc()
            release()
            done, _ = await asyncio.wait({write}, timeout=evict_s)
            if not done:
                raise grpc.aio.AbortError()  # gone for good: the call is torn down
            # The client reads again: let it take what its window holds, with its own writes
            # still drained, before the status closes the call.
            await asyncio.sleep(CATCH_UP_S)
            # No retry hint: the same client reading the same way would be ended again.
            raise ResourceExhausted(
                f"the client read no frame for {evict_s:.1f} s: frames are real time, read "
                "them as they come")
        write.result()
    finally:
        if not write.done():
            write.cancel()


async def end_call(context: grpc.aio.ServicerContext, exc: AvatarflowError) -> None:
    """Ends the call with ``exc``'s status without waiting long on a client that does not
    read: the caller's cleanup runs at once."""
    try:
        async with asyncio.timeout(STATUS_WAIT_S):
            await abort(context, exc)
    except TimeoutError:
        # Queued behind the frames the client has not read: it gets it when it reads on.
        raise grpc.aio.AbortError() from None
