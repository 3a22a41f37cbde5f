"""An RGB frame that is encoded or decoded only when someone needs that form.

Inside one process a picture stays raw pixels and is passed by reference; the codec asks for
JPEG when the picture crosses the Redis bus, and a stage that passes a frame on untouched
(the refiner skipping a late frame) never decodes or re-encodes it.
"""

from __future__ import annotations

import numpy as np

from avatarflow.contracts.errors import InvalidInput, MissingExtra

DEFAULT_QUALITY = 90


def _cv2():
    try:
        import cv2
    except ModuleNotFoundError as exc:  # pragma: no cover - depends on the installed extra
        raise MissingExtra("opencv", "refine") from exc
    return cv2


class Picture:
    """H x W x 3 uint8 RGB, held as pixels, as JPEG, or both."""

    __slots__ = ("_rgb", "_jpeg", "width", "height", "quality")

    def __init__(self, rgb: np.ndarray | None = None, *, jpeg: bytes | None = None,
                 width: int = 0, height: int = 0, quality: int = DEFAULT_QUALITY) -> None:
        if rgb is None and jpeg is None:
            raise ValueError("a picture needs pixels or JPEG bytes")
        if rgb is not None:
            if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
                raise InvalidInput(f"a picture is H x W x 3 uint8, got {rgb.dtype} {rgb.shape}")
            height, width = rgb.shape[:2]
        self._rgb = rgb
        self._jpeg = jpeg
        self.width, self.height, self.quality = int(width), int(height), int(quality)

    @classmethod
    def of(cls, image: np.ndarray | Picture) -> Picture:
        return image if isinstance(image, Picture) else cls(image)

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.height, self.width, 3)

    @property
    def has_jpeg(self) -> bool:
        return self._jpeg is not None

    def rgb(self) -> np.ndarray:
        """The pixels, decoding the JPEG once if needed. Treat the array as read-only."""
        if self._rgb is None:
            assert self._jpeg is not None  # the constructor takes pixels, JPEG or both
            cv2 = _cv2()
            bgr = cv2.imdecode(np.frombuffer(self._jpeg, np.uint8), cv2.IMREAD_COLOR)
            if bgr is None or bgr.shape[:2] != (self.height, self.width):
                got = "undecodable bytes" if bgr is None else f"{bgr.shape[1]}x{bgr.shape[0]}"
                raise InvalidInput(f"picture: expected a {self.width}x{self.height} JPEG, "
                                   f"got {got}")
            self._rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        return self._rgb

    def jpeg(self) -> bytes:
        """The JPEG bytes, encoding the pixels once if needed."""
        if self._jpeg is None:
            cv2 = _cv2()
            ok, buf = cv2.imencode(".jpg", cv2.cvtColor(self._rgb, cv2.COLOR_RGB2BGR),
                                   [cv2.IMWRITE_JPEG_QUALITY, self.quality])
            if not ok:  # pragma: no cover - cv2 fails only on invalid arrays
                raise InvalidInput("picture: JPEG encoding failed")
            self._jpeg = buf.tobytes()
        return self._jpeg

    def __repr__(self) -> str:
        held = "+".join(k for k, v in (("rgb", self._rgb), ("jpeg", self._jpeg)) if v is not None)
        return f"Picture({self.width}x{self.height}, {held})"
