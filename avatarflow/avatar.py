"""A portrait analysed once per avatar, shared by the renderer and the refiner.

Produced by the renderer's analysis (mediapipe) and kept in an ``AvatarStore`` under the avatar
id; the refiner reads it from the same store. Canvas coordinates are pixels of the output
frame (x right, y down).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np

from avatarflow.errors import NotFound


@dataclass(frozen=True, eq=False)
class Avatar:
    avatar_id: str
    mode: str  # upper-body | head
    width: int
    height: int
    canvas: np.ndarray  # H x W x 3 uint8 RGB: the portrait fitted to the output canvas
    portrait: np.ndarray  # h x w x 3 uint8 RGB: the portrait as uploaded (<= 4096 px a side)
    canvas_from_portrait: np.ndarray  # 2 x 3 float64 affine: portrait px -> canvas px
    face_points: np.ndarray  # K x 2 float32: head keypoints (avatarflow.motion order), canvas px
    face_rest: np.ndarray  # K x 2 float32: face_points with the mouth closed (the rest pose)
    face_axes: np.ndarray  # 2 x 3 float32: head template units -> canvas px (linear part)
    body_points: np.ndarray  # B x 2 float32: upper-body keypoints, canvas px
    body_visible: np.ndarray  # B bool: keypoint found and inside the canvas
    body_scale: float  # canvas px per body unit (shoulder width)
    hand_points: np.ndarray  # 2 x 21 x 2 float32 (left, right), canvas px
    hand_visible: np.ndarray  # 2 bool
    person_mask: np.ndarray  # H x W float32 in 0..1, 1 on the person
    mouth_color: np.ndarray  # 3 uint8 RGB: dark interior tone sampled from the lips
    skin_color: np.ndarray  # 3 uint8 RGB: eyelid tone sampled above the eyes


class AvatarStore:
    """Analysed avatars by id, least recently used evicted beyond ``capacity``."""

    def __init__(self, capacity: int = 64) -> None:
        self.capacity = capacity
        self._items: OrderedDict[str, Avatar] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, avatar: Avatar) -> None:
        with self._lock:
            self._items[avatar.avatar_id] = avatar
            self._items.move_to_end(avatar.avatar_id)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)

    def get(self, avatar_id: str) -> Avatar:
        with self._lock:
            try:
                self._items.move_to_end(avatar_id)
                return self._items[avatar_id]
            except KeyError:
                raise NotFound(f"unknown avatar id {avatar_id!r}") from None

    def __contains__(self, avatar_id: str) -> bool:
        with self._lock:
            return avatar_id in self._items
