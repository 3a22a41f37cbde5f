"""A portrait analysed once per avatar and output format, shared by the renderer and the refiner.

Produced by the renderer's analysis (mediapipe) and kept in an ``AvatarStore`` under
``avatar_key``; the refiner reads it from the same store. In distributed mode the store is
backed by Redis, so every replica finds what one analysed. Canvas coordinates are pixels of the
output frame (x right, y down).
"""

from __future__ import annotations

import io
import json
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from avatarflow.contracts import motion as mo
from avatarflow.contracts.errors import InvalidInput, MissingExtra, NotFound
from avatarflow.contracts.limits import MAX_PORTRAIT_SIDE, MAX_SIDE, MIN_SIDE
from avatarflow.contracts.output import MODES

FORMAT_VERSION = 1
MAX_ENCODED_BYTES = 64 << 20  # unpacked size of an encoded avatar: bounds what decode reads


def avatar_key(avatar_id: str, mode: str, width: int, height: int) -> str:
    """Store key: one analysis per avatar and output format."""
    return f"{avatar_id}/{mode}/{width}x{height}"


@dataclass(frozen=True, eq=False)
class Avatar:
    avatar_id: str
    mode: str  # upper-body | head
    width: int
    height: int
    canvas: np.ndarray  # H x W x 3 uint8 RGB: the portrait fitted to the output canvas
    portrait: np.ndarray  # h x w x 3 uint8 RGB: the portrait as uploaded (<= 4096 px a side)
    canvas_from_portrait: np.ndarray  # 2 x 3 float64 affine: portrait px -> canvas px
    face_points: np.ndarray  # K x 2 float32: head keypoints (motion.py order), canvas px
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

    @property
    def key(self) -> str:
        return avatar_key(self.avatar_id, self.mode, self.width, self.height)


def _raw_arrays(width: int, height: int) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Arrays stored as they are: name -> (dtype, shape)."""
    return {
        "canvas_from_portrait": ("float64", (2, 3)), "face_points": ("float32", (mo.K, 2)),
        "face_rest": ("float32", (mo.K, 2)), "face_axes": ("float32", (2, 3)),
        "body_points": ("float32", (mo.B, 2)), "body_visible": ("bool", (mo.B,)),
        "hand_points": ("float32", (2, mo.HAND_JOINTS, 2)), "hand_visible": ("bool", (2,)),
        "person_mask": ("float32", (height, width)), "mouth_color": ("uint8", (3,)),
        "skin_color": ("uint8", (3,)),
    }


def _cv2() -> Any:
    try:
        import cv2
    except ModuleNotFoundError as exc:  # pragma: no cover - depends on the installed extra
        raise MissingExtra("opencv", "refine") from exc
    return cv2


def encode_avatar(avatar: Avatar) -> bytes:
    """Avatar -> bytes: a JSON header, the canvas as PNG (lossless, so the body pass is the same
    on every replica), the portrait as JPEG (quality 95) and the other arrays raw, zipped."""
    cv2 = _cv2()
    header = {"version": FORMAT_VERSION, "avatar_id": avatar.avatar_id, "mode": avatar.mode,
              "width": int(avatar.width), "height": int(avatar.height),
              "body_scale": float(avatar.body_scale)}
    ok_canvas, canvas = cv2.imencode(".png", cv2.cvtColor(avatar.canvas, cv2.COLOR_RGB2BGR),
                                     [cv2.IMWRITE_PNG_COMPRESSION, 1])
    ok_portrait, portrait = cv2.imencode(
        ".jpg", cv2.cvtColor(avatar.portrait, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
    if not (ok_canvas and ok_portrait):  # pragma: no cover - cv2 fails only on invalid arrays
        raise InvalidInput(f"avatar {avatar.key!r}: image encoding failed")
    buf = io.BytesIO()
    np.savez_compressed(buf, header=np.frombuffer(json.dumps(header).encode(), np.uint8),
                        canvas_png=canvas.reshape(-1), portrait_jpeg=portrait.reshape(-1),
                        **{name: getattr(avatar, name)
                           for name in _raw_arrays(avatar.width, avatar.height)})
    return buf.getvalue()


def decode_avatar(data: bytes) -> Avatar:
    """Bytes from ``encode_avatar`` -> Avatar. Raises InvalidInput when they are not that."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            if sum(i.file_size for i in npz.zip.infolist()) > MAX_ENCODED_BYTES:
                raise InvalidInput("encoded avatar: unpacks to more than "
                                   f"{MAX_ENCODED_BYTES >> 20} MiB")
            arrays = {name: npz[name] for name in npz.files}
    except InvalidInput:
        raise
    except Exception as exc:  # zipfile, numpy and OS errors alike: the bytes are not ours
        raise InvalidInput(f"encoded avatar is unreadable: {type(exc).__name__}: {exc}") from exc
    h = _header(arrays.pop("header", None))
    width, height = h["width"], h["height"]
    expected = _raw_arrays(width, height)
    if set(arrays) != {*expected, "canvas_png", "portrait_jpeg"}:
        raise InvalidInput(f"encoded avatar: unexpected arrays {sorted(arrays)}")
    for name, (dtype, shape) in expected.items():
        a = arrays[name]
        if a.dtype != np.dtype(dtype) or a.shape != shape:
            raise InvalidInput(f"encoded avatar: {name} is {a.dtype} {a.shape}, "
                               f"expected {dtype} {shape}")
    canvas = _image(arrays.pop("canvas_png"), "canvas")
    portrait = _image(arrays.pop("portrait_jpeg"), "portrait")
    if canvas.shape != (height, width, 3):
        raise InvalidInput(f"encoded avatar: canvas is {canvas.shape[1]}x{canvas.shape[0]}, "
                           f"expected {width}x{height}")
    if max(portrait.shape[:2]) > MAX_PORTRAIT_SIDE:
        raise InvalidInput(f"encoded avatar: portrait over {MAX_PORTRAIT_SIDE} px a side")
    return Avatar(avatar_id=h["avatar_id"], mode=h["mode"], width=width, height=height,
                  canvas=canvas, portrait=portrait, body_scale=h["body_scale"], **arrays)


