"""Shared pieces of the distributed-mode tests: one local cluster of real processes (a private
redis-server, every service as its own process), sessions through the public API, and the
measurements a viewer would make on what comes back."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np

from avatarflow.client.api import AvatarClient, decode_frame, run_session
from avatarflow.client.record import SessionRecord
from avatarflow.contracts.v1 import api_pb2
from tests.support.video import MouthMeter

FPS = 30.0


def config(avatar_id: str, rate: int, **kw: Any) -> api_pb2.SessionConfig:
    return api_pb2.SessionConfig(avatar_id=avatar_id, sample_rate=rate, **kw)


def session(target: str, cfg: api_pb2.SessionConfig, pcm: np.ndarray, rate: int,
            **kw: Any) -> SessionRecord:
    async def main() -> SessionRecord:
        async with AvatarClient(target) as c:
            return await run_session(c, cfg, pcm, rate, **kw)

    return asyncio.run(main())


def sessions_with(target: str, runs: list[tuple[api_pb2.SessionConfig, np.ndarray, int]],
                  during: Callable[[], Awaitable[Any]] | None = None,
                  **kw: Any) -> list[SessionRecord]:
    """Runs several sessions at once (and ``during``, alongside them)."""
    async def main() -> list[SessionRecord]:
        async with AvatarClient(target) as c:
            jobs = [run_session(c, cfg, pcm, rate, **kw) for cfg, pcm, rate in runs]
            if during is not None:
                jobs.append(during())
            out = await asyncio.gather(*jobs)
            return list(out[:len(runs)])

    return asyncio.run(main())


def frame_audio_rms(rec: SessionRecord) -> np.ndarray:
    """RMS (full scale 1) of the audio that came back with each frame."""
    return np.array([np.sqrt(np.mean((np.frombuffer(f.audio, "<i2") / 32768.0) ** 2))
                     if f.audio else 0.0 for f in rec.frames])


def mouth_openings(rec: SessionRecord) -> np.ndarray:
    meter = MouthMeter()
    try:
        out = rec.started.output
        return np.array([meter.opening(decode_frame(f.data, rec.started.encoding, out.width,
                                                    out.height)) for f in rec.frames])
    finally:
        meter.close()


def best_lag(opening: np.ndarray, energy: np.ndarray, max_lag: int = 4) -> tuple[int, float]:
    """The frame shift of the mouth against the audio with the highest correlation."""
    ok = np.isfinite(opening)
    best = (0, -2.0)
    for lag in range(-max_lag, max_lag + 1):
        a = opening[max(0, lag):len(opening) + min(0, lag)]
        b = energy[max(0, -lag):len(energy) + min(0, -lag)]
        k = ok[max(0, lag):len(ok) + min(0, lag)]
        r = float(np.corrcoef(a[k], b[k])[0, 1])
        if r > best[1]:
            best = (lag, r)
    return best


def steady_fps(rec: SessionRecord, skip_s: float = 1.0) -> float:
    """Arrival rate after the first ``skip_s`` (start-up) until the last frame."""
    t = np.array([f.received_at for f in rec.frames])
    t = t[t >= t[0] + skip_s]
    return (len(t) - 1) / (t[-1] - t[0])
