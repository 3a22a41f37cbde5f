"""The "joyvasa" motion engine: JoyVASA's published motion generator (jdh-algo/JoyVASA), loaded
from its own weights layout, making LivePortrait motion (``MotionFrame.liveportrait``).

Offline (``sampler.generate``, ``avatarflow motion``): exactly JoyVASA's ``gen_motion_sequence``
before its optional smoothing: the clip padded 80 ms before and 40 ms after, windows of
``n_motions`` frames at 25 fps each conditioned on the previous window's last ``n_prev``
frames, classifier-free guidance on audio (2.8 by default), the checkpoint's DDPM schedule, its
noise drawn in JoyVASA's order from torch's global generator.

Live (``JoyVASAEngine`` in the motion-gen stage): the audio encoder's ``pcm`` engine passes
16 kHz audio on and this engine runs JoyVASA's audio model itself, per window, with the
encoder weights of the motion checkpoint, as JoyVASA does (so no streaming approximation of
its audio features is needed). A window runs every ``stride`` JoyVASA frames (default 5 =
200 ms) from JoyVASA's own history conditioning, hearing ``lookahead_ms`` (default 80) past
the audio of its last frame; see ``session``. JoyVASA frame ``j`` hears the audio that ends
80 ms before it is shown (its clips start with 80 ms of zeros), so a session frame is ready
once the audio is at most ``(stride + 1) / 25 s + lookahead - 80 ms`` past its timestamp: 240
ms with the defaults, plus compute. A window costs one audio-model pass over ``n_motions``
frames of audio and ``2 x steps`` denoiser passes, for ``stride`` new frames. Motion is resampled
from 25 fps to the session's fps by linear interpolation; the clock stays the session's.
Controls: ``seed`` picks the noise, ``expression_intensity`` and ``pose_amplitude`` scale the
motion away from the session's first frame; a style reference is ignored.
"""

from __future__ import annotations

from avatarflow.contracts.errors import MissingExtra

try:
    import torch  # noqa: F401
    import transformers  # noqa: F401
except ModuleNotFoundError as exc:
    raise MissingExtra(exc.name or "torch", "neural") from exc

from .engine import JoyVASAEngine  # noqa: E402

__all__ = ["JoyVASAEngine"]
