"""What waits for a session's client is bounded and kept current: the oldest frames go when
too many (or too many bytes) wait, frames gone stale behind newer ones are dropped when the
client next reads, control events always come through, and without limits every frame is
kept. Also through a live session of the session front: ``stale`` in its summaries."""

from __future__ import annotations

import asyncio
import time

import numpy as np

from avatarflow.contracts.errors import DeadlineExceeded
from avatarflow.contracts.picture import Picture
from avatarflow.session import Ended, Frame, FrontSettings, Gap, Latency
from avatarflow.session.outbox import Outbox, frame_size
from tests.unit.test_session_front import (  # noqa: F401 - the fixture applies here too
    RATE,
    SPAN,
    _all,
    _any_image_decodes,
    _run,
    _spec,
)

PIXELS = Picture(np.zeros((4, 4, 3), np.uint8))  # 48 bytes of pixels


def _frame(i: int, audio: bytes = b"") -> Frame:
    return Frame(index=i, pts=i / 30, image=PIXELS, audio=audio)


def _drain(box: Outbox) -> list:
    async def go() -> list:
        items = []
        while len(box):  # stale frames leave as the client reads
            items.append((await box.get()).item)
        return items

    return asyncio.run(go())


def _indexes(items: list) -> list[int]:
    return [x.index for x in items if isinstance(x, Frame)]


def test_without_limits_every_frame_waits() -> None:
    box = Outbox()
    old = time.time() - 100  # long past due: kept all the same
    for i in range(500):
        box.put(_frame(i), old + i / 30)
    assert _indexes(_drain(box)) == list(range(500))


def test_the_oldest_frames_go_beyond_the_frame_bound_control_events_stay() -> None:
    dropped: list[int] = []
    box = Outbox(max_frames=3, on_stale=lambda: dropped.append(1))
    box.put(Gap(0.0, 0.5))
    for i in range(10):
        box.put(_frame(i), time.time() + 10)  # not due yet: only the bound drops them
        if i == 4:
            box.put(Latency(5, 0, 1.0, 2.0, 30.0))
    box.put(RuntimeError("the end"))
    assert box.frames == 3 and len(dropped) == 7
    items = _drain(box)
    assert _indexes(items) == [7, 8, 9]
    assert [type(x) for x in items if not isinstance(x, Frame)] == [Gap, Latency, RuntimeError]


def test_the_byte_bound_counts_pictures_and_audio() -> None:
    size = frame_size(_frame(0, b"\0" * 52))
    assert size == 48 + 52
    box = Outbox(max_bytes=5 * size)
    for i in range(12):
        box.put(_frame(i, b"\0" * 52), time.time())
    assert box.frames == 5 and box.bytes == 5 * size
    assert _indexes(_drain(box)) == list(range(7, 12))
    assert box.bytes == 0 and box.frames == 0


def test_the_newest_frame_is_kept_whatever_its_size() -> None:
    box = Outbox(max_bytes=10)
    box.put(_frame(0), 0.0)
    box.put(_frame(1), 0.0)
    assert _indexes(_drain(box)) == [1]


def test_a_client_behind_gets_the_present_not_the_backlog() -> None:
    """Frames more than max_lag past due, with a frame that much newer waiting, are dropped
    when the client reads; from the present on it gets every frame."""
    stale: list[int] = []
    box = Outbox(max_frames=100, max_lag_s=0.5, on_stale=lambda: stale.append(1))
    now = time.time()
    for i in range(60):  # two seconds of frames, the last one due now
        box.put(_frame(i), now - (59 - i) / 30)
    got = _indexes(_drain(box))
    # Due within the lag of the newest, whatever time it is now: 15 frames of 33 ms back.
    assert got[0] >= 44 and got == list(range(got[0], 60))
    assert len(stale) == got[0]


def test_late_frames_with_nothing_newer_still_go_out() -> None:
    """A pipeline that runs late (each frame a second past due, none waiting behind it) is
    not the client's fault: every frame is sent."""
    box = Outbox(max_frames=30, max_lag_s=0.5)

    async def go() -> list[int]:
        out = []
        for i in range(20):
            box.put(_frame(i), time.time() - 1.0)
            out.append((await box.get()).item.index)
        return out

    assert asyncio.run(go()) == list(range(20))


def test_frames_of_audio_sent_ahead_are_not_stale() -> None:
    """Audio sent ahead of real time: frames not due yet wait, however many seconds of them
    (up to the frame bound)."""
    box = Outbox(max_frames=100, max_lag_s=0.5)
    now = time.time()
    for i in range(90):
        box.put(_frame(i), now + i / 30)
    assert _indexes(_drain(box)) == list(range(90))


def test_get_waits_for_the_next_event() -> None:
    async def go() -> object:
        box = Outbox(max_frames=2)
        later = asyncio.get_running_loop().call_later(0.05, box.put, Gap(1.0, 0.2))
        got = (await asyncio.wait_for(box.get(), 5)).item
        later.cancel()
        return got

    assert asyncio.run(go()) == Gap(1.0, 0.2)


def test_a_live_session_reports_stale_frames_in_its_summaries() -> None:
    """Through the session front: a client that takes nothing while 3 s of audio turn into
    frames gets the last out_frames of them, and the summary counts what went stale."""
    settings = FrontSettings(stall_s=None, summary_s=None, out_frames=10, max_lag_s=0.5)

    async def main(front, portraits) -> list:
        s = await front.open(_spec())
        await s.send_audio(np.zeros(3 * RATE, np.int16))
        await s.end()
        await asyncio.wait_for(s.finished.wait(), 5)
        return await _all(s.events())

    events = _run(main, settings)
    frames = [e for e in events if isinstance(e, Frame)]
    ended = events[-1]
    assert isinstance(ended, Ended)
    total = round(3 * RATE / SPAN)
    assert [f.index for f in frames] == list(range(total - 10, total))
    assert ended.frames == 10 and ended.latency.stale == total - 10
    assert ended.dropped == 0  # the pipeline dropped nothing; the client was behind


def test_a_session_whose_client_sends_nothing_ends_at_the_idle_limit() -> None:
    """Idle frames keep coming while the client is silent, until ``idle_s``: then
    DeadlineExceeded, with a message saying what to send."""
    settings = FrontSettings(stall_s=0.05, summary_s=None, idle_s=0.4)

    async def main(front, portraits) -> tuple[int, BaseException | None]:
        s = await front.open(_spec())
        await s.send_audio(np.zeros(RATE // 10, np.int16))
        frames = 0
        try:
            async for e in s.events():
                frames += isinstance(e, Frame)
        except DeadlineExceeded as exc:
            return frames, exc
        return frames, None

    frames, exc = _run(main, settings)
    assert exc is not None and "send audio" in exc.message
    assert frames >= 6  # the silence filled in went on as idle frames meanwhile
