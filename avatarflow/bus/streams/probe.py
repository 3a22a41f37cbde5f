"""The machine's floor for one hop: a bare redis-py XADD from another process to a consumer
blocked in XREADGROUP, with no envelope, codec, ownership or state. ``bench/bus_probe.py``
sets one hop of the bus beside it, measured in the same run on the same server."""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import time
from collections.abc import Callable
from multiprocessing.process import BaseProcess
from typing import Any

import numpy as np
import redis.asyncio as aioredis

STREAM = "bare"  # the probe's own stream and group on the server it is given


def spawn(target: Callable[..., None], *args: Any) -> tuple[BaseProcess, Any, Any]:
    """Runs ``target(*args, ready, out)`` in a fresh process (as an upstream stage is);
    returns the process, the event that starts it publishing and the queue it answers on."""
    ctx = mp.get_context("spawn")
    ready, out = ctx.Event(), ctx.Queue()
    proc = ctx.Process(target=target, args=(*args, ready, out), daemon=True)
    proc.start()
    return proc, ready, out


async def _publish_bare(url: str, size: int, n: int, ready: Any, out: Any) -> None:
    r = aioredis.from_url(url)
    payload = b"x" * size
    ready.wait()
    sent = []
    for i in range(n):
        await asyncio.sleep(1 / 30)
        sent.append(time.perf_counter())  # CLOCK_MONOTONIC: comparable across processes
        await r.xadd(STREAM, {b"i": str(i).encode(), b"m": payload}, maxlen=100,
                     approximate=True)
    await r.aclose()
    out.put((sent, []))


def _bare_publisher(url: str, size: int, n: int, ready: Any, out: Any) -> None:
    asyncio.run(_publish_bare(url, size, n, ready, out))


async def floor(url: str, size: int, n: int) -> dict[str, float]:
    """Transit of ``n`` messages of ``size`` bytes, 30 a second, from publish to a waiting
    consumer: ``p50_ms`` and ``p99_ms``."""
    r = aioredis.from_url(url)
    await r.delete(STREAM)
    await r.xgroup_create(STREAM, "g", id="$", mkstream=True)
    proc, ready, out = spawn(_bare_publisher, url, size, n)
    ready.set()
    received: dict[int, float] = {}
    while len(received) < n:
        reply = await r.xreadgroup("g", "c", {STREAM: ">"}, count=8, block=1000)
        t = time.perf_counter()
        for _, entries in reply or ():
            for entry_id, fields in entries:
                received[int(fields[b"i"])] = t
                await r.xack(STREAM, "g", entry_id)
    sent, _ = out.get(timeout=60)
    proc.join(timeout=10)
    await r.aclose()
    transit = [(received[i] - t) * 1e3 for i, t in enumerate(sent)]
    return {"p50_ms": float(np.median(transit)), "p99_ms": float(np.percentile(transit, 99))}
