"""The JPEG codec of the pixel hops: cv2 encodes and simplejpeg decodes (each the other's
fallback). Either reads the other's bytes to the same pixels, and bad bytes are named."""

from __future__ import annotations

import numpy as np
import pytest

from avatarflow.contracts import picture
from avatarflow.contracts.errors import InvalidInput, MissingExtra
from avatarflow.contracts.picture import Picture


def _image(h: int = 96, w: int = 64) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    return np.dstack([x * 255 // w, y * 255 // h, (x + y) * 2]).astype(np.uint8)


def _only(monkeypatch: pytest.MonkeyPatch, *names: str) -> None:
    """The codec as it runs where only the named modules are installed."""
    real = picture._module
    monkeypatch.setattr(picture, "_module", lambda name: real(name) if name in names else None)


def test_both_codecs_are_installed_with_the_picture_extras() -> None:
    assert picture._cv2() is not None and picture._simplejpeg() is not None


def test_either_codec_reads_the_others_bytes_to_the_same_pixels(monkeypatch) -> None:
    img = _image()
    by_cv2 = picture.encode_jpeg(img)
    with monkeypatch.context() as mp:
        _only(mp, "simplejpeg")
        by_simplejpeg = picture.encode_jpeg(img)
        read_by_simplejpeg = [picture.decode_jpeg(b) for b in (by_cv2, by_simplejpeg)]
    with monkeypatch.context() as mp:
        _only(mp, "cv2")
        read_by_cv2 = [picture.decode_jpeg(b) for b in (by_cv2, by_simplejpeg)]
    for a, b in zip(read_by_simplejpeg, read_by_cv2, strict=True):
        assert a is not None and b is not None and np.array_equal(a, b)
        assert a.shape == img.shape and np.abs(a.astype(int) - img).mean() < 3.0


@pytest.mark.parametrize("installed", [("cv2", "simplejpeg"), ("cv2",), ("simplejpeg",)])
def test_a_picture_round_trips_and_bad_bytes_are_named(installed: tuple[str, ...],
                                                        monkeypatch) -> None:
    _only(monkeypatch, *installed)
    img = _image()
    sent = Picture(np.asfortranarray(img))  # any memory layout encodes
    got = Picture(jpeg=sent.jpeg(), width=64, height=96).rgb()
    assert got.shape == (96, 64, 3) and np.abs(got.astype(int) - img).mean() < 3.0
    with pytest.raises(InvalidInput, match="expected a 64x96 JPEG, got undecodable bytes"):
        Picture(jpeg=b"not a jpeg", width=64, height=96).rgb()
    with pytest.raises(InvalidInput, match="expected a 32x96 JPEG, got 64x96"):
        Picture(jpeg=sent.jpeg(), width=32, height=96).rgb()


def test_without_any_codec_the_extra_to_install_is_named(monkeypatch) -> None:
    _only(monkeypatch)
    with pytest.raises(MissingExtra, match=r"avatarflow\[refine\]"):
        Picture(_image()).jpeg()