def _header(raw: np.ndarray | None) -> dict[str, Any]:
    try:
        h = json.loads(raw.tobytes()) if raw is not None and raw.dtype == np.uint8 else None
    except ValueError:
        h = None
    if not isinstance(h, dict) or h.get("version") != FORMAT_VERSION:
        version = h.get("version") if isinstance(h, dict) else None
        raise InvalidInput(f"encoded avatar: no version {FORMAT_VERSION} header"
                           + (f" (version {version!r})" if version is not None else ""))
    ok = (isinstance(h.get("avatar_id"), str) and h.get("mode") in MODES
          and all(isinstance(h.get(k), int) and MIN_SIDE <= h[k] <= MAX_SIDE
                  for k in ("width", "height"))
          and isinstance(h.get("body_scale"), float))
    if not ok:
        raise InvalidInput(f"encoded avatar: bad header {h}")
    return h


def _image(encoded: np.ndarray, what: str) -> np.ndarray:
    cv2 = _cv2()
    bgr = cv2.imdecode(encoded, cv2.IMREAD_COLOR) if encoded.dtype == np.uint8 else None
    if bgr is None:
        raise InvalidInput(f"encoded avatar: the {what} image is undecodable")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


class AvatarBacking(Protocol):
    """Where avatars outlive one process (Redis in distributed mode): encoded bytes by key."""

    def load(self, key: str) -> bytes | None: ...

    def save(self, key: str, data: bytes) -> None: ...


class AvatarStore:
    """Analysed avatars by ``avatar_key``, least recently used evicted beyond ``capacity``.

    With a ``backing``, ``put`` also saves the avatar there and a key missing here is loaded
    from there, so a replica continues sessions whose avatar another one analysed. Safe to use
    from several threads; the lock is never held while the backing works.
    """

    def __init__(self, capacity: int = 64, backing: AvatarBacking | None = None) -> None:
        self.capacity = capacity
        self.backing = backing
        self._items: OrderedDict[str, Avatar] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, avatar: Avatar) -> None:
        if self.backing is not None:
            self.backing.save(avatar.key, encode_avatar(avatar))
        with self._lock:
            self._items[avatar.key] = avatar
            self._keep(avatar.key)

    def get(self, key: str) -> Avatar:
        with self._lock:
            avatar = self._items.get(key)
            if avatar is not None:
                self._items.move_to_end(key)
                return avatar
        data = None if self.backing is None else self.backing.load(key)
        if data is None:
            raise NotFound(f"no analysed avatar {key!r}")
        avatar = decode_avatar(data)
        if avatar.key != key:
            raise InvalidInput(f"the avatar stored under {key!r} is {avatar.key!r}")
        with self._lock:  # a put while we loaded is a newer analysis: it wins
            avatar = self._items.setdefault(key, avatar)
            self._keep(key)
        return avatar

    def __contains__(self, key: str) -> bool:
        with self._lock:
            if key in self._items:
                return True
        return self.backing is not None and self.backing.load(key) is not None

    def _keep(self, key: str) -> None:
        self._items.move_to_end(key)
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)
