"""Bundled demo inputs: the astronaut portrait (scikit-image) and espeak-ng speech with pauses."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import wave
from pathlib import Path

import numpy as np

from avatarflow.contracts.errors import MissingExtra, Unavailable

SENTENCES = (
    "Hello! I am a talking avatar, made from a single photograph.",
    "My lips follow the speech, and they close when I pause.",
    "Thank you for watching this demonstration.",
)
PAUSE_S = 0.8


def speak(text: str, rate_wpm: int = 150) -> tuple[np.ndarray, int]:
    """Speaks ``text`` with espeak-ng -> (int16 mono PCM, sample rate)."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise Unavailable("espeak-ng is not installed (Debian package espeak-ng; make installs it)")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "s.wav"
        subprocess.run([exe, "-s", str(rate_wpm), "-w", str(path), text], check=True,
                       capture_output=True)
        with wave.open(str(path)) as w:
            rate = w.getframerate()
            pcm = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
    return pcm, rate


def speech_with_pauses(sentences: tuple[str, ...] = SENTENCES,
                       pause_s: float = PAUSE_S) -> tuple[np.ndarray, int]:
    """Sentences separated (and framed) by digital silence, so pauses are unambiguous."""
    parts, rate = [], 22050
    for text in sentences:
        pcm, rate = speak(text)
        parts += [np.zeros(int(pause_s * rate), np.int16), pcm]
    parts.append(np.zeros(int(pause_s * rate), np.int16))
    return np.concatenate(parts), rate


def write_wav(path: Path, pcm: np.ndarray, rate: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.astype("<i2").tobytes())


def astronaut_png(path: Path) -> None:
    try:
        import skimage.data
        from PIL import Image
    except ModuleNotFoundError as exc:  # pragma: no cover - cli extra
        raise MissingExtra(exc.name or "scikit-image", "cli") from exc
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(skimage.data.astronaut()).save(path)


def make_inputs(directory: Path) -> tuple[Path, Path]:
    """Writes ``portrait.png`` and ``speech.wav`` into ``directory``; returns their paths."""
    portrait, speech = directory / "portrait.png", directory / "speech.wav"
    astronaut_png(portrait)
    write_wav(speech, *speech_with_pauses())
    return portrait, speech
