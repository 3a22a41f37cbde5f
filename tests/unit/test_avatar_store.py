"""Avatars by key and format, encoded for a backing store that every replica shares."""

from __future__ import annotations

import io
import json
import threading
import zipfile

import numpy as np
import pytest

from avatarflow.avatars.store import (
    Avatar,
    AvatarStore,
    avatar_key,
    decode_avatar,
    encode_avatar,
)
from avatarflow.contracts import motion as mo
from avatarflow.contracts.errors import InvalidInput, NotFound


class DictBacking:
    """What Redis is to the store in distributed mode, counting the calls."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}
        self.loads = 0

    def load(self, key: str) -> bytes | None:
        self.loads += 1
        return self.data.get(key)

    def save(self, key: str, data: bytes) -> None:
        self.data[key] = data


def make_avatar(avatar_id: str = "a", mode: str = "head", width: int = 256,
                height: int = 320) -> Avatar:
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:height, 0:width]
    canvas = np.dstack([x % 256, y % 256, (x * y) % 256]).astype(np.uint8)  # PNG: any pixels
    portrait = np.dstack([x * 255 // width, y * 255 // height, x * 0 + 128]).astype(np.uint8)
    mask = np.clip(1.5 - np.hypot(x - width / 2, y - height / 2) / 80, 0, 1).astype(np.float32)
    return Avatar(
        avatar_id=avatar_id, mode=mode, width=width, height=height, canvas=canvas,
        portrait=portrait[::2, ::2].copy(), canvas_from_portrait=np.array([[2.0, 0, 0.5],
                                                                          [0, 2.0, 0.25]]),
        face_points=rng.random((mo.K, 2), np.float32) * 200,
        face_rest=rng.random((mo.K, 2), np.float32) * 200,
        face_axes=rng.random((2, 3), np.float32), body_points=rng.random((mo.B, 2), np.float32),
        body_visible=rng.random(mo.B) > 0.5, body_scale=123.456789,
        hand_points=rng.random((2, mo.HAND_JOINTS, 2), np.float32),
        hand_visible=np.array([True, False]), person_mask=mask,
        mouth_color=np.array([90, 30, 40], np.uint8), skin_color=np.array([200, 160, 140],
                                                                             np.uint8))


def assert_same(a: Avatar, b: Avatar, portrait_tolerance: float = 2.0) -> None:
    for name in a.__dataclass_fields__:
        x, y = getattr(a, name), getattr(b, name)
        if name == "portrait":
            assert x.shape == y.shape and np.abs(x.astype(float) - y).mean() < portrait_tolerance
        elif isinstance(x, np.ndarray):
            assert x.dtype == y.dtype and np.array_equal(x, y), name
        else:
            assert x == y, name


def test_key_names_avatar_and_format() -> None:
    assert avatar_key("alice", "head", 512, 512) == "alice/head/512x512"
    assert make_avatar("bob", "upper-body", 256, 320).key == "bob/upper-body/256x320"


def test_round_trip_is_exact_but_for_the_portrait_jpeg() -> None:
    a = make_avatar()
    assert_same(a, decode_avatar(encode_avatar(a)))


def _repacked(data: bytes, **changes: np.ndarray) -> bytes:
    with np.load(io.BytesIO(data)) as npz:
        arrays = {k: npz[k] for k in npz.files}
    arrays.update(changes)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _header(**fields: object) -> np.ndarray:
    h = {"version": 1, "avatar_id": "a", "mode": "head", "width": 256, "height": 320,
         "body_scale": 1.0, **fields}
    return np.frombuffer(json.dumps(h).encode(), np.uint8)


@pytest.mark.parametrize("change, words", [
    ({"header": _header(version=2)}, "no version 1 header"),
    ({"header": _header(mode="full-body")}, "bad header"),
    ({"header": _header(width=320)}, "person_mask is float32 \\(320, 256\\)"),
    ({"face_points": np.zeros((3, 2), np.float32)}, "face_points is float32 \\(3, 2\\)"),
    ({"person_mask": np.zeros((320, 256), np.float64)}, "person_mask is float64"),
    ({"canvas_png": np.frombuffer(b"not a png", np.uint8)}, "canvas image is undecodable"),
    ({"extra": np.zeros(1)}, "unexpected arrays"),
])
def test_tampered_encodings_say_what_is_wrong(change: dict, words: str) -> None:
    data = _repacked(encode_avatar(make_avatar()), **change)
    with pytest.raises(InvalidInput, match=words):
        decode_avatar(data)


@pytest.mark.parametrize("data", [b"", b"garbage", b"PK\x03\x04" + bytes(40)])
def test_garbage_is_invalid_input(data: bytes) -> None:
    with pytest.raises(InvalidInput, match="encoded avatar"):
        decode_avatar(data)


def test_zip_bomb_is_refused_before_unpacking() -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("header.npy", bytes(65 << 20))
    with pytest.raises(InvalidInput, match="more than 64 MiB"):
        decode_avatar(buf.getvalue())


def test_store_keeps_one_analysis_per_format() -> None:
    store = AvatarStore()
    head, body = make_avatar("x", "head", 256, 320), make_avatar("x", "upper-body", 256, 320)
    store.put(head)
    store.put(body)
    assert store.get(head.key) is head and store.get(body.key) is body
    assert avatar_key("x", "head", 512, 512) not in store
    with pytest.raises(NotFound, match="x/head/512x512"):
        store.get(avatar_key("x", "head", 512, 512))


def test_store_evicts_the_least_recently_used() -> None:
    store = AvatarStore(capacity=2)
    a, b, c = (make_avatar(n) for n in "abc")
    store.put(a)
    store.put(b)
    store.get(a.key)
    store.put(c)
    assert a.key in store and c.key in store and b.key not in store


def test_backed_store_saves_on_put_and_loads_on_a_miss() -> None:
    backing = DictBacking()
    a = make_avatar()
    AvatarStore(backing=backing).put(a)
    assert set(backing.data) == {a.key}
    other = AvatarStore(backing=backing)  # another replica: nothing local yet
    assert a.key in other
    loaded = other.get(a.key)
    assert_same(a, loaded)
    loads = backing.loads
    assert other.get(a.key) is loaded and backing.loads == loads  # cached locally
    with pytest.raises(NotFound):
        other.get(avatar_key("nobody", "head", 256, 320))


def test_backed_store_refuses_an_avatar_under_the_wrong_key() -> None:
    backing = DictBacking()
    backing.data["b/head/256x320"] = encode_avatar(make_avatar("a"))
    with pytest.raises(InvalidInput, match="stored under 'b/head/256x320' is 'a/head/256x320'"):
        AvatarStore(backing=backing).get("b/head/256x320")


def test_backing_is_not_called_under_the_lock() -> None:
    """A slow load on one thread must not block hits for other avatars on another."""
    release, loading = threading.Event(), threading.Event()
    local = make_avatar("local")

    class SlowBacking(DictBacking):
        def load(self, key: str) -> bytes | None:
            loading.set()
            release.wait(5)
            return super().load(key)

    backing = SlowBacking()
    backing.data[make_avatar("far").key] = encode_avatar(make_avatar("far"))
    store = AvatarStore(backing=backing)
    store.put(local)
    t = threading.Thread(target=store.get, args=(make_avatar("far").key,))
    t.start()
    assert loading.wait(5)
    assert store.get(local.key) is local  # served while the other load is still waiting
    release.set()
    t.join(5)
    assert make_avatar("far").key in store
