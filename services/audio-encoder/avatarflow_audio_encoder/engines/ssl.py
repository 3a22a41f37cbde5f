"""Engines "hubert" and "wav2vec2": hidden states of a self-supervised speech model, one vector
per video frame, streamed with bounded context and a look-ahead of at most 80 ms.

The model (a transformers ``HubertModel`` / ``Wav2Vec2Model`` read from a local directory) emits
a frame every ``hop`` = 320 samples at 16 kHz (50 Hz); model frame ``j`` reads the ``field`` =
400 samples from ``hop * j``, so its centre lies at ``hop * j + field / 2``. Video frame ``i``
takes the linear interpolation of the two model frames around its centre ``(i + 0.5) / fps``
(before the first model frame's centre it holds that frame).

Streaming window. Video frames are computed in blocks of ``block`` frames (default 2). Block
``k`` runs the model once on the model-rate samples ``[s_k, e_k)``, where

* ``s_k = hop * max(0, j_lo - C)``: ``C = ceil(context_ms / 20 ms)`` model frames before the
  first model frame the block interpolates from (``j_lo``); the stream start clips it, and
  the start stays on the model frame grid so every window sees the same frames;
* ``e_k = max(end_k + lookahead, hop * j_hi + field)``: ``end_k`` is the sample where the
  block's last video frame ends and ``j_hi`` the last model frame it interpolates from; the
  second term, at most ``32.5 ms - 0.5 / fps`` past the end (16 ms at 30 fps, 24 ms at 60), only
  matters for a look-ahead smaller than that.

Block ``k`` is emitted as soon as ``e_k`` samples have arrived; ``flush`` pads zeros past the
end of the stream up to the last block's ``e_k`` and returns ``ceil(duration * fps)`` frames in
all, as "mel" does. Latency past a frame's own last sample is at most ``(block - 1) / fps +
max(lookahead, 32.5 ms - 0.5 / fps)``: 113 ms at 30 fps with the defaults; the resampler adds
``taps_per_side`` input samples (1.5 ms at 48 kHz, 3 ms at 8 kHz) for other input rates, and
the model's compute time comes on top.

What is promised. Frame ``i`` is a function of the samples ``[s_k, e_k)``, ``k = i // block``,
alone (zeros past the end of the stream), computed by one model call on exactly that array:

* every chunking of the same audio (20 ms chunks, odd sizes, one whole clip) gives all
  ``ceil(duration * fps)`` frames identical to float rounding (``1e-5`` absolute and relative;
  in practice bit for bit on one device and thread setting);
* two 16 kHz streams that share their first ``n`` samples agree, to the same tolerance, on
  every block with ``e_k <= n``; other rates shift by the resampler's look-ahead.

Not promised: equality with one model call over a whole clip, which sees unbounded context.
``do_normalize`` from ``preprocessor_config.json`` (off when the file is absent) normalises
each window, the only input the model sees.

A session pickles without the model: it names the model by its load key and takes it from the
per-process cache on restore, loading it from the weights directory if this process has not.
Its buffer holds about ``context + block + lookahead`` of 16 kHz float32 audio (~75 KB with the
defaults).
"""

from __future__ import annotations

import functools
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from avatarflow.contracts.errors import InvalidInput, MissingExtra
from avatarflow.contracts.limits import MAX_FPS, MIN_FPS
from avatarflow.runtime import devices
from avatarflow_audio_encoder.resample import Resampler

try:
    import safetensors
    import torch
    import transformers
except ModuleNotFoundError as exc:
    raise MissingExtra(exc.name or "torch", "neural") from exc

# Loading is local and quick: transformers' progress bars would only clutter service logs.
transformers.utils.logging.disable_progress_bar()

MAX_LOOKAHEAD_MS = 80.0
MAX_CONTEXT_MS = 30_000.0
MAX_BLOCK = 60
MODELS = {"hubert": "HubertModel", "wav2vec2": "Wav2Vec2Model"}
LAYER_WEIGHT_FILES = ("layer_weights.npy", "layer_weights.pt")  # the first present is used
NORM_EPS = 1e-7  # as transformers' Wav2Vec2FeatureExtractor
LOAD_ERRORS = (OSError, ValueError, KeyError, TypeError, RuntimeError, safetensors.SafetensorError)

