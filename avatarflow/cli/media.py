"""Reading audio files and writing MP4 (H.264 + AAC) with PyAV."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np

from avatarflow.contracts.errors import InvalidInput, MissingExtra

MAX_AUDIO_SECONDS = 3600


def _av():
    try:
        import av
    except ModuleNotFoundError as exc:  # pragma: no cover - cli extra
        raise MissingExtra("av", "cli") from exc
    return av


def load_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """Decodes any audio PyAV can read -> (N int16 mono PCM, sample rate)."""
    av = _av()
    path = Path(path)
    if not path.is_file():
        raise InvalidInput(f"audio file {path} does not exist")
    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise InvalidInput(f"{path} has no audio stream")
            stream = container.streams.audio[0]
            rate = stream.rate or stream.codec_context.sample_rate
            resampler = av.AudioResampler(format="s16", layout="mono", rate=rate)
            parts = []
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    parts.append(out.to_ndarray().reshape(-1))
                if sum(len(p) for p in parts) > MAX_AUDIO_SECONDS * rate:
                    raise InvalidInput(f"{path} is longer than {MAX_AUDIO_SECONDS} s")
            for out in resampler.resample(None):
                parts.append(out.to_ndarray().reshape(-1))
    except InvalidInput:
        raise
    except (av.error.FFmpegError, ValueError, IndexError) as exc:
        raise InvalidInput(f"cannot decode audio from {path}: {exc}") from exc
    pcm = np.concatenate(parts).astype(np.int16) if parts else np.zeros(0, np.int16)
    if pcm.size == 0:
        raise InvalidInput(f"{path} contains no audio samples")
    return pcm, int(rate)


class Mp4Writer:
    """Writes RGB frames as H.264 (yuv420p) as they arrive, then muxes the audio."""

    def __init__(self, path: str | Path, width: int, height: int, fps: float,
                 sample_rate: int | None = None, preset: str = "ultrafast",
                 crf: int = 20) -> None:
        av = _av()
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.container = av.open(str(self.path), mode="w")
        self.fps = Fraction(fps).limit_denominator(1001)
        self.video = self.container.add_stream("libx264", rate=self.fps)
        self.video.width, self.video.height, self.video.pix_fmt = width, height, "yuv420p"
        self.video.options = {"preset": preset, "crf": str(crf), "tune": "zerolatency"}
        self.video.codec_context.thread_count = 1
        self.audio = None
        if sample_rate:
            self.audio = self.container.add_stream("aac", rate=sample_rate)
            self.audio.layout = "mono"
        self.frames = 0

    def write(self, rgb: np.ndarray) -> None:
        av = _av()
        frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
        frame.pts = self.frames
        frame.time_base = 1 / self.fps
        for packet in self.video.encode(frame):
            self.container.mux(packet)
        self.frames += 1

    def abort(self) -> None:
        """Closes without finishing and removes the partial file."""
        self.container.close()
        self.path.unlink(missing_ok=True)

    def close(self, pcm: np.ndarray | None = None) -> None:
        """Flushes the video and muxes ``pcm`` (int16 mono, at the declared rate) as AAC."""
        av = _av()
        for packet in self.video.encode(None):
            self.container.mux(packet)
        if self.audio is not None and pcm is not None and pcm.size:
            stream, sample_rate = self.audio, self.audio.rate
            step = 1024
            for start in range(0, pcm.size, step):
                chunk = pcm[start:start + step].reshape(1, -1)
                frame = av.AudioFrame.from_ndarray(chunk, format="s16", layout="mono")
                frame.sample_rate = sample_rate
                frame.pts = start
                frame.time_base = Fraction(1, sample_rate)
                for packet in stream.encode(frame):
                    self.container.mux(packet)
            for packet in stream.encode(None):
                self.container.mux(packet)
        self.container.close()
