"""Every limit a session's input is checked against, defined once: the gateway, the CLI, the
stages and the docs read them from here."""

from __future__ import annotations

# Audio a session streams: PCM16 mono at a rate in this range, at most MAX_CHUNK_S per message.
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 8000, 48000
MAX_CHUNK_S = 10.0

# Output video: sides a multiple of SIDE_STEP within MIN_SIDE..MAX_SIDE, fps within the range.
MIN_SIDE, MAX_SIDE, SIDE_STEP = 256, 1024, 16
MIN_FPS, MAX_FPS = 1.0, 60.0
DEFAULT_FPS = 30.0

# Portraits: at most this many pixels a side (and so decoded pixels); larger ones are refused.
MAX_PORTRAIT_SIDE = 4096

# Speaking-style references: this many frames, at most this fps.
MIN_STYLE_FRAMES, MAX_STYLE_FRAMES = 8, 1800
MAX_STYLE_FPS = 120.0
