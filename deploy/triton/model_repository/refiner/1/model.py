"""Triton python-backend model: the face refine network, one batched forward per execution.

Inputs per request (B items): SOURCE B x 3 x S x S, KP_SOURCE / KP_DRIVING B x K x 3,
CONTEXT B x 3 x S x S, float32 (S = image_size, K = num_kp of the loaded weights). Output:
REFINED B x 3 x O x O float32 in [0, 1]. See avatarflow_refiner.engines.neural.RefinerNetwork.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import torch
import triton_python_backend_utils as pb_utils

from avatarflow.triton.backend import (
    BatchedModel,
    TensorSpec,
    model_device,
    model_parameters,
    weights_dir,
)
from avatarflow_refiner.engines.neural import RefinerNetwork


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        """Loads the weights named by the config's parameters onto this instance's device."""
        config = json.loads(args["model_config"])
        params = model_parameters(config)
        device, dtype = model_device(args, params)
        self.net = RefinerNetwork.load(weights_dir(args, params), device, dtype)
        c = self.net.config
        s, k = c.image_size, c.num_kp
        specs = [TensorSpec("SOURCE", (3, s, s)), TensorSpec("KP_SOURCE", (k, 3)),
                 TensorSpec("KP_DRIVING", (k, 3)), TensorSpec("CONTEXT", (3, s, s))]
        self.model = BatchedModel(pb_utils, specs, "REFINED", self._forward)

    def _forward(self, source: np.ndarray, kp_source: np.ndarray, kp_driving: np.ndarray,
                 context: np.ndarray) -> np.ndarray:
        t = torch.from_numpy
        out = self.net.forward_batch(t(source), t(kp_source), t(kp_driving), t(context))
        return out.cpu().numpy()

    def execute(self, requests: list[Any]) -> list[Any]:
        return self.model.execute(requests)

    def finalize(self) -> None:
        self.net = None
