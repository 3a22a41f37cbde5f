"""A live session's events on their way to its client: bounded, and kept current.

Frames are real time. A client that reads slower than they come must not make the front hold
a growing backlog, nor receive that backlog later, so (when limits are set):

- at most ``max_frames`` frames and ``max_bytes`` of them wait; beyond that the oldest
  waiting frame is dropped;
- a frame more than ``max_lag_s`` past due, with a frame more than ``max_lag_s`` newer
  already waiting, is dropped when the client next takes an event: the client is behind, and
  the newer frame brings it back to the present. A frame that is late only because the
  pipeline was (nothing newer waits) still goes out, and so does a frame of audio sent ahead
  of real time (not due yet).

Control events (gaps, latency summaries, the end, errors) are never dropped. Without limits
(``FrontSettings.offline``, a file read as fast as it renders) every frame is kept.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from avatarflow.session.events import Event, Frame


@dataclass(frozen=True, slots=True)
class Waiting:
    """An event in the outbox; a frame with when it was due (wall time) and its size."""

    item: Event | BaseException
    due: float = 0.0
    size: int = 0  # bytes of picture and audio held


def frame_size(frame: Frame) -> int:
    """The bytes a frame holds in memory: its JPEG (or its pixels) and its audio."""
    p = frame.image
    return (len(p.jpeg()) if p.has_jpeg else p.width * p.height * 3) + len(frame.audio)


class Outbox:
    """FIFO of a session's events with the bounds above; ``on_stale`` is called once for
    each frame dropped."""

    def __init__(self, *, max_frames: int | None = None, max_bytes: int | None = None,
                 max_lag_s: float | None = None,
                 on_stale: Callable[[], None] = lambda: None) -> None:
        self.max_frames, self.max_bytes, self.max_lag_s = max_frames, max_bytes, max_lag_s
        self.on_stale = on_stale
        self.frames = 0  # frames waiting
        self.bytes = 0  # their size
        self._items: deque[Waiting] = deque()
        self._newest_due = 0.0
        self._ready = asyncio.Event()

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item: Event | BaseException, due: float = 0.0) -> None:
        """Adds an event; a frame is due at wall time ``due``. Never blocks."""
        if isinstance(item, Frame):
            w = Waiting(item, due, frame_size(item))
            self.frames += 1
            self.bytes += w.size
            self._newest_due = max(self._newest_due, due)
            self._items.append(w)
            while self.frames > 1 and self._over():
                self._drop_oldest_frame()
        else:
            self._items.append(Waiting(item))
        self._ready.set()

    async def get(self) -> Waiting:
        """The next event, once there is one, after dropping the frames gone stale."""
        while not self._items:
            self._ready.clear()
            await self._ready.wait()
        self._drop_stale(time.time())
        w = self._items.popleft()
        if isinstance(w.item, Frame):
            self.frames -= 1
            self.bytes -= w.size
        return w

    def _over(self) -> bool:
        return (self.max_frames is not None and self.frames > self.max_frames) or (
            self.max_bytes is not None and self.bytes > self.max_bytes)

    def _drop_oldest_frame(self) -> None:
        for i, w in enumerate(self._items):
            if isinstance(w.item, Frame):
                del self._items[i]
                self._dropped(w)
                return

    def _drop_stale(self, now: float) -> None:
        if self.max_lag_s is None or self.frames < 2:
            return
        # Frames are in due order, so the stale ones come first among the frames.
        limit = min(now, self._newest_due) - self.max_lag_s
        first = next((w for w in self._items if isinstance(w.item, Frame)), None)
        if first is None or first.due >= limit:
            return
        kept: deque[Waiting] = deque()
        while self._items:
            w = self._items[0]
            if isinstance(w.item, Frame):
                if w.due >= limit or self.frames == 1:
                    break
                self._dropped(self._items.popleft())
            else:
                kept.append(self._items.popleft())
        kept.extend(self._items)
        self._items = kept

    def _dropped(self, w: Waiting) -> None:
        self.frames -= 1
        self.bytes -= w.size
        self.on_stale()
