"""The "diffusion" motion engine: ChatAnyone's hierarchical motion diffusion, with weights.

Per window of N new frames, the face DiT (``models.face_dit``) denoises expression + 6-D head
pose from Gaussian noise with few-step DDIM (eta = 0; the network predicts the noise eps, as
ChatAnyone trains it; classifier-free guidance on audio). It is conditioned on the audio of the
window's H history frames, of its own N frames and of L look-ahead frames, on the last H
generated frames, on the controls and on an optional reference expression clip. The body
transformer (``models.body``) then maps the posed head keypoints, the audio and an optional
appearance vector to head keypoint offsets, upper-body keypoints and hand coefficients, which a
fixed hand basis turns into hand keypoints (``models.hands``). Output per frame is the signal
engine's ``MotionOutput``; head scale is always 1 (the pose is 6-D).

Streaming: a window is generated once its N frames and L look-ahead frames have arrived, so a
frame waits at most N + L - 1 frames (9 with the presets); ``flush`` finishes the last partial
window with null audio and trims it. Windows start at fixed frame numbers and window w's noise
comes from a generator seeded by (seed, w), so the output depends only on the frames and the
seed, never on how they were chunked. A barge-in (``reset_audio``) drops pending frames and keeps
the history.

Controls: ``expression_intensity`` and ``pose_amplitude`` are the coarse style the DiT is
conditioned on (1 = a typical range, as in training: a clip's range over the data set's mean).
Below 1 the output is also scaled by them, so 0 gives an exactly neutral, still avatar; above 1
the wider range comes from the style alone, so it is not applied twice. Blinks are exempt from
the intensity, as in the signal engine. ``emotion`` selects a learned emotion embedding. New
controls, reference clips and appearance vectors apply from the next window.
"""

from __future__ import annotations

from avatarflow.contracts.errors import MissingExtra

try:
    import torch  # noqa: F401
except ModuleNotFoundError as exc:
    raise MissingExtra("torch", "neural") from exc

from .config import PRESETS, DiffusionConfig, build_model, layout_dim, preset, save  # noqa: E402
from .engine import DiffusionEngine  # noqa: E402
from .sampler import DDIM  # noqa: E402
from .session import DiffusionSession  # noqa: E402

__all__ = ["DDIM", "PRESETS", "DiffusionConfig", "DiffusionEngine", "DiffusionSession",
           "build_model", "layout_dim", "preset", "save"]