Mix = int | np.ndarray  # a hidden-state index (-1: the last) or softmax weights over all of them


class SSLModel:
    """One loaded model on its device: a window of model-rate audio in, mixed hidden states at
    the model's frame rate out. Shared read-only by every session of the process."""

    def __init__(self, kind: str, path: str, device: str, dtype: str) -> None:
        try:
            config = transformers.AutoConfig.from_pretrained(path, local_files_only=True)
        except LOAD_ERRORS as exc:
            raise InvalidInput(f"option 'weights': no loadable model config in {path}: "
                               f"{exc}") from exc
        if config.model_type != kind:
            raise InvalidInput(f"option 'weights': {path} holds a {config.model_type!r} model "
                               f"but engine {kind!r} needs a {kind!r} one ({MODELS[kind]})")
        try:
            module, info = getattr(transformers, MODELS[kind]).from_pretrained(
                path, config=config, local_files_only=True, dtype=torch.float32,
                output_loading_info=True)
        except LOAD_ERRORS as exc:
            raise InvalidInput(f"option 'weights': cannot load the {kind} model in {path}: "
                               f"{exc}") from exc
        # masked_spec_embed only serves training-time masking.
        missing = sorted(k for k in info["missing_keys"] if k != "masked_spec_embed")
        if missing:
            raise InvalidInput(f"option 'weights': the checkpoint in {path} lacks "
                               f"{len(missing)} weights, e.g. {missing[0]}")
        self.device, self.dtype = devices.resolve(device, dtype)
        self.module = module.to(self.device, self.dtype).eval().requires_grad_(False)
        self.dim = int(config.hidden_size)
        self.layers = int(config.num_hidden_layers)
        self.hop = math.prod(config.conv_stride)
        self.field = 1 + sum((k - 1) * math.prod(config.conv_stride[:n])
                             for n, k in enumerate(config.conv_kernel))
        self.rate, self.normalize = _preprocessor(path)

    def features(self, x: np.ndarray, mix: Mix) -> np.ndarray:
        """F x D float32 for a window x of N float32 samples, F = (N - field) // hop + 1."""
        with torch.inference_mode():
            # A fresh (aligned) copy: some kernels' rounding depends on the buffer's alignment.
            wav = torch.tensor(x).to(self.device, self.dtype)[None]
            out = self.module(wav, output_hidden_states=not isinstance(mix, int) or mix >= 0)
            if isinstance(mix, int):
                h = (out.last_hidden_state if mix < 0 else out.hidden_states[mix])[0].float()
            else:
                stack = torch.stack(out.hidden_states)[:, 0].float()
                h = torch.tensordot(torch.from_numpy(mix).to(self.device), stack, dims=1)
            return h.cpu().numpy()


@functools.cache
def load(kind: str, path: str, device: str, dtype: str) -> SSLModel:
    """The process's one model per (kind, weights directory, device, dtype)."""
    return SSLModel(kind, path, device, dtype)


def _preprocessor(path: str) -> tuple[int, bool]:
    """Sampling rate and do_normalize from preprocessor_config.json (16 kHz, off if absent)."""
    file = os.path.join(path, "preprocessor_config.json")
    if not os.path.isfile(file):
        return 16000, False
    try:
        with open(file, encoding="utf-8") as f:
            cfg = json.load(f)
        return int(cfg.get("sampling_rate", 16000)), bool(cfg.get("do_normalize", False))
    except (OSError, ValueError, TypeError, AttributeError) as exc:
        raise InvalidInput(f"option 'weights': unreadable {file}: {exc}") from exc


def _mix(layers: str | int, path: str, n: int) -> Mix:
    """What option ``layers`` selects among the n + 1 hidden states (CNN projection first)."""
    if layers == "last":
        return -1
    if layers == "weighted":
        logits = np.zeros(n + 1)
        for name in LAYER_WEIGHT_FILES:
            file = os.path.join(path, name)
            if os.path.isfile(file):
                logits = _read_logits(file, n + 1)
                break
        w = np.exp(logits - logits.max())
        return (w / w.sum()).astype(np.float32)
    try:
        index = int(layers)
    except ValueError:
        index = -1
    if str(index) != str(layers).strip() or not 0 <= index <= n:
        raise InvalidInput(f"option 'layers' must be 'weighted', 'last' or a hidden-state "
                           f"index 0..{n}, got {layers!r}")
    return index


