"""The session front's portrait analysis in a cluster: the renderer's ``Portraits.Prepare``."""

from __future__ import annotations

import grpc

from avatarflow.contracts.grpc_status import error_for
from avatarflow.contracts.v1 import api_pb2, internal_pb2, internal_pb2_grpc

PREPARE_TIMEOUT_S = 60.0


class RendererPortraits:
    """``avatarflow.session.Portraits`` over gRPC; the renderer reads the portrait from the
    avatar registry and stores its analysis there."""

    def __init__(self, stub: internal_pb2_grpc.PortraitsStub) -> None:
        self.stub = stub

    async def prepare(self, avatar_id: str, output: api_pb2.OutputFormat) -> None:
        try:
            await self.stub.Prepare(
                internal_pb2.PrepareRequest(avatar_id=avatar_id, output=output),
                timeout=PREPARE_TIMEOUT_S)
        except grpc.aio.AioRpcError as exc:
            raise error_for(exc.code(), exc.details() or "portrait analysis failed") from None
