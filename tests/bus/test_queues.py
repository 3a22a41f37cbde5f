"""How a replica hands out what it read from Redis, without a server: sessions take turns,
control overtakes queued data once the session has started, and an interrupt drops the older
turn's data (to be acknowledged, never delivered)."""

from __future__ import annotations

from typing import cast

import numpy as np

from avatarflow.bus import keys
from avatarflow.bus.streams.queues import SessionQueue, TopicQueue
from avatarflow.bus.streams.wire import Entry, fields
from avatarflow.contracts import messages as m
from avatarflow.runtime.registry import AUDIO


def _entry(n: int, msg: m.Message, turn: int = 0) -> Entry:
    raw = cast(dict[bytes, bytes], fields(msg, turn, raw_pictures=False))  # all bytes
    return f"{n}-0".encode(), raw


def _chunk(sid: str, i: int) -> m.AudioChunk:
    return m.AudioChunk(session_id=sid, index=i, sample_rate=16000, pcm=np.zeros(320, np.int16))


def _drain(q: TopicQueue) -> list[tuple[str, str, int]]:
    out = []
    while (d := q.next()) is not None:
        out.append((d.msg.session_id, type(d.msg).__name__, getattr(d.msg, "index", -1)))
    return out


def test_sessions_take_turns() -> None:
    q = TopicQueue(AUDIO, "audio-encoder-workers", join=True)
    for sid in ("a", "b"):
        s = SessionQueue(sid, keys.stream(sid, AUDIO), keys.stream(sid, keys.CTL), started=True)
        s.data.extend(_entry(i, _chunk(sid, i)) for i in range(3))
        q.add(s)
    assert [(sid, i) for sid, _, i in _drain(q)] == [
        ("a", 0), ("b", 0), ("a", 1), ("b", 1), ("a", 2), ("b", 2)]


def test_control_waits_for_the_start_then_overtakes_data() -> None:
    q = TopicQueue(AUDIO, "audio-encoder-workers", join=True)
    s = SessionQueue("a", keys.stream("a", AUDIO), keys.stream("a", keys.CTL))
    s.data.extend([_entry(1, m.SessionStart(session_id="a")), _entry(2, _chunk("a", 0)),
                   _entry(3, _chunk("a", 1))])
    s.ctl.append(_entry(4, m.Interrupt(session_id="a", index=9), turn=1))
    q.add(s)
    got = _drain(q)
    assert got[0][1] == "SessionStart"  # nothing is delivered before the session's start
    assert got[1] == ("a", "Interrupt", 9)
    # The interrupt began turn 1: turn-0 chunks still queued are dropped, and acknowledged.
    assert got[2:] == []
    assert sorted(entry_id for _, entry_id in q.skipped) == [b"2-0", b"3-0"]
    assert q.backlog() == 0
