"""The renderer's generator part on Triton, from the engine's side (the protocol:
``neural_served``).

Each avatar gets a key derived from its source image's content. A batch (frames of any
sessions) is ONE request carrying the items' keys and keypoints; the source images go with
it only while an avatar of the batch has not been sent by this client yet, or once more
when the server answers that it has not cached a key (evicted, restarted, another
instance): then the same request is sent again with SOURCE. Per frame, no source image
travels.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from avatarflow.contracts.errors import InvalidInput
from avatarflow.triton.client import TritonNetwork
from avatarflow_renderer.engines.neural_served import (
    AVATAR,
    HAND,
    KP_DRIVING,
    KP_SOURCE,
    SOURCE,
    UNKNOWN_AVATAR,
)


@dataclass(eq=False)
class RemoteAppearance:
    """An avatar as the Triton model knows it."""

    key: bytes  # content key of ``image``
    image: torch.Tensor  # 1 x 3 x h x w float32 in [0, 1] at the network's source size (CPU)
    sent: bool = False  # whether this client has sent ``image`` to the server


class TritonGenerator:
    """Renders batches with the renderer model ``model`` of the Triton server at ``url``.

    ``sources_sent`` counts the source images uploaded, ``resends`` the requests repeated
    with them because the server had not cached an avatar.
    """

    def __init__(self, url: str, model: str = "renderer", timeout_s: float = 10.0) -> None:
        self.client = TritonNetwork(url, model, timeout_s=timeout_s)
        self.sources_sent = 0
        self.resends = 0

    @staticmethod
    def encode(image: torch.Tensor) -> RemoteAppearance:
        """The avatar of ``image`` (1 x 3 x h x w): its key, nothing sent yet."""
        pixels = np.ascontiguousarray(image.detach().cpu().numpy(), np.float32)
        digest = hashlib.blake2b(pixels.tobytes(), digest_size=16).hexdigest()
        return RemoteAppearance(digest.encode(), torch.from_numpy(pixels))

    def _request(self, items: Sequence[RemoteAppearance], kp_source: torch.Tensor,
                 kp_driving: torch.Tensor, hand: torch.Tensor | None,
                 with_source: bool) -> dict[str, Any]:
        keys = np.empty((len(items), 1), dtype=object)
        keys[:, 0] = [a.key for a in items]
        source = None
        if with_source:
            source = torch.cat([a.image for a in items])
            self.sources_sent += len(items)
        return {AVATAR: keys, SOURCE: source, KP_SOURCE: kp_source, KP_DRIVING: kp_driving,
                HAND: hand}

    def _again(self, error: InvalidInput, request: dict[str, Any],
               items: Sequence[RemoteAppearance]) -> dict[str, Any]:
        """The request to repeat after ``error``: with the sources when the server had lost
        an avatar and they were not in it; otherwise ``error`` is the caller's."""
        if request[SOURCE] is not None or UNKNOWN_AVATAR not in error.message:
            raise error
        self.resends += 1
        return self._request(items, request[KP_SOURCE], request[KP_DRIVING], request[HAND],
                             True)

    @staticmethod
    def _done(items: Sequence[RemoteAppearance], out: np.ndarray) -> torch.Tensor:
        for a in items:
            a.sent = True
        return torch.from_numpy(out.copy())  # the reply's buffer is read-only

    def render(self, items: Sequence[RemoteAppearance], kp_source: torch.Tensor,
               kp_driving: torch.Tensor, hand: torch.Tensor | None = None) -> torch.Tensor:
        """Frames (B x 3 x H_out x W_out float32 in [0, 1], CPU) for one avatar per item and
        keypoints (B x K x 3), in one request (two when the server had lost an avatar)."""
        request = self._request(items, kp_source, kp_driving, hand,
                                not all(a.sent for a in items))
        try:
            out = self.client.infer(request)
        except InvalidInput as exc:
            out = self.client.infer(self._again(exc, request, items))
        return self._done(items, out)

    async def render_async(self, items: Sequence[RemoteAppearance], kp_source: torch.Tensor,
                           kp_driving: torch.Tensor, hand: torch.Tensor | None = None
                           ) -> torch.Tensor:
        """``render`` for asyncio code: concurrent calls are concurrent requests."""
        request = self._request(items, kp_source, kp_driving, hand,
                                not all(a.sent for a in items))
        try:
            out = await self.client.infer_async(request)
        except InvalidInput as exc:
            out = await self.client.infer_async(self._again(exc, request, items))
        return self._done(items, out)

    def close(self) -> None:
        self.client.close()

    async def aclose(self) -> None:
        await self.client.aclose()
