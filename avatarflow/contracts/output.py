"""Output formats a session may ask for."""

from __future__ import annotations

from avatarflow.contracts.errors import InvalidInput, shown
from avatarflow.contracts.limits import DEFAULT_FPS, MAX_FPS, MAX_SIDE, MIN_FPS, MIN_SIDE, SIDE_STEP

MODES = ("upper-body", "head")
DEFAULT_SIZE = {"upper-body": (512, 768), "head": (512, 512)}


def validate_output(mode: str, width: int, height: int, fps: float) -> None:
    """Raises InvalidInput naming what is allowed when the request is not."""
    if mode not in MODES:
        raise InvalidInput(f"mode must be one of {', '.join(MODES)}, got {shown(mode)}")
    for side, value in (("width", width), ("height", height)):
        if not MIN_SIDE <= value <= MAX_SIDE or value % SIDE_STEP:
            raise InvalidInput(
                f"unsupported output size {width}x{height}: {side} must be a multiple of "
                f"{SIDE_STEP} between {MIN_SIDE} and {MAX_SIDE}")
    if not MIN_FPS <= fps <= MAX_FPS:
        raise InvalidInput(f"unsupported fps {fps:g}: must be between {MIN_FPS:g} and {MAX_FPS:g}")


def resolve_output(mode: str = "", width: int = 0, height: int = 0,
                   fps: float = 0.0) -> tuple[str, int, int, float]:
    """Fills unset fields (empty, 0) with the defaults, then validates."""
    mode = mode or MODES[0]
    if mode in DEFAULT_SIZE and not (width or height):
        width, height = DEFAULT_SIZE[mode]
    fps = fps or DEFAULT_FPS
    validate_output(mode, width, height, fps)
    return mode, width, height, fps
