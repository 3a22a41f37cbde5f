"""A session's events out to its client, as ``SessionResponse`` messages."""

from __future__ import annotations

import grpc

from avatarflow.contracts.v1 import api_pb2
from avatarflow.session import LiveSession
from avatarflow_gateway import responses


async def send_events(context: grpc.aio.ServicerContext, session: LiveSession,
                      encoding: api_pb2.FrameEncoding) -> None:
    """Writes every event of ``session`` until it ends (raises the error that ended it)."""
    async for event in session.events():
        await context.write(responses.response(event, encoding))
