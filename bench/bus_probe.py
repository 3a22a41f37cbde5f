"""Bus overhead of one hop, isolated: a source publishes messages of each kind at its real
size, 30 a second, to an idle stage consumer on a private redis-server; the consumer takes
each one and commits it. Measured: publish call -> message decoded at the consumer (encode,
XADD, XREADGROUP, decode) and the commit round trip (publish outputs + ack + state)."""

from __future__ import annotations

import asyncio
import time

import numpy as np

N = 300


def _messages(sid: str) -> dict:
    import cv2
    from skimage import data

    from avatarflow import messages as m
    from avatarflow.motion import EXPRESSIONS
    from avatarflow.picture import Picture

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


async def _probe_kind(url: str, kind: str, make) -> dict:
    from avatarflow import messages as m
    from avatarflow.bus.streams import RedisBus
    from avatarflow.settings import Settings
    from avatarflow.topology import AUDIO, FEATURES

    sid = "probe-" + "".join(ch for ch in kind if ch.isalnum())
    source = RedisBus(Settings.load("gateway", environ={}, redis_url=url, consumer="src"))
    stage = RedisBus(Settings.load("audio-encoder", environ={}, redis_url=url,
                                   consumer="probe"), block_ms=1000)
    await source.publish(AUDIO, m.SessionStart(session_id=sid))
    d = await stage.receive(AUDIO, "audio-encoder-workers")
    await stage.commit(d, FEATURES, [d.msg], state=b"x" * 200)
    transit, commit, jpeg, sizes = [], [], [], []
    sent: dict[int, float] = {}

    async def consume() -> None:  # blocked in XREADGROUP when each message is published
        for _ in range(N):
            d = await stage.receive(AUDIO, "audio-encoder-workers")
            t1 = time.perf_counter()
            transit.append((t1 - sent[d.msg.index]) * 1e3)
            sizes.append(d.size)
            await stage.commit(d, FEATURES, [], state=b"x" * 200)
            commit.append((time.perf_counter() - t1) * 1e3)

    consumer = asyncio.create_task(consume())
    for i in range(N):
        msg = make(i)
        msg.session_id, msg.index = sid, i
        if hasattr(msg, "image"):  # a fresh picture; JPEG encoding is the renderer's work
            msg.image = type(msg.image)(msg.image.rgb())
            t = time.perf_counter()
            msg.image.jpeg()
            jpeg.append((time.perf_counter() - t) * 1e3)
        await asyncio.sleep(1 / 30)
        sent[i] = time.perf_counter()
        await source.publish(AUDIO, msg)
    await consumer
    size = sizes[-1]
    await source.close()
    await stage.close()
    return {"bytes": size, "transit_p50_ms": float(np.median(transit)),
            "transit_p99_ms": float(np.percentile(transit, 99)),
            "commit_p50_ms": float(np.median(commit)),
            "commit_p99_ms": float(np.percentile(commit, 99)),
            "jpeg_encode_p50_ms": float(np.median(jpeg)) if jpeg else 0.0}


def probe() -> dict:
    from avatarflow.redis_server import RedisServer

    with RedisServer() as server:
        return {kind: asyncio.run(_probe_kind(server.url, kind, make))
                for kind, make in _messages("s").items()}


if __name__ == "__main__":
    for k, v in probe().items():
        print(k, v)
