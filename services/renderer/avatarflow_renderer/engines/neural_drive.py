"""From an avatar and motion frames to the network's inputs, per architecture.

A driver computes an avatar's session-constant source state once (``source``) and turns a
batch of motion frames into driving keypoints and hand images (``drive``). It needs only the
keypoint part of the network (``neural_keypoint_net``); the appearance of the source is the
generator's business (the engine's ``Source.appearance``).

liveportrait: the pose is LivePortrait's own, ``x_d = s (x_c R + delta) + t``: the source's
rotation composed with the motion's (``R = R_motion @ R_source``), its scale times
``motion.scale`` and its translation offset by ``motion.translation`` (head template units,
mapped to canvas px by ``avatar.face_axes``, then to the normalised units in which x and y run
from -1 to 1 across the canvas; z dropped, as LivePortrait drops it). The mouth and the eyes
go through LivePortrait's retargeting MLPs: the target lip-open ratio is that of the motion's
keypoints (its template plus offset; the inner lips meet at rest, so silence closes the
mouth), the target eye-open ratio is the source's scaled by how open the motion's eyes are
relative to the template's. The deltas are added to the driving keypoints and the stitching
MLP corrects the result, as in LivePortrait's retargeting path. Other expression coefficients
have no LivePortrait control and are not rendered in this arch. A frame that carries a
LivePortrait motion block (``MotionFrame.liveportrait``, e.g. JoyVASA's) is driven by that block
instead, as JoyVASA drives LivePortrait (``neural_lpmotion``), relative to the session's anchor.

upperbody: the K head keypoints posed as ``avatarflow.contracts.motion.head_keypoints`` poses them,
mapped into the canvas through ``avatar.face_rest`` / ``face_axes`` (depth: template z times
the eye distance), and the B body keypoints moved as the warp engine moves them; all
normalised to [-1, 1] over the canvas (z in x's units). The source keypoints are where the
analysis found the face and body. Hands are drawn as bones and joints on a blank image. A
LivePortrait motion block is ignored here (these are not LivePortrait's implicit keypoints).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar, cast

import cv2
import numpy as np
import torch

from avatarflow.avatars.store import Avatar
from avatarflow.contracts import motion as mo
from avatarflow.contracts.messages import LivePortraitMotion, MotionFrame
from avatarflow_renderer.engines import neural_kp as kpm
from avatarflow_renderer.engines import neural_lpmotion as lpm
from avatarflow_renderer.engines.neural_keypoint_net import (
    KeypointNetwork,
    LivePortraitKeypoints,
    UpperBodyKeypoints,
)


@dataclass(frozen=True, eq=False)
class Source:
    """Session-constant network inputs of one avatar."""

    kp: torch.Tensor  # 1 x K x 3 float32: source keypoints
    # What the generator keeps of the source image (the engine fills it in): the appearance
    # volume in-process, the avatar's key and image when the generator runs on Triton.
    appearance: Any = field(default=None, kw_only=True)


@dataclass(frozen=True, eq=False)
class LivePortraitSource(Source):
    canonical: torch.Tensor  # 1 x K x 3: x_c
    expression: torch.Tensor  # 1 x K x 3: delta
    rot: torch.Tensor  # 1 x 3 x 3: source pose (row-vector convention)
    scale: torch.Tensor  # 1 x 1
    shift: torch.Tensor  # 1 x 3: t
    lip: float  # source lip-open ratio
    eyes: tuple[float, float]  # source eye-open ratios, image-left eye first
    lip_closed: torch.Tensor | None = None  # 1 x K x 3: JoyVASA's lip normalisation, or None


SourceT = TypeVar("SourceT", bound=Source)


class Driver(Protocol[SourceT]):
    """An arch's way from avatars and motion to the network's inputs."""

    def source(self, avatar: Avatar, image: torch.Tensor) -> SourceT:
        """The avatar's session-constant inputs (``image``: the canvas at the network's
        source size)."""
        ...

    def drive(self, avatars: Sequence[Avatar], sources: Sequence[SourceT],
              motions: Sequence[MotionFrame],
              anchors: Sequence[LivePortraitMotion | None] | None = None
              ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Driving keypoints (B x K x 3) and hand images (B x 3 x H x W, or None).
        ``anchors``: per frame, the session's first LivePortrait motion block (or None)."""
        ...


def normalise(points: np.ndarray, avatar: Avatar) -> np.ndarray:
    """Canvas px (N x 3, z in px) -> [-1, 1] over the canvas (pixel centres, grid_sample's
    align_corners=False), z scaled like x."""
    out = np.empty_like(points, dtype=np.float32)
    out[:, 0] = (2 * points[:, 0] + 1) / avatar.width - 1
    out[:, 1] = (2 * points[:, 1] + 1) / avatar.height - 1
    out[:, 2] = points[:, 2] * 2 / avatar.width
    return out