def _read_logits(file: str, size: int) -> np.ndarray:
    try:
        if file.endswith(".npy"):
            raw = np.load(file, allow_pickle=False)
        else:
            raw = torch.load(file, map_location="cpu", weights_only=True).detach().numpy()
        logits = np.asarray(raw, dtype=np.float64).reshape(-1)
    except (OSError, ValueError, TypeError, AttributeError, RuntimeError) as exc:
        raise InvalidInput(f"unreadable layer weights {file}: {exc}") from exc
    if logits.size != size or not np.isfinite(logits).all():
        raise InvalidInput(f"layer weights {file} must be {size} finite logits (one per "
                           f"hidden state), got {logits.size} values")
    return logits


@dataclass(frozen=True)
class Windows:
    """Which model-rate samples each block of video frames reads (see the module docstring)."""

    fps: float
    block: int  # video frames per block
    context: int  # model frames before the block's first one
    lookahead: int  # samples past the block's end
    rate: int
    hop: int
    field: int

    def at(self, frames: float) -> int:
        """Model-rate sample index of a time given in video frames."""
        return math.floor(frames * self.rate / self.fps + 0.5)

    def pos(self, frames: np.ndarray | Sequence[int]) -> np.ndarray:
        """Fractional model-frame index of each video frame's centre."""
        centre = (np.asarray(frames, dtype=np.float64) + 0.5) * self.rate / self.fps
        return np.maximum((centre - self.field / 2) / self.hop, 0.0)

    def span(self, k: int) -> tuple[int, int]:
        """Samples ``[start, end)`` that block ``k`` reads."""
        lo, hi = np.floor(self.pos([k * self.block, (k + 1) * self.block - 1])).astype(int)
        start = self.hop * max(0, int(lo) - self.context)
        end = max(self.at((k + 1) * self.block) + self.lookahead, self.hop * (int(hi) + 1)
                  + self.field)
        return start, end


class SSLSession:
    """One stream: resampler, the model-rate samples later blocks read, the next block."""

    def __init__(self, key: tuple[str, str, str, str], windows: Windows, sample_rate: int,
                 mix: Mix) -> None:
        self._key = key
        self._model = load(*key)
        self.win = windows
        self.sample_rate = sample_rate
        self._mix = mix
        self._resampler = Resampler(sample_rate, windows.rate)
        self._n_in = 0  # input samples at sample_rate
        self._n = 0  # model-rate samples received
        self._start = 0  # absolute model-rate index of _buf[0]
        self._buf = np.zeros(0, np.float32)
        self._next = 0  # next block

    def __getstate__(self) -> dict:
        s = self.__dict__.copy()
        del s["_model"]
        return s

    def __setstate__(self, s: dict) -> None:
        self.__dict__.update(s)
        self._model = load(*self._key)

    def push(self, pcm: np.ndarray) -> list[np.ndarray]:
        """Adds int16 samples; returns features (dim float32) of every frame now complete."""
        self._n_in += pcm.size
        self._append(self._resampler.push(pcm.astype(np.float64) / 32768.0))
        out: list[np.ndarray] = []
        while self.win.span(self._next)[1] <= self._n:
            out += self._block(self.win.block)
        self._trim()
        return out

    def flush(self) -> list[np.ndarray]:
        """Ends the stream: emits frames up to ``ceil(duration * fps)``, zero-padded."""
        self._append(self._resampler.flush())
        total = math.ceil(round(self._n_in * self.win.fps / self.sample_rate, 6))
        out: list[np.ndarray] = []
        while (first := self._next * self.win.block) < total:
            self._append(np.zeros(max(0, self.win.span(self._next)[1] - self._n)))
            out += self._block(min(self.win.block, total - first))
        self._trim()
        return out

    def _append(self, x: np.ndarray) -> None:
        if x.size:
            self._buf = np.concatenate((self._buf, x.astype(np.float32)))
            self._n += x.size

    def _trim(self) -> None:
        """Drops samples that no later block reads: keeps memory and snapshots bounded."""
        keep = self.win.span(self._next)[0]
        if keep > self._start:
            self._buf = self._buf[keep - self._start:]
            self._start = keep

    def _block(self, count: int) -> list[np.ndarray]:
        """Runs the model on the next block's window; returns its first ``count`` frames."""
        start, end = self.win.span(self._next)
        x = self._buf[start - self._start:end - self._start]
        if self._model.normalize:
            x64 = x.astype(np.float64)
            x = ((x64 - x64.mean()) / np.sqrt(x64.var() + NORM_EPS)).astype(np.float32)
        h = self._model.features(x, self._mix)
        pos = self.win.pos(np.arange(count) + self._next * self.win.block)
        j = np.floor(pos).astype(np.int64)
        w = (pos - j).astype(np.float32)[:, None]
        j -= start // self.win.hop
        self._next += 1
        return list((1.0 - w) * h[j] + w * h[j + 1])


