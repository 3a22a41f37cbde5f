"""Triton python-backend model: the neural renderer, one batched forward per execution.

Inputs per request (B items): SOURCE B x 3 x H x W, KP_SOURCE / KP_DRIVING B x K x 3 and the
optional HAND B x 3 x H' x W' (arch upperbody), float32 (K = num_kp of the loaded weights;
sources of any size are resized to the network's). Output: RENDERED B x 3 x H_out x W_out
float32 in [0, 1]. See avatarflow_renderer.engines.neural.RendererNetwork.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import torch
import triton_python_backend_utils as pb_utils

from avatarflow.triton_server import (
    BatchedModel,
    TensorSpec,
    model_device,
    model_parameters,
    weights_dir,
)
from avatarflow_renderer.engines.neural import RendererNetwork


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        """Loads the weights and arch named by the config's parameters onto this instance's
        device."""
        config = json.loads(args["model_config"])
        params = model_parameters(config)
        device, dtype = model_device(args, params)
        self.net = RendererNetwork.load(weights_dir(args, params),
                                        params.get("arch", "liveportrait"), device, dtype)
        k = self.net.num_kp
        specs = [TensorSpec("SOURCE", (3, "H", "W")), TensorSpec("KP_SOURCE", (k, 3)),
                 TensorSpec("KP_DRIVING", (k, 3)),
                 TensorSpec("HAND", (3, "H_hand", "W_hand"), optional=True)]
        self.model = BatchedModel(pb_utils, specs, "RENDERED", self._forward)

    def _forward(self, source: np.ndarray, kp_source: np.ndarray, kp_driving: np.ndarray,
                 hand: np.ndarray | None) -> np.ndarray:
        t = torch.from_numpy
        out = self.net.forward_batch(t(source), t(kp_source), t(kp_driving),
                                     None if hand is None else t(hand))
        return out.cpu().numpy()

    def execute(self, requests: list[Any]) -> list[Any]:
        return self.model.execute(requests)

    def finalize(self) -> None:
        self.net = None
