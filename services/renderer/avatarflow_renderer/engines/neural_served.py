"""The renderer's generator part as the Triton model serves it
(deploy/triton/model_repository/renderer): the wire protocol, which the engine's client
(``neural_triton``) shares, and the per-avatar appearance cache.

A request of B items carries, per item:

- ``AVATAR`` (1 BYTES, optional): the avatar's key. The client derives it from the source
  image's content, so one key names one image and its appearance volume.
- ``SOURCE`` (3 x H x W float32 in [0, 1], optional): the source image, resized to the
  network's source size. Needed for an item whose key this instance has not cached, and for
  every item of a request without AVATAR.
- ``KP_SOURCE`` / ``KP_DRIVING`` (K x 3 float32) and ``HAND`` (3 x H' x W', upperbody only,
  optional).

Output ``RENDERED``: 3 x H_out x W_out float32 in [0, 1].

With AVATAR, the appearance volume (the appearance extractor, the heavy part computed once
per avatar) is encoded from SOURCE only for keys not yet cached, and kept in a least recently
used cache of ``avatar_cache`` volumes, on the instance's device. A request naming a key this
instance has not cached without sending SOURCE fails alone (INVALID_ARG, its message holds
``UNKNOWN_AVATAR``): after an eviction, a restart or on another instance the client resends
it with SOURCE. Without AVATAR a request is rendered from its SOURCE alone, as
``RendererNetwork.forward_batch`` does (nothing is cached).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import numpy as np
import torch

from avatarflow.contracts.errors import InvalidInput
from avatarflow.triton.backend import TensorSpec
from avatarflow_renderer.engines.neural_net import RendererNetwork

AVATAR, SOURCE, KP_SOURCE, KP_DRIVING, HAND = ("AVATAR", "SOURCE", "KP_SOURCE", "KP_DRIVING",
                                               "HAND")
OUTPUT = "RENDERED"
UNKNOWN_AVATAR = "not cached on this server"  # in the error a key unknown to the server gets
MAX_KEY_BYTES = 256
DEFAULT_CACHE = 64  # volumes; liveportrait's is 8 MiB (32 x 16 x 64 x 64 float32)


def specs(num_kp: int) -> list[TensorSpec]:
    """The renderer model's inputs, in its config.pbtxt order."""
    return [TensorSpec(SOURCE, (3, "H", "W"), optional=True),
            TensorSpec(KP_SOURCE, (num_kp, 3)), TensorSpec(KP_DRIVING, (num_kp, 3)),
            TensorSpec(HAND, (3, "H_hand", "W_hand"), optional=True),
            TensorSpec(AVATAR, (1,), optional=True, dtype="bytes")]


def _shown(key: bytes) -> str:
    return repr(key.decode("utf-8", errors="replace"))


class AppearanceCache:
    """Appearance volumes (1 x ... tensors) by avatar key, the least recently used evicted
    beyond ``capacity``."""

    def __init__(self, capacity: int = DEFAULT_CACHE) -> None:
        if capacity < 1:
            raise InvalidInput(f"avatar_cache must be at least 1, got {capacity}")
        self.capacity = capacity
        self._volumes: OrderedDict[bytes, torch.Tensor] = OrderedDict()

    def get(self, key: bytes) -> torch.Tensor | None:
        volume = self._volumes.get(key)
        if volume is not None:
            self._volumes.move_to_end(key)
        return volume

    def put(self, key: bytes, volume: torch.Tensor) -> None:
        self._volumes[key] = volume
        self._volumes.move_to_end(key)
        while len(self._volumes) > self.capacity:
            self._volumes.popitem(last=False)

    def __len__(self) -> int:
        return len(self._volumes)


class ServedRenderer:
    """What the Triton model runs on a renderer network: ``prepare`` turns one request into
    the forward's arguments (a request with AVATAR into cached appearance volumes, encoding
    the sources it has to), ``forward`` renders a batch of prepared requests in one pass."""

    def __init__(self, net: RendererNetwork, cache: int = DEFAULT_CACHE) -> None:
        self.net = net
        self.cache = AppearanceCache(cache)
        self.specs = specs(net.num_kp)

    def prepare(self, arrays: dict[str, np.ndarray | None]) -> list[Any]:
        """[source, features, kp_source, kp_driving, hand]: source without AVATAR (encoded
        with the batch, as ``forward_batch`` does), otherwise the avatars' volumes."""
        keys, source = arrays[AVATAR], arrays[SOURCE]
        kp = [arrays[KP_SOURCE], arrays[KP_DRIVING], arrays[HAND]]
        if keys is not None:
            return [None, self._features([bytes(k) for k in keys[:, 0]], source), *kp]
        if source is None:
            raise InvalidInput(f"{SOURCE} is missing: send it, or {AVATAR} keys with it once")
        return [source, None, *kp]

    def _features(self, keys: list[bytes], source: np.ndarray | None) -> torch.Tensor:
        for key in keys:
            if not key or len(key) > MAX_KEY_BYTES:
                raise InvalidInput(f"{AVATAR} keys must have 1 to {MAX_KEY_BYTES} bytes, got "
                                   f"{len(key)}")
        found: dict[bytes, torch.Tensor] = {}
        missing: list[bytes] = []
        for key in dict.fromkeys(keys):
            volume = self.cache.get(key)
            if volume is None:
                missing.append(key)
            else:
                found[key] = volume
        if missing:
            if source is None:
                raise InvalidInput(f"{AVATAR} {', '.join(map(_shown, missing))} "
                                   f"{UNKNOWN_AVATAR} (evicted, restarted or another "
                                   f"instance): send the request again with {SOURCE}")
            rows = [keys.index(key) for key in missing]
            volumes = self.net.features(torch.from_numpy(source[rows]))
            for key, volume in zip(missing, volumes, strict=True):
                found[key] = volume[None].clone()  # its own storage: evicted alone
                self.cache.put(key, found[key])
        return torch.cat([found[key] for key in keys])

    def forward(self, source: np.ndarray | None, features: torch.Tensor | None,
                kp_source: np.ndarray, kp_driving: np.ndarray,
                hand: np.ndarray | None) -> np.ndarray:
        t = torch.from_numpy
        if source is not None:
            features = self.net.features(t(source))
        if features is None:
            raise InvalidInput(f"{SOURCE} is missing: send it, or {AVATAR} keys with it once")
        out = self.net.decode(features, t(kp_source), t(kp_driving),
                              None if hand is None else t(hand))
        return out.cpu().numpy()
