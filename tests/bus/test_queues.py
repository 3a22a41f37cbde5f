"""How a replica hands out what it read from Redis, without a server: sessions take turns,
control overtakes queued data once the session has started, and an interrupt drops the older
turn's data (to be acknowledged, never delivered)."""

from __future__ import annotations

from typing import cast

import numpy as np

from avatarflow.bus import keys
from avatarflow.bus.streams.queues import JoinShare, SessionQueue, TopicQueue
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


def test_new_sessions_go_to_the_replicas_holding_the_fewest() -> None:
    share = JoinShare(patience_s=1.0)
    assert share.reads(5, now=0.0) and share.takes(5)  # no other live replica
    share.peers = 2
    assert share.reads(2, now=0.0) and share.takes(2)  # as few as the least busy peer
    assert not share.reads(3, now=0.0)  # more: it leaves the join streams out of its reads
    assert not share.takes(3)  # and passes on what it read anyway
    assert not share.reads(3, now=60.0)  # however long, while no session waits
    share.peers = 3
    assert share.reads(3, now=60.0) and share.takes(3)  # the peer caught up


def test_a_busier_replica_takes_a_session_left_waiting_too_long() -> None:
    """A peer that holds fewer sessions but takes none (stuck, or its count out of date)
    holds a new session up for ``patience_s`` at most: then the busier replica reads the join
    streams until it has taken one, and holds back again."""
    share = JoinShare(patience_s=1.0)
    share.peers = 0
    share.seen(True, now=10.0)  # a session waits unread
    assert [share.reads(4, now=t) for t in (10.0, 10.5, 11.0, 11.2)] == \
        [False, False, True, True]
    assert share.takes(4)  # the session it read: its own
    assert not share.takes(5)  # but only that one
    share.seen(True, now=11.5)  # another waits
    assert [share.reads(5, now=t) for t in (11.5, 12.25, 12.5)] == [False, False, True]
    share.seen(False, now=12.6)  # a peer took it meanwhile: it holds back again
    assert not share.reads(5, now=12.6) and not share.takes(5)
