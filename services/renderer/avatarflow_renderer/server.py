"""The renderer service process: its stage on the Redis bus, with gRPC health and status, plus
``Portraits.Prepare``, the portrait analysis behind RegisterAvatar and inline portraits."""

from __future__ import annotations

import asyncio

import grpc

from avatarflow.bus.avatars import RedisAvatarRegistry
from avatarflow.contracts.errors import AvatarflowError, NotFound
from avatarflow.contracts.grpc_status import abort
from avatarflow.contracts.output import resolve_output
from avatarflow.contracts.v1 import api_pb2, internal_pb2_grpc
from avatarflow.contracts.v1 import internal_pb2 as ipb
from avatarflow.runtime.service import ServiceRuntime
from avatarflow.runtime.settings import Settings
from avatarflow.runtime.stage import Stage
from avatarflow.runtime.stage_service import serve_stage
from avatarflow_renderer.stage import RendererStage


class PortraitsServicer(internal_pb2_grpc.PortraitsServicer):
    def __init__(self, stage: RendererStage, backing: RedisAvatarRegistry) -> None:
        self.stage, self.backing = stage, backing
        self._lock = asyncio.Lock()  # one analysis at a time beside the frames

    async def Prepare(self, request: ipb.PrepareRequest,
                      context: grpc.aio.ServicerContext) -> ipb.PrepareResponse:
        o = request.output
        try:
            mode, width, height, fps = resolve_output(o.mode, o.width, o.height, o.fps)
            image = await asyncio.to_thread(self.backing.load_image, request.avatar_id)
            if image is None:
                raise NotFound(f"unknown avatar id {request.avatar_id!r} (expired or never "
                               "registered)")
            async with self._lock:
                await asyncio.to_thread(self.stage.prepare_avatar, image, request.avatar_id,
                                        mode, width, height)
        except AvatarflowError as exc:
            await abort(context, exc)
        return ipb.PrepareResponse(avatar_id=request.avatar_id, output=api_pb2.OutputFormat(
            mode=mode, width=width, height=height, fps=fps))


def _extend(runtime: ServiceRuntime, stage: Stage, backing: RedisAvatarRegistry | None) -> None:
    # The registry gives the renderer a Redis-backed avatar store (StageSpec.avatars).
    assert isinstance(stage, RendererStage) and backing is not None
    runtime.add(internal_pb2_grpc.add_PortraitsServicer_to_server,
                PortraitsServicer(stage, backing), "avatarflow.v1.Portraits")


async def serve(settings: Settings) -> None:
    await serve_stage(settings, _extend)
