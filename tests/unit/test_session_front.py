"""The session front over the in-memory bus, with a stand-in for the four stages: what a
client of a live session sees (frames with their own audio, idle frames and a gap report when
its audio stalls, a clean cut at a barge-in, the pipeline's verdicts) and the avatar path."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np
import pytest

from avatarflow.avatars.registry import MemoryAvatarRegistry
from avatarflow.avatars.store import avatar_key
from avatarflow.bus.keys import GATEWAY_GROUP
from avatarflow.bus.memory import MemoryBus
from avatarflow.contracts import messages as m
from avatarflow.contracts.controls import Controls
from avatarflow.contracts.errors import AvatarflowError, NotFound
from avatarflow.contracts.picture import Picture
from avatarflow.contracts.v1 import api_pb2
from avatarflow.runtime.registry import AUDIO, FRAMES
from avatarflow.session import (
    AvatarPath,
    Ended,
    Event,
    Frame,
    FrontSettings,
    Gap,
    SessionFront,
    SessionSpec,
)
from avatarflow.session.portraits import avatar_id_for
from avatarflow.session.timeline import Timeline

RATE, FPS = 16000, 30.0
SPAN = RATE / FPS
IMAGE = b"\x89PNG stand-in"
NOT_LIVE = FrontSettings(stall_s=None, summary_s=None)  # no clock ticking


class FakePortraits:
    """Counts analyses; stores each in the registry as the renderer would."""

    def __init__(self, registry: MemoryAvatarRegistry) -> None:
        self.registry, self.calls = registry, 0

    async def prepare(self, avatar_id: str, output: api_pb2.OutputFormat) -> None:
        self.calls += 1
        await asyncio.sleep(0.05)
        self.registry.save(avatar_key(avatar_id, output.mode, output.width, output.height),
                           b"analysis")


async def fake_stages(bus: MemoryBus, per_frame_s: float = 0.0,
                      seen: list[m.Message] | None = None) -> None:
    """One frame per 1/30 s of audio, whose pixels are the session's turn; EndOfAudio flushes
    and comes back; an avatar named 'reject' fails the session. What arrives goes to ``seen``."""
    clocks: dict[str, list[int]] = {}  # sid -> [samples, next frame]
    while True:
        d = await bus.receive(AUDIO, "stages")
        msg, outs = d.msg, []
        if seen is not None:
            seen.append(msg)
        clock = clocks.get(msg.session_id, [0, 0])
        if isinstance(msg, m.SessionStart):
            clocks[msg.session_id] = [0, 0]
            if msg.avatar_id == "reject":
                outs.append(m.SessionError(session_id=msg.session_id, stage="renderer",
                                           category="invalid_argument", message="no face"))
        elif isinstance(msg, m.AudioChunk):
            clock[0] += len(msg.pcm)
        elif isinstance(msg, m.Interrupt):
            clock[:] = [round(msg.index * SPAN), msg.index]
        while round(clock[1] * SPAN) < clock[0] and (
                isinstance(msg, m.EndOfAudio) or round((clock[1] + 1) * SPAN) <= clock[0]):
            await asyncio.sleep(per_frame_s)
            outs.append(m.FinalFrame(session_id=msg.session_id, index=clock[1],
                                     pts=clock[1] / FPS,
                                     image=Picture(np.full((2, 2, 3), d.turn, np.uint8))))
            clock[1] += 1
        if isinstance(msg, m.EndOfAudio):
            outs.append(msg)
        await bus.commit(d, FRAMES, outs)


def _spec(avatar_id: str = "", image: bytes = IMAGE) -> SessionSpec:
    return SessionSpec(sample_rate=RATE, mode="head", width=256, height=256, fps=FPS,
                       encoding=api_pb2.FRAME_ENCODING_JPEG, controls=Controls(),
                       avatar_id=avatar_id, image=b"" if avatar_id else image)


def _run(main: Callable[[SessionFront, FakePortraits], Awaitable[Any]],
         settings: FrontSettings = NOT_LIVE,
         per_frame_s: float = 0.0, seen: list[m.Message] | None = None) -> Any:
    async def go() -> Any:
        bus = MemoryBus()
        bus.subscribe(AUDIO, "stages")
        bus.subscribe(FRAMES, GATEWAY_GROUP)
        registry = MemoryAvatarRegistry()
        portraits = FakePortraits(registry)
        front = SessionFront(bus, AvatarPath(registry, portraits), settings)
        tasks = [asyncio.create_task(fake_stages(bus, per_frame_s, seen)),
                 asyncio.create_task(front.dispatch())]
        try:
            return await asyncio.wait_for(main(front, portraits), 20)
        finally:
            await front.aclose()
            for t in tasks:
                t.cancel()

    return asyncio.run(go())


@pytest.fixture(autouse=True)
def _any_image_decodes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("avatarflow.session.portraits.decode_image", lambda image: None)


async def _all(events: Any) -> list[Event]:
    return [e async for e in events]


def test_each_frame_carries_its_own_span_of_the_audio() -> None:
    pcm = np.arange(RATE, dtype=np.int16)  # 1 s: 30 frames

    async def main(front: SessionFront, _: FakePortraits) -> list[Event]:
        s = await front.open(_spec())
        for i in range(0, pcm.size, 320):
            await s.send_audio(pcm[i:i + 320])
        await s.end()
        events = await _all(s.events())
        await front.close(s)
        assert not front.sessions
        return events

    events = _run(main)
    frames = [e for e in events if isinstance(e, Frame)]
    assert [f.index for f in frames] == list(range(30))
    timeline = Timeline(RATE, FPS)
    for f in frames:
        a, b = timeline.span(f.index)
        assert np.array_equal(np.frombuffer(f.audio, "<i2"), pcm[a:b])
    assert isinstance(events[-1], Ended) and events[-1].frames == 30
    assert events[-1].duration_s == pytest.approx(1.0)


def test_audio_goes_on_the_bus_once_per_frame_not_per_client_chunk() -> None:
    pcm = (np.arange(RATE) % 2000).astype(np.int16)  # 1 s in 50 chunks of 20 ms: 30 frames
    seen: list[m.Message] = []

    async def main(front: SessionFront, _: FakePortraits) -> list[Event]:
        s = await front.open(_spec())
        for i in range(0, pcm.size, 320):
            await s.send_audio(pcm[i:i + 320])
        await s.end()
        return await _all(s.events())

    events = _run(main, seen=seen)
    chunks = [c for c in seen if isinstance(c, m.AudioChunk)]
    assert 30 <= len(chunks) <= 31
    assert np.array_equal(np.concatenate([c.pcm for c in chunks]), pcm)  # all of it, in order
    assert [c.index for c in chunks] == list(range(len(chunks)))
    assert [round(c.pts * RATE) for c in chunks] == list(
        np.cumsum([0] + [len(c.pcm) for c in chunks[:-1]]))
    assert [e.index for e in events if isinstance(e, Frame)] == list(range(30))


def test_held_audio_goes_out_when_the_client_pauses() -> None:
    seen: list[m.Message] = []

    async def main(front: SessionFront, _: FakePortraits) -> list[m.Message]:
        s = await front.open(_spec())
        await s.send_audio(np.ones(160, np.int16))  # 10 ms, then nothing for a while
        for _ in range(100):
            if any(isinstance(x, m.AudioChunk) for x in seen):
                break
            await asyncio.sleep(0.02)
        before_the_end = list(seen)
        await s.end()
        await _all(s.events())
        return before_the_end

    before_the_end = _run(main, FrontSettings(stall_s=None, summary_s=None, idle_s=60.0),
                          seen=seen)
    chunks = [x for x in before_the_end if isinstance(x, m.AudioChunk)]
    assert len(chunks) == 1 and len(chunks[0].pcm) == 160


def test_a_stall_is_filled_with_silence_and_reported_as_a_gap() -> None:
    speech = np.full(RATE // 5, 7, np.int16)  # 0.2 s

    async def main(front: SessionFront, _: FakePortraits) -> list[Event]:
        s = await front.open(_spec())
        await s.send_audio(speech)
        await asyncio.sleep(0.5)  # the client says nothing for a while
        await s.send_audio(speech)
        await s.end()
        return await _all(s.events())

    events = _run(main, FrontSettings(stall_s=0.1, summary_s=None))
    gaps = [e for e in events if isinstance(e, Gap)]
    assert len(gaps) == 1 and gaps[0].pts == pytest.approx(0.2) and gaps[0].duration > 0.1
    frames = [f for f in events if isinstance(f, Frame)]
    assert [f.index for f in frames] == list(range(len(frames)))
    idle = [f for f in frames
            if gaps[0].pts <= f.pts and f.pts + 1 / FPS <= gaps[0].pts + gaps[0].duration]
    assert len(idle) >= 3 and not any(np.frombuffer(f.audio, "<i2").any() for f in idle)
    assert np.frombuffer(frames[-1].audio, "<i2").any()  # the speech after the stall


def test_after_a_barge_in_only_new_frames_follow() -> None:
    old, new = np.full(RATE * 2, 2, np.int16), np.full(RATE // 2, 3, np.int16)

    async def main(front: SessionFront, _: FakePortraits) -> list[Event]:
        s = await front.open(_spec())
        for i in range(0, old.size, 320):
            await s.send_audio(old[i:i + 320])
        events: list[Event] = []
        async for e in s.events():  # a few old frames, then the interrupt
            events.append(e)
            if len(events) == 5:
                break
        await s.interrupt()
        for i in range(0, new.size, 320):
            await s.send_audio(new[i:i + 320])
        await s.end()
        return events + await _all(s.events())

    events = _run(main, per_frame_s=0.01)
    frames = [f for f in events if isinstance(f, Frame)]
    kinds = ["new" if np.frombuffer(f.audio, "<i2").min() == 3 else "old" for f in frames]
    first_new = kinds.index("new")
    assert 5 <= first_new < 60 and "old" not in kinds[first_new:]
    assert all(f.image.rgb().max() == 1 for f in frames[first_new:])  # the new turn's pictures
    assert all(a.index < b.index for a, b in zip(frames, frames[1:], strict=False))
    assert kinds.count("new") == 15


def test_a_stage_verdict_ends_the_session_with_its_category() -> None:
    async def main(front: SessionFront, _: FakePortraits) -> None:
        front.avatars.registry.save(avatar_key("reject", "head", 256, 256), b"analysis")
        s = await front.open(_spec(avatar_id="reject"))
        with pytest.raises(AvatarflowError, match="renderer: no face") as info:
            await _all(s.events())
        assert info.value.category == "invalid_argument"
        await front.close(s)

    _run(main)


def test_a_session_left_without_its_end_is_closed_on_every_stage() -> None:
    async def main(front: SessionFront, _: FakePortraits) -> bool:
        s = await front.open(_spec())
        await s.send_audio(np.ones(RATE, np.int16))
        await front.close(s)  # the client went away
        return s.finished.is_set() and not front.sessions

    assert _run(main)


def test_a_portrait_is_analysed_once_even_when_sessions_open_at_once() -> None:
    async def main(front: SessionFront, portraits: FakePortraits) -> tuple[list[str], int]:
        sessions = await asyncio.gather(*(front.open(_spec()) for _ in range(3)))
        again = await front.open(_spec(avatar_id=avatar_id_for(IMAGE)))
        for s in (*sessions, again):
            await front.close(s)
        return [s.avatar_id for s in (*sessions, again)], portraits.calls

    ids, calls = _run(main)
    assert set(ids) == {avatar_id_for(IMAGE)} and calls == 1


def test_an_unknown_avatar_id_is_not_found() -> None:
    async def main(front: SessionFront, _: FakePortraits) -> None:
        with pytest.raises(NotFound, match="register the portrait with RegisterAvatar"):
            await front.open(_spec(avatar_id="av-nobody"))
        assert not front.sessions

    _run(main)
