"""``avatarflow render-frame``: one frame from LivePortrait weights, for debugging a checkpoint.

The source image is resized to the network's input (256 x 256) without cropping; the
keypoint files are .npy arrays of 21 x 3 float32 implicit keypoints (LivePortrait's
normalised frame). Without ``--kp-source`` the source keypoints come from the motion
extractor (``x_s = s (x_c R + delta) + t``, z translation dropped). The frame is
appearance features -> warping from the source to the driving keypoints -> SPADE generator,
with no stitching or retargeting, written as a PNG (512 x 512 with the published weights).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from avatarflow.contracts.errors import InvalidInput
from avatarflow.contracts.images import decode_image

NUM_KP = 21


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--weights", required=True,
                   help="directory in LivePortrait's published layout (base_models/, "
                        "retargeting_models/)")
    p.add_argument("--image", required=True, help="source image (PNG, JPEG, ...)")
    p.add_argument("--kp-driving", required=True, help=".npy with 21 x 3 float32 keypoints")
    p.add_argument("--kp-source", help=".npy with 21 x 3 float32 keypoints (default: from "
                                       "the motion extractor)")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda:0")
    p.add_argument("--out", required=True, help="output .png (directories are created)")


def load_keypoints(path: str, flag: str) -> np.ndarray:
    """A K x 3 float32 array from a .npy file; InvalidInput says what is wrong with it."""
    file = Path(path)
    if not file.is_file():
        raise InvalidInput(f"{flag} {path}: no such file")
    try:
        kp = np.load(file, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise InvalidInput(f"{flag} {path}: not a .npy array ({exc})") from exc
    if kp.dtype != np.float32 or kp.shape != (NUM_KP, 3):
        raise InvalidInput(f"{flag} {path}: expected a {NUM_KP} x 3 float32 array, got "
                           f"{kp.dtype} {kp.shape}")
    if not np.isfinite(kp).all():
        raise InvalidInput(f"{flag} {path}: keypoints must be finite")
    return kp


def load_image(path: str) -> np.ndarray:
    file = Path(path)
    if not file.is_file():
        raise InvalidInput(f"--image {path}: no such file")
    try:
        return decode_image(file.read_bytes())
    except InvalidInput as exc:
        raise InvalidInput(f"--image {path}: {exc.message}") from None


def run(args: argparse.Namespace) -> int:
    image = load_image(args.image)
    kp_driving = load_keypoints(args.kp_driving, "--kp-driving")
    kp_source = None if args.kp_source is None else load_keypoints(args.kp_source, "--kp-source")

    import torch
    from PIL import Image

    from avatarflow_renderer.engines import neural_kp
    from avatarflow_renderer.engines.neural import RendererNetwork, to_uint8
    from avatarflow_renderer.engines.neural_net import LivePortraitNetwork

    net = RendererNetwork.load(args.weights, "liveportrait", args.device, "float32")
    assert isinstance(net, LivePortraitNetwork)  # what "liveportrait" loads
    if net.num_kp != NUM_KP:
        raise InvalidInput(f"--weights {args.weights}: the network has {net.num_kp} "
                           f"keypoints, render-frame takes {NUM_KP}")
    source = net.source_from_images([image])
    with torch.inference_mode():
        if kp_source is None:
            kp_s = neural_kp.source_keypoints(net.motion_info(source))
        else:
            kp_s = torch.from_numpy(kp_source)[None]
        frame = net.forward_batch(source, kp_s, torch.from_numpy(kp_driving)[None])
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(to_uint8(frame)[0]).save(out, format="PNG")
    print("wrote", out)
    return 0
