"""The "neural" refiner: ChatAnyone's face refine network re-renders the head crop.

Per avatar, a square head box around the face (the blend refiner's pasted ellipse with its
feathered edge, padded for head motion) is cut from the canvas as the source crop, with the
source keypoints where the analysis found them. Per frame the posed head keypoints are mapped
into the same crop; the body frame's crop with the face masked out is the AdaIN input, so the
re-rendered face takes the body pass's light and colour; the refined crop is pasted back under
a feathered ellipse (the blend refiner's geometry). Sessions are refined together in one
batched forward (``refine_batch``).

``RefinerNetwork`` is the network without the geometry, on torch tensors: the Triton model
(deploy/triton/model_repository/refiner) serves exactly it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np
import yaml

from avatarflow.avatars.plans import PlanCache
from avatarflow.avatars.store import Avatar
from avatarflow.contracts import motion as mo
from avatarflow.contracts.errors import InvalidInput, MissingExtra
from avatarflow.contracts.messages import MotionFrame
from avatarflow.runtime import devices
from avatarflow_refiner.engines.blend import ELLIPSE, FEATHER

try:
    import torch
except ModuleNotFoundError as exc:  # pragma: no cover - depends on the installed extra
    raise MissingExtra("torch", "neural") from exc

from avatarflow_refiner.models import FaceRefineNet, RefinerConfig  # noqa: E402 - needs torch

CONFIG_FILE, WEIGHTS_FILE = "config.yaml", "model.pt"
PAD = 0.05  # share of the box added on every side: room for head motion


def read_config(weights_dir: str | Path) -> RefinerConfig:
    """The network's hyper-parameters from ``config.yaml`` in a weights directory."""
    path = Path(weights_dir) / CONFIG_FILE
    try:
        return RefinerConfig.from_dict(yaml.safe_load(path.read_text()))
    except (ValueError, TypeError, OSError, yaml.YAMLError) as exc:
        raise InvalidInput(f"refiner config {str(path)!r} does not load: {exc}") from exc


class FaceNetwork(Protocol):
    """The network's forward, here (``RefinerNetwork``) or on Triton (``TritonNetwork``)."""

    def forward_batch(self, source: torch.Tensor, kp_source: torch.Tensor,
                      kp_driving: torch.Tensor, context: torch.Tensor) -> torch.Tensor: ...

    def close(self) -> None: ...


