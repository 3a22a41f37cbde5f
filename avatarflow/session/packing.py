"""When a session's audio goes on the bus: in pieces that each let the audio encoder make a
new frame, not one message per client chunk.

Clients stream 10-20 ms chunks; the audio encoder makes one frame per 1/fps (33 ms at 30 fps),
and frame ``i`` only once the audio reaches the frame's end plus the engine's look-ahead (the
"lead"). A chunk that ends before that point can make nothing downstream yet, so the front
holds it and sends it with the next one: about one audio message per video frame (20 ms chunks
at 30 fps: 30 instead of 50 a second), each costing a publish, a read, a commit and a state
save on its way, and no frame made later than it would be chunk by chunk.

The point is known to within rounding (a sample or two): a piece that ends within the slack of it
goes out too, and the next frame's point is taken only once the audio is surely past it. A lead
that does not match the encoder's engine costs latency, never content: a frame can then wait
for the next piece (one client chunk, at most ``2 / fps`` when the client pauses).

Leads, past a frame's last sample (a client rate other than 16 kHz adds the resampler's
reach, ``RESAMPLER_ZERO_CROSSINGS`` input samples at the lower of the two rates per side):

- ``"mel"``: its windows reach 22.5 ms either side of a frame's centre: 22.5 ms minus half a
  frame (5.8 ms at 30 fps, none below 22.2 fps);
- ``"pcm"`` and any other engine: none (a frame's end);
- a number: that many milliseconds (``"80"`` for a hubert encoder with its default look-ahead);
- ``"off"``: every chunk as it comes.
"""

from __future__ import annotations

import math

from avatarflow.contracts.errors import InvalidInput

ENCODER_RATE = 16000  # what the audio encoder resamples every stream to
MEL_REACH_S = 360 / ENCODER_RATE  # "mel": a 25 ms window centred 10 ms past the frame centre
RESAMPLER_ZERO_CROSSINGS = 24  # the encoder's resampler taps per side, at the lower rate
MAX_LEAD_MS = 200.0


def parse_lead(text: str) -> str | float | None:
    """A lead setting: an engine name, a number of milliseconds or ``"off"`` (None)."""
    text = text.strip()
    if text == "off":
        return None
    try:
        ms = float(text)
    except ValueError:
        if not text.replace("-", "_").isidentifier():
            raise InvalidInput(f"audio lead {text!r} is neither an engine name, a number of "
                               "milliseconds nor 'off'") from None
        return text
    if not 0.0 <= ms <= MAX_LEAD_MS:
        raise InvalidInput(f"audio lead {ms:g} ms is outside 0..{MAX_LEAD_MS:g} ms")
    return ms


def lead_samples(lead: str | float, rate: int, fps: float) -> float:
    """The lead in samples of the client's stream."""
    if isinstance(lead, str):
        seconds = max(0.0, MEL_REACH_S - 0.5 / fps) if lead == "mel" else 0.0
    else:
        seconds = lead / 1000.0
    reach = 0 if rate == ENCODER_RATE else math.ceil(
        RESAMPLER_ZERO_CROSSINGS * max(1.0, rate / ENCODER_RATE)) + 1
    return seconds * rate + reach


class AudioPacker:
    """Says whether the audio fed so far should go on the bus now."""

    def __init__(self, rate: int, fps: float, lead: str | float | None) -> None:
        self.step = rate / fps
        self.lead = None if lead is None else lead_samples(lead, rate, fps)
        # Where the encoder's need can lie around the point: half a 16 kHz sample either side
        # (frame edges are rounded there); through the resampler, its output rounding (one
        # 16 kHz sample more below) and its phase (an input sample either way).
        r = rate / ENCODER_RATE
        self.below, self.above = (0.5, 0.5) if rate == ENCODER_RATE else (1.5 * r + 1, 0.5 * r + 1)
        self.frame = 0  # the first frame the audio sent may not make yet

    def due(self, end: int) -> bool:
        """Whether audio up to sample ``end`` (of the session's clock) goes out now."""
        return self.lead is None or end >= self._point() - self.below

    def sent(self, end: int) -> None:
        """Audio up to ``end`` went out."""
        if self.lead is None:
            return
        while end >= math.floor(self._point() + self.above):  # surely made: the next one
            self.frame += 1

    def restart(self, frame: int) -> None:
        """Barge-in: the encoder starts afresh with frame ``frame``."""
        self.frame = frame

    def _point(self) -> float:
        assert self.lead is not None
        return (self.frame + 1) * self.step + self.lead
