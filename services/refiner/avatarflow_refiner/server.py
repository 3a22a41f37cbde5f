"""The refiner service process: its stage on the Redis bus, with gRPC health and status."""

from __future__ import annotations

from avatarflow.runtime.settings import Settings
from avatarflow.runtime.stage_service import serve_stage


async def serve(settings: Settings) -> None:
    await serve_stage(settings)