class LivePortraitDriver:
    """Frames with a LivePortrait motion block go JoyVASA's way (``neural_lpmotion``, flags
    ``drive``), relative to their anchor; the others through the hybrid mapping below."""

    def __init__(self, net: LivePortraitKeypoints, drive: lpm.BlockDrive | None = None) -> None:
        self.net = net
        self.block_drive = drive or lpm.BlockDrive()

    def source(self, avatar: Avatar, image: torch.Tensor) -> LivePortraitSource:
        """``image``: the canvas at the network's source size (``source_from_images``)."""
        info = self.net.motion_info(image)
        kp = kpm.source_keypoints(info)
        lip = kpm.lip_ratio(avatar.face_points)
        return LivePortraitSource(
            kp=kp, canonical=info["kp"], expression=info["exp"],
            rot=kpm.rotation(info["pitch"], info["yaw"], info["roll"]), scale=info["scale"],
            shift=info["t"], lip=lip, eyes=kpm.eye_ratios(avatar.face_points),
            lip_closed=lpm.lip_closing_delta(self.net, kp, lip, self.block_drive))

    def drive(self, avatars: Sequence[Avatar], sources: Sequence[LivePortraitSource],
              motions: Sequence[MotionFrame],
              anchors: Sequence[LivePortraitMotion | None] | None = None
              ) -> tuple[torch.Tensor, None]:
        """Driving keypoints (B x K x 3) for a batch of frames; no hand images."""
        blocks = [i for i, m in enumerate(motions) if m.liveportrait is not None]
        if not blocks:
            return self._hybrid(avatars, sources, motions), None
        own = [cast(LivePortraitMotion, motions[i].liveportrait) for i in blocks]
        first = [(anchors[i] if anchors else None) or b for i, b in zip(blocks, own, strict=True)]
        kp = torch.empty(len(motions), *sources[0].kp.shape[1:], device=self.net.device)
        kp[blocks] = lpm.driving_keypoints(self.net, [sources[i] for i in blocks], own, first,
                                           self.block_drive)
        rest = sorted(set(range(len(motions))) - set(blocks))
        if rest:
            kp[rest] = self._hybrid([avatars[i] for i in rest], [sources[i] for i in rest],
                                    [motions[i] for i in rest])
        return kp, None

    def _hybrid(self, avatars: Sequence[Avatar], sources: Sequence[LivePortraitSource],
                motions: Sequence[MotionFrame]) -> torch.Tensor:
        dev = self.net.device
        angles = np.degrees(np.stack([m.rotation for m in motions]).astype(np.float64))
        shift = np.zeros((len(motions), 3), np.float32)
        lips, eyes = [], []
        for i, (av, src, m) in enumerate(zip(avatars, sources, motions, strict=True)):
            px = av.face_axes.astype(np.float64) @ np.asarray(m.translation, np.float64)
            shift[i, :2] = px * (2.0 / av.width, 2.0 / av.height)
            driven = m.head_template + m.head_offset
            lips.append((src.lip, kpm.lip_ratio(driven)))
            openness = float(np.mean(kpm.eye_ratios(driven))) / kpm.REST_EYE_RATIO
            eyes.append((*src.eyes, float(np.mean(src.eyes)) * openness))

        def t(a: np.ndarray | Sequence[Sequence[float]]) -> torch.Tensor:
            return torch.as_tensor(np.asarray(a, np.float32), device=dev)

        ang = t(angles)
        rot = kpm.rotation(ang[:, 0], ang[:, 1], ang[:, 2]) @ torch.cat([s.rot for s in sources])
        scale = torch.cat([s.scale for s in sources]) * t([[m.scale] for m in motions])
        kp_s = torch.cat([s.kp for s in sources])
        kp_d = kpm.pose_keypoints(torch.cat([s.canonical for s in sources]), rot,
                                  torch.cat([s.expression for s in sources]), scale,
                                  torch.cat([s.shift for s in sources]) + t(shift))
        kp_d = (kp_d + self.net.retarget_lip(kp_s, t(lips))
                + self.net.retarget_eye(kp_s, t(eyes)))
        return self.net.stitch(kp_s, kp_d)


# Bones of the 21-joint hand (mediapipe / MANO order): wrist to each finger, then along it.
HAND_BONES = [(0, f) for f in (1, 5, 9, 13, 17)] + [
    (f + j, f + j + 1) for f in (1, 5, 9, 13, 17) for j in range(3)]


