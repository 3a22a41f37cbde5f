"""OpenCV for the portrait geometry shared by the renderer and the refiner, imported behind a
guard: the gateway image imports ``avatarflow.avatars`` (store, registry) without it."""

from __future__ import annotations

from avatarflow.contracts.errors import MissingExtra

try:
    import cv2
except ModuleNotFoundError as exc:  # pragma: no cover - depends on the installed extra
    raise MissingExtra("opencv", "render") from exc

__all__ = ["cv2"]