class RefinerNetwork:
    """The face refine network on a device and in a precision, inference only."""

    def __init__(self, model: FaceRefineNet, device: str = "cpu",
                 dtype: str = "float32") -> None:
        self.device, self.dtype = devices.resolve(device, dtype)
        self.model = model.to(self.device, self.dtype).eval()
        self.config: RefinerConfig = model.cfg

    @classmethod
    def create(cls, config: RefinerConfig, seed: int = 0, **kw: Any) -> RefinerNetwork:
        """Freshly initialised weights (tests, benchmarks, the start of training)."""
        with torch.random.fork_rng(devices=[]):  # leaves the caller's random state alone
            torch.manual_seed(seed)
            model = FaceRefineNet(config)
        return cls(model, **kw)

    @classmethod
    def load(cls, weights_dir: str | Path, device: str = "cpu",
             dtype: str = "float32") -> RefinerNetwork:
        """Loads ``config.yaml`` + ``model.pt`` from a local directory, strictly (every
        parameter present, nothing extra). Never downloads."""
        d = Path(weights_dir)
        missing = [n for n in (CONFIG_FILE, WEIGHTS_FILE) if not (d / n).is_file()]
        if missing:
            raise InvalidInput(f"refiner weights {str(d)!r}: missing {', '.join(missing)} "
                               f"(expected a directory with {CONFIG_FILE} and {WEIGHTS_FILE})")
        config = read_config(d)
        try:
            state = torch.load(d / WEIGHTS_FILE, map_location="cpu", weights_only=True)
            model = FaceRefineNet(config)
            model.load_state_dict(state, strict=True)
        except (ValueError, TypeError, RuntimeError, OSError, yaml.YAMLError) as exc:
            raise InvalidInput(f"refiner weights {str(d)!r} do not load: {exc}") from exc
        return cls(model, device, dtype)

    def save(self, weights_dir: str | Path) -> Path:
        """Writes ``config.yaml`` + ``model.pt`` (float32, CPU) that ``load`` reads back."""
        d = Path(weights_dir)
        d.mkdir(parents=True, exist_ok=True)
        (d / CONFIG_FILE).write_text(yaml.safe_dump(self.config.to_dict(), sort_keys=False))
        state = {k: v.detach().to("cpu", torch.float32) if v.is_floating_point() else v.cpu()
                 for k, v in self.model.state_dict().items()}
        torch.save(state, d / WEIGHTS_FILE)
        return d

    def check(self, source: tuple[int, ...], kp_source: tuple[int, ...],
              kp_driving: tuple[int, ...], context: tuple[int, ...]) -> str | None:
        """What is wrong with inputs of these shapes (None: nothing)."""
        c = self.config
        s, k = c.image_size, c.num_kp
        want = {"source": ((3, s, s), source), "kp_source": ((k, 3), kp_source),
                "kp_driving": ((k, 3), kp_driving), "context": ((3, s, s), context)}
        bad = [f"{name} is {list(got)}, expected [B, {', '.join(map(str, shape))}]"
               for name, (shape, got) in want.items() if tuple(got[1:]) != shape]
        sizes = {got[0] for _, got in want.values() if got}
        if len(sizes) > 1:
            bad.append(f"batch sizes differ: {sorted(sizes)}")
        return "; ".join(bad) or None

    def forward_batch(self, source: torch.Tensor, kp_source: torch.Tensor,
                      kp_driving: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """One batched forward pass.

        source: B x 3 x S x S float in [0, 1], the avatar's face crop (S = image_size);
        kp_source, kp_driving: B x K x 3 float, keypoints in normalised crop coordinates;
        context: B x 3 x S x S float in [0, 1], the body frame's crop with the face masked out.
        Returns B x 3 x O x O float32 in [0, 1] (O = out_size) on the network's device.
        """
        problem = self.check(*(tuple(t.shape) for t in (source, kp_source, kp_driving,
                                                         context)))
        if problem:
            raise InvalidInput(f"refiner network inputs: {problem}")
        args = [t.to(self.device, self.dtype, non_blocking=True)
                for t in (source, kp_source, kp_driving, context)]
        with torch.inference_mode():
            return self.model(*args).float()

    def close(self) -> None:
        """Holds no connection: the weights go with the object."""


class HeadCrop:
    """One avatar's head box, its crops and paste mask: the session-constant geometry.

    The box is an axis-aligned square of ``side`` canvas px at ``(x0, y0)`` (it may reach
    past the canvas; crops replicate the border there). ``size`` is the network's input side.
    """

    def __init__(self, avatar: Avatar, size: int) -> None:
        self.avatar, self.size = avatar, size
        axes = avatar.face_axes.astype(np.float64)  # template units -> canvas px
        self.axes = axes
        self.origin = (avatar.face_rest - mo.HEAD_TEMPLATE @ axes.T).mean(0)
        self.iod = float(np.hypot(*axes[:, 0]))
        # The pasted ellipse, grown by its feathered edge and the zeroed border (3 sigma each).
        (ex, ey), (rx, ry) = ELLIPSE
        grow = 6 * FEATHER
        xs, ys = (ex - rx - grow, ex + rx + grow), (ey - ry - grow, ey + ry + grow)
        corners = np.array([[x, y, 0.0] for x in xs for y in ys]) @ axes.T
        lo, hi = corners.min(0) + self.origin, corners.max(0) + self.origin
        self.side = side = int(np.ceil((hi - lo).max() * (1 + 2 * PAD)))
        cx, cy = (lo + hi) / 2
        self.x0, self.y0 = int(np.floor(cx - side / 2)), int(np.floor(cy - side / 2))
        # The part of the box inside the canvas: (x0, y0, x1, y1) in canvas px.
        self.inside = (max(self.x0, 0), max(self.y0, 0), min(self.x0 + side, avatar.width),
                       min(self.y0 + side, avatar.height))
        if self.inside[0] >= self.inside[2] or self.inside[1] >= self.inside[3]:
            raise InvalidInput(f"avatar {avatar.key!r}: the head box lies outside the canvas")
        self.mask = self._mask()  # side x side float32, 1 on the face, 0 at the box edge
        keep = 1.0 - cv2.resize(self.mask, (size, size), interpolation=cv2.INTER_AREA)
        self.keep = np.ascontiguousarray(keep[None], np.float32)  # 1 x S x S
        self.source = self.crop(avatar.canvas)  # 3 x S x S float32 in [0, 1]
        self.kp_source = self.normalise(avatar.face_points, mo.HEAD_TEMPLATE[:, 2])
        rows, cols = np.nonzero(self.mask > 0)
        x0, y0, x1, y1 = self.inside
        # The pasted region: the mask's support inside the canvas, canvas px.
        self.paste_box = (max(x0, self.x0 + int(cols.min())), max(y0, self.y0 + int(rows.min())),
                          min(x1, self.x0 + int(cols.max()) + 1),
                          min(y1, self.y0 + int(rows.max()) + 1))
        px0, py0, px1, py1 = self.paste_box
        self.paste_mask = np.ascontiguousarray(
            self.mask[py0 - self.y0: py1 - self.y0, px0 - self.x0: px1 - self.x0, None])

    def _mask(self) -> np.ndarray:
        (ex, ey), (rx, ry) = ELLIPSE
        gx, gy = np.meshgrid(np.arange(self.side) + self.x0, np.arange(self.side) + self.y0)
        d = np.stack([gx - self.origin[0], gy - self.origin[1]], -1) @ np.linalg.inv(
            self.axes[:, :2]).T
        inside = ((d[..., 0] - ex) / rx) ** 2 + ((d[..., 1] - ey) / ry) ** 2 <= 1.0
        sigma = FEATHER * self.iod
        mask = cv2.GaussianBlur(inside.astype(np.float32), (0, 0), sigma)
        edge = int(np.ceil(3 * sigma))  # the blurred edge is zero well inside the box
        mask[:edge], mask[-edge:], mask[:, :edge], mask[:, -edge:] = 0, 0, 0, 0
        return mask

    def crop(self, image: np.ndarray) -> np.ndarray:
        """H x W x 3 uint8 canvas image -> 3 x S x S float32 in [0, 1]."""
        x0, y0, x1, y1 = self.inside
        box = image[y0:y1, x0:x1]
        pads = (y0 - self.y0, self.y0 + self.side - y1, x0 - self.x0, self.x0 + self.side - x1)
        if any(pads):
            box = cv2.copyMakeBorder(box, *pads, cv2.BORDER_REPLICATE)
        interp = cv2.INTER_AREA if self.side > self.size else cv2.INTER_LINEAR
        small = cv2.resize(box, (self.size, self.size), interpolation=interp)
        return np.ascontiguousarray(small.transpose(2, 0, 1), np.float32) * np.float32(1 / 255)

    def normalise(self, xy: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Canvas px (x, y) and template-unit depth -> K x 3 normalised crop coordinates."""
        out = np.empty((len(xy), 3), np.float32)
        out[:, :2] = ((xy - (self.x0, self.y0)) + 0.5) * (2.0 / self.side) - 1.0
        out[:, 2] = z * (2.0 * self.iod / self.side)
        return out

    def driving(self, motion: MotionFrame) -> np.ndarray:
        """The frame's posed head keypoints in crop coordinates: K x 3 float32."""
        d = mo.head_keypoints(motion.head_template, motion.head_offset, motion.rotation,
                              motion.translation, float(motion.scale))
        xy = self.avatar.face_rest + (d - mo.HEAD_TEMPLATE) @ self.axes.T
        return self.normalise(xy, d[:, 2])

    def context(self, frame: np.ndarray) -> np.ndarray:
        """The body frame's head crop with the face masked out: 3 x S x S float32."""
        return self.crop(frame) * self.keep

    def paste(self, frame: np.ndarray, refined: np.ndarray) -> np.ndarray:
        """``frame`` with the refined crop (O x O x 3 float in [0, 1]) blended in."""
        o = refined.shape[0]
        interp = cv2.INTER_AREA if o > self.side else cv2.INTER_LINEAR
        face = cv2.resize(refined, (self.side, self.side), interpolation=interp)
        x0, y0, x1, y1 = self.paste_box
        face = face[y0 - self.y0: y1 - self.y0, x0 - self.x0: x1 - self.x0] * np.float32(255)
        out = frame.copy()
        region = out[y0:y1, x0:x1]
        body = region.astype(np.float32)
        region[:] = np.clip(body + self.paste_mask * (face - body) + 0.5, 0, 255).astype(
            np.uint8)
        return out


class NeuralEngine:
    """ChatAnyone's face refiner: a network re-renders the head crop; torch, CPU or CUDA.
    Frames of several sessions go through one forward (``refine_batch``)."""

    batches = True

    def __init__(self, weights: str | None = None, device: str = "cpu", dtype: str = "float32",
                 capacity: int = 16, triton_url: str = "", triton_model: str = "refiner",
                 **options: Any) -> None:
        if options:
            raise TypeError(f"unknown neural engine options: {', '.join(options)}")
        if not weights:
            raise InvalidInput("the neural refiner needs weights: a local directory with "
                               f"{CONFIG_FILE} and {WEIGHTS_FILE} ({CONFIG_FILE} alone when "
                               "the network runs on Triton)")
        if triton_url:
            # The network runs on Triton (its weights live there); here only its sizes.
            from avatarflow.triton.client import TritonNetwork

            size = read_config(weights).image_size
            self.network: FaceNetwork = TritonNetwork(triton_url, triton_model)
        else:
            local = RefinerNetwork.load(weights, device, dtype)
            self.network, size = local, local.config.image_size
        self.plans: PlanCache[HeadCrop] = PlanCache(lambda a: HeadCrop(a, size), capacity)

    def warm(self, avatar: Avatar) -> None:
        """Builds the avatar's head crop now (a session is starting)."""
        self.plans.get(avatar)

    def refine(self, avatar: Avatar, frame: np.ndarray, motion: MotionFrame) -> np.ndarray:
        """H x W x 3 uint8: ``frame`` with the face re-rendered by the network."""
        return self.refine_batch([(avatar, frame, motion)])[0]

    def refine_batch(self, items: Sequence[tuple[Avatar, np.ndarray, MotionFrame]]
                     ) -> list[np.ndarray]:
        """Refines frames of any sessions in one batched forward pass, in order."""
        if not items:
            return []
        for avatar, frame, _ in items:
            if frame.shape != (avatar.height, avatar.width, 3) or frame.dtype != np.uint8:
                raise InvalidInput(f"frame is {frame.dtype} {frame.shape}, expected uint8 "
                                   f"{(avatar.height, avatar.width, 3)} for {avatar.key!r}")
        crops = [self.plans.get(avatar) for avatar, _, _ in items]
        batch = [np.stack(x) for x in zip(*(
            (c.source, c.kp_source, c.driving(mf), c.context(frame))
            for c, (_, frame, mf) in zip(crops, items, strict=True)), strict=True)]
        out = self.network.forward_batch(*(torch.from_numpy(x) for x in batch))
        refined = out.permute(0, 2, 3, 1).cpu().numpy()
        return [c.paste(frame, r) for c, (_, frame, _), r in zip(crops, items, refined,
                                                                   strict=True)]

    def close(self) -> None:
        self.plans.clear()
        self.network.close()  # a Triton client's channel
