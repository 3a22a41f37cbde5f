"""An RGB frame that is encoded or decoded only when someone needs that form.

Inside one process a picture stays raw pixels and is passed by reference; the codec asks for
JPEG when the picture crosses the Redis bus, and a stage that passes a frame on untouched
(the refiner skipping a late frame) never decodes or re-encodes it.

Both codecs are libjpeg-turbo: cv2's (BGR) and simplejpeg's (its TurboJPEG API, RGB in and
out). Measured at quality 90 on the development machine, simplejpeg decodes 256x256 in 0.19 ms
against cv2's 0.26 (imdecode plus the BGR -> RGB conversion) and 512x768 in 1.05 against 1.28,
to the same pixels, so it decodes when installed. Encoding costs the same either way (0.16 and
0.92 ms), and cv2's JPEGs come out a little closer to the source (mean error 1.92 against 1.95
grey levels at 512x768), so cv2 encodes; each is the other's fallback. Neither exposes
libjpeg-turbo's partial (cropped) decode, and the refiner writes back the whole frame anyway,
so frames decode whole.
"""

from __future__ import annotations

import functools
import importlib
from typing import Any

import numpy as np

from avatarflow.contracts.errors import InvalidInput, MissingExtra

DEFAULT_QUALITY = 90


@functools.cache
def _module(name: str) -> Any:
    """An optional codec module, or None when it is not installed."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError:
        return None


def _cv2() -> Any:
    return _module("cv2")


def _simplejpeg() -> Any:
    return _module("simplejpeg")


def _missing() -> MissingExtra:
    return MissingExtra("opencv", "refine")


def encode_jpeg(rgb: np.ndarray, quality: int = DEFAULT_QUALITY) -> bytes:
    """H x W x 3 uint8 RGB -> baseline JPEG bytes, 4:2:0 chroma."""
    cv2 = _cv2()
    if cv2 is not None:
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR),
                               [cv2.IMWRITE_JPEG_QUALITY, quality])
        if not ok:  # pragma: no cover - cv2 fails only on invalid arrays
            raise InvalidInput("picture: JPEG encoding failed")
        return bytes(buf.tobytes())
    sj = _simplejpeg()
    if sj is None:
        raise _missing()
    return bytes(sj.encode_jpeg(np.ascontiguousarray(rgb), quality=quality, colorspace="RGB",
                                colorsubsampling="420"))


def decode_jpeg(data: bytes) -> np.ndarray | None:
    """JPEG bytes -> H x W x 3 uint8 RGB, or None when they do not decode."""
    sj = _simplejpeg()
    if sj is not None:
        try:
            rgb: np.ndarray = sj.decode_jpeg(data, colorspace="RGB")
        except ValueError:  # libjpeg-turbo's verdict on malformed data
            return None
        return rgb
    cv2 = _cv2()
    if cv2 is None:
        raise _missing()
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    return None if bgr is None else cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


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
            rgb = decode_jpeg(self._jpeg)
            if rgb is None or rgb.shape[:2] != (self.height, self.width):
                got = "undecodable bytes" if rgb is None else f"{rgb.shape[1]}x{rgb.shape[0]}"
                raise InvalidInput(f"picture: expected a {self.width}x{self.height} JPEG, "
                                   f"got {got}")
            self._rgb = rgb
        return self._rgb

    def jpeg(self) -> bytes:
        """The JPEG bytes, encoding the pixels once if needed."""
        if self._jpeg is None:
            assert self._rgb is not None
            self._jpeg = encode_jpeg(self._rgb, self.quality)
        return self._jpeg

    def __repr__(self) -> str:
        held = "+".join(k for k, v in (("rgb", self._rgb), ("jpeg", self._jpeg)) if v is not None)
        return f"Picture({self.width}x{self.height}, {held})"