class SSLEngine:
    """A self-supervised speech model as an audio-encoder engine; subclasses name the kind."""

    kind = ""

    def __init__(self, weights: str | None = None, device: str = "cpu", dtype: str = "float32",
                 layers: str | int = "weighted", context_ms: float = 1000.0,
                 lookahead_ms: float = 80.0, block: int = 2, fps: float = 30.0) -> None:
        if not weights:
            raise InvalidInput(f"engine {self.kind!r} needs option 'weights': a local directory "
                               "holding the model in the Hugging Face layout")
        if not os.path.isdir(weights):
            raise InvalidInput(f"option 'weights': {weights!r} is not a directory")
        if not 0.0 <= lookahead_ms <= MAX_LOOKAHEAD_MS:
            raise InvalidInput(f"option 'lookahead_ms' must be within 0..{MAX_LOOKAHEAD_MS:g}, "
                               f"got {lookahead_ms!r}")
        if not 0.0 <= context_ms <= MAX_CONTEXT_MS:
            raise InvalidInput(f"option 'context_ms' must be within 0..{MAX_CONTEXT_MS:g}, "
                               f"got {context_ms!r}")
        if not isinstance(block, int) or not 1 <= block <= MAX_BLOCK:
            raise InvalidInput(f"option 'block' must be an integer 1..{MAX_BLOCK} (video "
                               f"frames per model call), got {block!r}")
        self._key = (self.kind, os.path.realpath(weights), _device(device, dtype), dtype)
        self.model = load(*self._key)
        self.fps = float(fps)
        self.context_ms, self.lookahead_ms, self.block = context_ms, lookahead_ms, block
        self.dim = self.model.dim
        self.layout = f"{self.kind}{self.dim}"
        self.names: tuple[str, ...] = ()
        self._mix = _mix(layers, self._key[1], self.model.layers)

    def open_session(self, sample_rate: int, fps: float | None = None) -> SSLSession:
        """Starts one audio stream at ``sample_rate`` producing frames at ``fps``."""
        fps = self.fps if fps is None else float(fps)
        if not MIN_FPS <= fps <= MAX_FPS:
            raise InvalidInput(f"fps must be within {MIN_FPS:g}..{MAX_FPS:g}, got {fps}")
        mdl = self.model
        frame_ms = 1000.0 * mdl.hop / mdl.rate
        windows = Windows(fps=fps, block=self.block,
                          context=math.ceil(self.context_ms / frame_ms - 1e-9),
                          lookahead=round(self.lookahead_ms * mdl.rate / 1000.0),
                          rate=mdl.rate, hop=mdl.hop, field=mdl.field)
        return SSLSession(self._key, windows, sample_rate, self._mix)


def _device(device: str, dtype: str) -> str:
    """The canonical device name, once it and the precision are known to be usable."""
    return str(devices.resolve(device, dtype)[0])


class HubertEngine(SSLEngine):
    """Engine "hubert": a HuBERT checkpoint (e.g. chinese-hubert-base)."""

    kind = "hubert"


class Wav2Vec2Engine(SSLEngine):
    """Engine "wav2vec2": a wav2vec 2.0 checkpoint (e.g. wav2vec2-base-960h)."""

    kind = "wav2vec2"
