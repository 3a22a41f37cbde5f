"""Triton python-backend model: the neural renderer's generator part, one batched forward
per execution, with each avatar's appearance volume cached on the instance.

Inputs per request (B items): AVATAR B x 1 BYTES (optional: avatar keys), SOURCE
B x 3 x H x W (optional: needed for keys the instance has not cached, or without AVATAR),
KP_SOURCE / KP_DRIVING B x K x 3 and the optional HAND B x 3 x H' x W' (arch upperbody),
float32 (K = num_kp of the loaded weights; sources of any size are resized to the
network's). Output: RENDERED B x 3 x H_out x W_out float32 in [0, 1]. The protocol and the
cache: avatarflow_renderer.engines.neural_served.
"""

from __future__ import annotations

import json
from typing import Any

import triton_python_backend_utils as pb_utils

from avatarflow.contracts.errors import InvalidInput
from avatarflow.triton.backend import BatchedModel, model_device, model_parameters, weights_dir
from avatarflow_renderer.engines.neural import RendererNetwork
from avatarflow_renderer.engines.neural_served import DEFAULT_CACHE, OUTPUT, ServedRenderer


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        """Loads the weights and arch named by the config's parameters onto this instance's
        device; ``avatar_cache`` bounds the appearance volumes it keeps."""
        config = json.loads(args["model_config"])
        params = model_parameters(config)
        device, dtype = model_device(args, params)
        raw_cache = params.get("avatar_cache") or str(DEFAULT_CACHE)
        if not raw_cache.isdigit():
            raise InvalidInput(f"avatar_cache must be a number of avatars, got {raw_cache!r}")
        net = RendererNetwork.load(weights_dir(args, params), params.get("arch", "liveportrait"),
                                   device, dtype)
        self.served = ServedRenderer(net, int(raw_cache))
        self.model = BatchedModel(pb_utils, self.served.specs, OUTPUT, self.served.forward,
                                  self.served.prepare)

    def execute(self, requests: list[Any]) -> list[Any]:
        return self.model.execute(requests)

    def finalize(self) -> None:
        self.served = None
