"""Writes the frames and audio of a live session to an MP4, off the event loop."""

from __future__ import annotations

import queue
import threading
from pathlib import Path

import numpy as np

from avatarflow.cli.media import Mp4Writer
from avatarflow.client.api import decode_frame
from avatarflow.contracts.errors import AvatarflowError
from avatarflow.contracts.v1 import api_pb2


class VideoSink:
    """Decodes and encodes frames in a worker thread, placed by index: a missing index repeats
    the previous picture, so the video stays aligned with the audio.

    Each frame's audio (PCM16 of its span, preceded by the spans of frames dropped before
    it) ends at ``(index + 1) * sample_rate / fps``.
    """

    def __init__(self, path: Path, started: api_pb2.SessionStarted) -> None:
        out = started.output
        if not (out.width and out.height and out.fps and started.sample_rate):
            raise AvatarflowError(f"SessionStarted lacks the output format: {out}, "
                                  f"sample rate {started.sample_rate}")
        self.width, self.height, self.fps = out.width, out.height, out.fps
        self.encoding = started.encoding
        self.sample_rate = started.sample_rate
        self.writer = Mp4Writer(path, out.width, out.height, out.fps,
                                sample_rate=started.sample_rate)
        self.repeated = 0
        self._next_index = 0
        self._last: np.ndarray | None = None
        self._audio: list[tuple[int, np.ndarray]] = []
        self._queue: queue.Queue[api_pb2.VideoFrame | None] = queue.Queue()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._work, name="video-sink", daemon=True)
        self._thread.start()

    def put(self, frame: api_pb2.VideoFrame) -> None:
        self._queue.put(frame)

    def _work(self) -> None:
        while (frame := self._queue.get()) is not None:
            if self._error is not None:
                continue
            try:
                self._write(frame)
            except Exception as exc:  # reported by close(), which the session awaits
                self._error = exc

    def _write(self, frame: api_pb2.VideoFrame) -> None:
        if frame.index < self._next_index:
            return  # a repeat of an index already written
        rgb = decode_frame(frame.data, self.encoding, self.width, self.height)
        fill = rgb if self._last is None else self._last
        for _ in range(frame.index - self._next_index):
            self.writer.write(fill)
            self.repeated += 1
        self.writer.write(rgb)
        self._last, self._next_index = rgb, frame.index + 1
        if frame.audio:  # it ends where the frame's span ends (it may cover dropped frames)
            pcm = np.frombuffer(frame.audio, "<i2")
            end = int(round((frame.index + 1) * self.sample_rate / self.fps))
            self._audio.append((max(0, end - pcm.size), pcm[max(0, pcm.size - end):]))

    def _pcm(self) -> np.ndarray:
        end = max((off + a.size for off, a in self._audio), default=0)
        pcm = np.zeros(end, np.int16)
        for off, a in self._audio:
            pcm[off:off + a.size] = a
        return pcm

    def close(self) -> int:
        """Finishes the file; returns the number of video frames written."""
        self._queue.put(None)
        self._thread.join()
        if self._error is not None:
            self.writer.abort()
            raise self._error
        self.writer.close(self._pcm())
        return self.writer.frames

    def abort(self) -> None:
        """Stops and removes the partial file."""
        self._queue.put(None)
        self._thread.join()
        self.writer.abort()