def draw_hands(hands: np.ndarray, width: int, height: int) -> np.ndarray:
    """Hand keypoints (2 x 21 x 2, image px; left, right) -> H x W x 3 float32 in [0, 1]:
    the left hand's bones in channel 0, the right hand's in 1, every joint as a disc in 2."""
    img = np.zeros((3, height, width), np.float32)
    thick = max(1, round(width / 128))
    shift = 4  # sub-pixel precision bits for cv2's drawing
    pts = np.round(hands * (1 << shift)).astype(np.int64)
    for side in range(2):
        for a, b in HAND_BONES:
            cv2.line(img[side], tuple(pts[side, a]), tuple(pts[side, b]), (1.0,), thick,
                     cv2.LINE_AA, shift)
        for p in pts[side]:
            cv2.circle(img[2], tuple(p), (thick + 1) << shift, (1.0,), -1, cv2.LINE_AA, shift)
    return img.transpose(1, 2, 0)


class UpperBodyDriver:
    def __init__(self, net: UpperBodyKeypoints) -> None:
        self.net = net

    @staticmethod
    def _head_depth(avatar: Avatar) -> np.ndarray:
        iod = float(np.hypot(*avatar.face_axes[:, 0]))
        return mo.HEAD_TEMPLATE[:, 2] * iod

    def source(self, avatar: Avatar, image: torch.Tensor) -> Source:
        """Source keypoints where the analysis found the face and body (``image`` unused)."""
        head = np.column_stack([avatar.face_points, self._head_depth(avatar)])
        body = np.column_stack([avatar.body_points, np.zeros(mo.B, np.float32)])
        kp = normalise(np.concatenate([head, body]), avatar)
        return Source(kp=torch.as_tensor(kp, device=self.net.device)[None])

    def keypoints(self, avatar: Avatar, motion: MotionFrame) -> np.ndarray:
        """Driving keypoints, normalised: (K + B) x 3 float32."""
        iod = float(np.hypot(*avatar.face_axes[:, 0]))
        axes = np.vstack([avatar.face_axes, [0.0, 0.0, iod]]).astype(np.float32)
        posed = mo.head_keypoints(motion.head_template, motion.head_offset, motion.rotation,
                                  motion.translation, float(motion.scale))
        rest = np.column_stack([avatar.face_rest, self._head_depth(avatar)])
        head = rest + (posed - mo.HEAD_TEMPLATE) @ axes.T
        delta = (motion.body - mo.BODY_CANONICAL) * avatar.body_scale
        body = np.column_stack([avatar.body_points, np.zeros(mo.B, np.float32)]) + delta
        return normalise(np.concatenate([head, body]), avatar)

    def hand_image(self, avatar: Avatar, motion: MotionFrame) -> np.ndarray:
        """The motion's hands drawn at the network's source size (H x W x 3 float32)."""
        w, h = self.net.source_size
        wrists = mo.BODY_CANONICAL[[mo.BODY["wrist_l"], mo.BODY["wrist_r"]]]
        rest = mo.HAND_REST + wrists[:, None]
        pts = avatar.hand_points + (motion.hands - rest)[..., :2] * avatar.body_scale
        return draw_hands(pts * np.array([w / avatar.width, h / avatar.height]), w, h)

    def drive(self, avatars: Sequence[Avatar], sources: Sequence[Source],
              motions: Sequence[MotionFrame],
              anchors: Sequence[LivePortraitMotion | None] | None = None
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """Driving keypoints (B x K x 3) and hand images (B x 3 x H x W) for a batch. A
        LivePortrait motion block (and so ``anchors``) is ignored: this arch's head keypoints
        are not LivePortrait's implicit ones, the hybrid motion drives them."""
        dev = self.net.device
        kp = np.stack([self.keypoints(a, m) for a, m in zip(avatars, motions, strict=True)])
        hands = np.stack([self.hand_image(a, m) for a, m in zip(avatars, motions, strict=True)])
        return (torch.as_tensor(kp, device=dev),
                torch.as_tensor(hands, device=dev).permute(0, 3, 1, 2))


def driver_for(net: KeypointNetwork, drive: lpm.BlockDrive | None = None) -> Driver[Any]:
    """The arch's driver; ``drive``: JoyVASA's flags for LivePortrait motion blocks."""
    if isinstance(net, LivePortraitKeypoints):
        return LivePortraitDriver(net, drive)
    if isinstance(net, UpperBodyKeypoints):
        return UpperBodyDriver(net)
    raise TypeError(f"no driver for {type(net).__name__}")
