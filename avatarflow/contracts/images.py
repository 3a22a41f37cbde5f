"""Decoding untrusted portrait bytes into RGB arrays, with clear errors."""

from __future__ import annotations

import io
import warnings

import numpy as np

from avatarflow.contracts.errors import InvalidInput
from avatarflow.contracts.limits import MAX_PORTRAIT_SIDE

MAX_SIDE = MAX_PORTRAIT_SIDE
MAX_PIXELS = MAX_SIDE * MAX_SIDE


def decode_image(data: bytes) -> np.ndarray:
    """Encoded image (PNG, JPEG, WebP, BMP, TIFF, ...) -> H x W x 3 uint8 RGB.

    Rejects what is not an image, images over 4096 px a side and decompression bombs, before
    decoding any pixels.
    """
    try:
        from PIL import Image
    except ModuleNotFoundError as exc:  # pragma: no cover - render extra
        from avatarflow.contracts.errors import MissingExtra

        raise MissingExtra("pillow", "render") from exc
    if not data:
        raise InvalidInput("the image is empty")
    # Pillow's own bomb check would hide the size behind a generic error; ours runs on the
    # header, before any pixel is decoded.
    Image.MAX_IMAGE_PIXELS = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img: Image.Image = Image.open(io.BytesIO(data))
            w, h = img.size
            if w > MAX_SIDE or h > MAX_SIDE:
                raise InvalidInput(
                    f"the image is {w}x{h} px; at most {MAX_SIDE} px per side is accepted")
            if getattr(img, "n_frames", 1) > 1:
                img.seek(0)
            img.load()
    except InvalidInput:
        raise
    except Exception as exc:  # PIL raises many types for corrupt data
        raise InvalidInput(f"the file is not a readable image ({type(exc).__name__})") from exc
    if img.mode not in ("RGB", "L", "RGBA", "P", "LA", "I;16", "CMYK", "YCbCr", "I", "F", "1"):
        raise InvalidInput(f"unsupported image mode {img.mode}")
    if img.mode in ("RGBA", "LA", "P"):
        img = img.convert("RGBA")
        bg = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(bg, img)
    rgb = np.asarray(img.convert("RGB"), dtype=np.uint8)
    if min(rgb.shape[:2]) < 64:
        raise InvalidInput(f"the image is {rgb.shape[1]}x{rgb.shape[0]} px; at least 64 px a side")
    return rgb
