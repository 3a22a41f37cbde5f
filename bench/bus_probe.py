"""Bus overhead of one hop, isolated: a source publishes messages of each kind at its real
size, 30 a second, to an idle stage consumer on a private redis-server; the consumer takes
each one and commits it. Measured: publish call -> message decoded at the consumer (encode,
XADD, XREADGROUP, decode) and the commit round trip (publish outputs + ack + state), and, side
by side, a bare XADD -> XREADGROUP of the same number of bytes: the floor on this machine
(``avatarflow.bus.streams.probe``)."""

from __future__ import annotations

import argparse
import asyncio
import time

import numpy as np

N = 300


def _messages(sid: str) -> dict:
    import cv2
    from skimage import data

    from avatarflow.contracts import messages as m
    from avatarflow.contracts.motion import EXPRESSIONS
    from avatarflow.contracts.picture import Picture

    rgb = np.ascontiguousarray(cv2.resize(data.astronaut(), (512, 768)))
    k = 54
    motion = m.MotionFrame(
        session_id=sid, rotation=np.zeros(3, np.float32), translation=np.zeros(3, np.float32),
        scale=1.0, expression=np.zeros(len(EXPRESSIONS), np.float32),
        head_template=np.zeros((k, 3), np.float32), head_offset=np.zeros((k, 3), np.float32),
        body=np.zeros((8, 3), np.float32), hands=np.zeros((2, 21, 3), np.float32))
    return {
        "audio chunk (20 ms, 16 kHz)": lambda i: m.AudioChunk(
            session_id=sid, index=i, sample_rate=16000, pcm=np.zeros(320, np.int16)),
        "features": lambda i: m.AudioFeatures(session_id=sid, index=i,
                                              features=np.zeros(44, np.float32)),
        "motion": lambda i: motion,
        "rendered frame 512x768 (JPEG)": lambda i: m.RenderedFrame(
            session_id=sid, index=i, image=Picture(rgb), motion=motion),
    }


async def _publish(url: str, sid: str, kind: str, n: int, ready, out) -> None:
    from avatarflow.bus.streams import RedisBus
    from avatarflow.runtime.registry import AUDIO
    from avatarflow.runtime.settings import Settings

    make = _messages(sid)[kind]
    source = RedisBus(Settings.load("gateway", environ={}, redis_url=url, consumer="src"))
    ready.wait()
    sent, jpeg = [], []
    for i in range(n):
        msg = make(i)
        msg.session_id, msg.index = sid, i
        if hasattr(msg, "image"):  # a fresh picture; JPEG encoding is the renderer's work
            msg.image = type(msg.image)(msg.image.rgb())
            t = time.perf_counter()
            msg.image.jpeg()
            jpeg.append((time.perf_counter() - t) * 1e3)
        await asyncio.sleep(1 / 30)
        sent.append(time.perf_counter())  # CLOCK_MONOTONIC: comparable across processes
        await source.publish(AUDIO, msg)
    await source.close()
    out.put((sent, jpeg))


def _publisher(url: str, sid: str, kind: str, n: int, ready, out) -> None:
    asyncio.run(_publish(url, sid, kind, n, ready, out))


async def _probe_kind(url: str, kind: str, n: int) -> dict:
    from avatarflow.bus.streams import RedisBus
    from avatarflow.bus.streams.probe import floor, spawn
    from avatarflow.contracts import messages as m
    from avatarflow.runtime.registry import AUDIO, FEATURES
    from avatarflow.runtime.settings import Settings

    sid = "probe-" + "".join(ch for ch in kind if ch.isalnum())
    opener = RedisBus(Settings.load("gateway", environ={}, redis_url=url, consumer="src"))
    stage = RedisBus(Settings.load("audio-encoder", environ={}, redis_url=url,
                                   consumer="probe"), block_ms=1000)
    await opener.publish(AUDIO, m.SessionStart(session_id=sid))
    d = await stage.receive(AUDIO, "audio-encoder-workers")
    await stage.commit(d, FEATURES, [d.msg], state=b"x" * 200)
    # The source is its own process, as a stage upstream is: its encoding and socket work
    # do not share this event loop.
    proc, ready, out = spawn(_publisher, url, sid, kind, n)
    received, commit, sizes = {}, [], []
    ready.set()
    for _ in range(n):  # blocked in XREADGROUP when each message is published
        d = await stage.receive(AUDIO, "audio-encoder-workers")
        t1 = time.perf_counter()
        received[d.msg.index] = t1
        sizes.append(d.size)
        await stage.commit(d, FEATURES, [], state=b"x" * 200)
        commit.append((time.perf_counter() - t1) * 1e3)
    sent, jpeg = out.get(timeout=60)
    proc.join(timeout=10)
    transit = [(received[i] - t) * 1e3 for i, t in enumerate(sent)]
    await opener.close()
    await stage.close()
    return {"bytes": sizes[-1], "transit_p50_ms": float(np.median(transit)),
            "transit_p99_ms": float(np.percentile(transit, 99)),
            "commit_p50_ms": float(np.median(commit)),
            "commit_p99_ms": float(np.percentile(commit, 99)),
            "jpeg_encode_p50_ms": float(np.median(jpeg)) if jpeg else 0.0,
            "bare": await floor(url, sizes[-1], n)}


def probe(n: int = N) -> dict:
    """Each kind's figures, ``n`` messages each, on a private redis-server."""
    from avatarflow.dev.redis_server import RedisServer

    with RedisServer() as server:
        return {kind: asyncio.run(_probe_kind(server.url, kind, n)) for kind in _messages("s")}


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--messages", type=int, default=N,
                    help=f"messages per kind, 30 a second (default {N}; fewer for a quick look)")
    for k, v in probe(ap.parse_args().messages).items():
        print(k, v)
