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

import grpc

from avatarflow.contracts.errors import AvatarflowError, ResourceExhausted
from avatarflow.contracts.grpc_status import abort
from avatarflow.contracts.v1 import api_pb2
from avatarflow.session import LiveSession
from avatarflow.telemetry import metrics
from avatarflow_gateway import responses

STATUS_WAIT_S = 1.0  # for a client to take the status before the handler lets go of it


async def send_events(context: grpc.aio.ServicerContext, session: LiveSession,
                      encoding: api_pb2.FrameEncoding) -> None:
    """Writes every event of ``session`` until it ends; a session that fails (or a client
    that stopped reading) ends the call with the error's status (raises ``AbortError``)."""
    evict_s = session.settings.evict_s
    try:
        async for event in session.events():
            try:
                async with asyncio.timeout(evict_s):  # None: no limit
                    await context.write(responses.response(event, encoding))
            except TimeoutError:
                metrics.GATEWAY_ENDED.labels(reason="slow").inc()
                # No retry hint: the same client reading the same way would be ended again.
                raise ResourceExhausted(
                    f"the client read no frame for {evict_s:.1f} s: frames are real time, "
                    "read them as they come") from None
    except AvatarflowError as exc:
        await end_call(context, exc)


async def end_call(context: grpc.aio.ServicerContext, exc: AvatarflowError) -> None:
    """Ends the call with ``exc``'s status without waiting on a client that does not read:
    the caller's cleanup (releasing the session on every stage) runs at once."""
    try:
        async with asyncio.timeout(STATUS_WAIT_S):
            await abort(context, exc)
    except TimeoutError:
        # Queued behind the frames the client has not read: it gets it when it reads on.
        raise grpc.aio.AbortError() from None
