"""A contact sheet: evenly spaced frames of a video in one PNG, for a quick look."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def contact_sheet(frames: list[np.ndarray], path: Path, columns: int = 6,
                  thumb_width: int = 192) -> None:
    from PIL import Image

    if not frames:
        return
    h, w = frames[0].shape[:2]
    tw, th = thumb_width, int(round(thumb_width * h / w))
    rows = (len(frames) + columns - 1) // columns
    sheet = Image.new("RGB", (columns * tw, rows * th), (32, 32, 32))
    for i, frame in enumerate(frames):
        thumb = Image.fromarray(frame).resize((tw, th), Image.Resampling.BILINEAR)
        sheet.paste(thumb, ((i % columns) * tw, (i // columns) * th))
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
