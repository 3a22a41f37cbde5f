"""The training loop: a config, a trainer whose checkpoint resumes exactly, metrics, export.

Everything random (which windows, noise, timesteps, dropped conditions) comes from two
generators per process, seeded by the config and the process's rank and saved in every
checkpoint with the model, its EMA copy, the optimiser and the step, so a run stopped and
resumed takes the very steps it would have taken. ``export`` writes the EMA weights as the
directory the ``diffusion`` engine loads (strictly).

Several processes (``torchrun --nproc_per_node N -m avatarflow.cli.main train motion ...``, on
one node or many) train one model with DistributedDataParallel: each draws its own windows, the
gradients are averaged, rank 0 writes metrics, checkpoints and the export (gloo on CPU, NCCL on
GPUs). On a GPU the forward pass runs in bfloat16 autocast.
"""

from __future__ import annotations

import contextlib
import copy
import csv
import dataclasses
import os
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import yaml
from torch.nn.parallel import DistributedDataParallel

from avatarflow.contracts.errors import InvalidInput
from avatarflow_motion_gen.engines.diffusion.config import DiffusionConfig, build_model, preset
from avatarflow_motion_gen.engines.diffusion.config import save as save_weights
from avatarflow_motion_gen.engines.diffusion.sampler import alphas_cumprod
from avatarflow_training.train.data import ClipSet
from avatarflow_training.train.objective import Objective, Step, collate

CHECKPOINT, METRICS, EXPORT = "checkpoint.pt", "metrics.csv", "export"
EVALS = "evals.csv"


@dataclass(frozen=True)
class TrainConfig:
    """What a run does (YAML: these fields; ``model`` overrides the preset's fields)."""

    preset: str = "small"
    model: dict[str, Any] = field(default_factory=dict)
    batch_size: int = 16
    grad_accum: int = 1
    lr: float = 3e-4
    weight_decay: float = 0.01
    steps: int = 2000
    ema: float = 0.999
    checkpoint_every: int = 200
    log_every: int = 10
    seed: int = 0
    p_uncond: float = 0.1
    p_no_history: float = 0.1
    p_reference: float = 0.5
    body_weight: float = 1.0
    device: str = "auto"  # "auto": this process's GPU (LOCAL_RANK) if there is one, else CPU
    eval_every: int = 0  # evaluate the EMA weights on the held-out set every N steps; 0 = never

    @classmethod
    def load(cls, path: str | Path | None, **overrides: Any) -> TrainConfig:
        data: dict[str, Any] = {}
        if path is not None:
            try:
                data = yaml.safe_load(Path(path).read_text()) or {}
            except (OSError, yaml.YAMLError) as exc:
                raise InvalidInput(f"cannot read training config {path}: {exc}") from exc
            if not isinstance(data, dict):
                raise InvalidInput(f"training config {path} must hold a mapping")
        unknown = sorted(set(data) - {f.name for f in fields(cls)})
        if unknown:
            raise InvalidInput(f"training config {path}: unknown setting(s) {unknown}")
        cfg = cls(**{**data, **{k: v for k, v in overrides.items() if v is not None}})
        if min(cfg.batch_size, cfg.grad_accum, cfg.steps, cfg.checkpoint_every,
               cfg.log_every) < 1 or not 0.0 <= cfg.ema < 1.0 or cfg.lr <= 0.0:
            raise InvalidInput("training config: batch_size, grad_accum, steps, "
                               "checkpoint_every and log_every must be >= 1, 0 <= ema < 1, lr > 0")
        return cfg


def _device(name: str) -> torch.device:
    if name != "auto":
        return torch.device(name)
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


class Trainer:
    """One run on ``data``; ``step()`` trains one optimiser step and returns its losses
    (this process's: with several processes each reports its own batch)."""

    def __init__(self, data: ClipSet, cfg: TrainConfig, model_cfg: DiffusionConfig) -> None:
        self.data, self.cfg, self.model_cfg = data, cfg, model_cfg
        self.world = dist.get_world_size() if dist.is_initialized() else 1
        self.rank = dist.get_rank() if dist.is_initialized() else 0
        self.device = _device(cfg.device)
        torch.manual_seed(cfg.seed)  # the initial weights: the same in every process
        self.model = build_model(model_cfg)
        for name, value in data.statistics().items():
            getattr(self.model, name).copy_(torch.from_numpy(value).float())
        self.model.to(self.device)
        self.ema = copy.deepcopy(self.model).requires_grad_(False)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr,
                                     weight_decay=cfg.weight_decay)
        objective = Objective(cfg.p_uncond, cfg.p_no_history, cfg.p_reference, cfg.body_weight)
        alphas = torch.tensor(alphas_cumprod(model_cfg.schedule, model_cfg.train_steps),
                              dtype=torch.float32)
        self.net: torch.nn.Module = Step(self.model, alphas, objective).to(self.device)
        if self.world > 1:
            # the reference and appearance inputs are not used by every batch
            self.net = DistributedDataParallel(self.net, find_unused_parameters=True)
        self.rng = np.random.default_rng([cfg.seed, self.rank])
        self.gen = torch.Generator().manual_seed(cfg.seed * 1009 + self.rank)
        self.steps_done = 0

    def step(self) -> dict[str, float]:
        self.net.train()
        totals: dict[str, float] = {}
        for _ in range(self.cfg.grad_accum):
            windows, refs = self.data.sample(self.rng, self.cfg.batch_size)
            batch = {k: v.to(self.device) for k, v in collate(windows, refs).items()}
            with torch.autocast("cuda", dtype=torch.bfloat16,
                                enabled=self.device.type == "cuda"):
                out = self.net(batch, self.gen)
            (out["total"] / self.cfg.grad_accum).backward()
            for k, v in out.items():
                totals[k] = totals.get(k, 0.0) + float(v.detach()) / self.cfg.grad_accum
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        with torch.no_grad():
            for e, p in zip(self.ema.parameters(), self.model.parameters(), strict=True):
                e.lerp_(p, 1.0 - self.cfg.ema)
        self.steps_done += 1
        return totals

    def _generators(self) -> list[dict[str, Any]]:
        """Every process's generator states, in rank order."""
        mine = {"rng": self.rng.bit_generator.state, "gen": self.gen.get_state()}
        if self.world == 1:
            return [mine]
        everyone: list[Any] = [None] * self.world
        dist.all_gather_object(everyone, mine)
        return everyone

    def state(self) -> dict[str, Any]:
        return {"step": self.steps_done, "model": self.model.state_dict(),
                "ema": self.ema.state_dict(), "optimizer": self.opt.state_dict(),
                "generators": self._generators(), "config": dataclasses.asdict(self.cfg),
                "model_config": self.model_cfg.to_dict()}

    def save(self, path: Path) -> None:
        """Writes the checkpoint (rank 0) through a temporary file: a stop never leaves half
        of one. Every process must call it (they hand rank 0 their generators)."""
        state = self.state()
        if self.rank != 0:
            return
        tmp = path.with_name(path.name + ".tmp")
        torch.save(state, tmp)
        tmp.replace(path)

    def restore(self, path: Path) -> None:
        state = torch.load(path, map_location=self.device, weights_only=False)
        if len(state["generators"]) != self.world:
            raise InvalidInput(f"{path} was written by {len(state['generators'])} process(es); "
                               f"resume it with as many, not {self.world}")
        self.model.load_state_dict(state["model"])
        self.ema.load_state_dict(state["ema"])
        self.opt.load_state_dict(state["optimizer"])
        mine = state["generators"][self.rank]
        self.rng.bit_generator.state = mine["rng"]
        self.gen.set_state(mine["gen"].cpu())
        self.steps_done = int(state["step"])

    def export(self, directory: Path) -> Path:
        """The EMA weights as the ``diffusion`` engine's weights directory (float32, CPU)."""
        return save_weights(copy.deepcopy(self.ema).float().cpu(), self.model_cfg, directory)


def model_config(cfg: TrainConfig, data: ClipSet, fps: float) -> DiffusionConfig:
    """The preset with the run's overrides, trained on the data's audio layout and rate."""
    if len(data.layout) != 1:
        raise InvalidInput(f"the dataset mixes audio layouts {sorted(data.layout)}")
    return preset(cfg.preset, **{**cfg.model, "audio_layout": next(iter(data.layout)),
                                 "fps": fps})


def run(data_dir: str | Path, cfg: TrainConfig, out: str | Path, *,
        on_log: Any = None, holdout: str | Path | None = None) -> Trainer:
    """Trains until ``cfg.steps`` (resuming from ``out``'s checkpoint), logging to
    ``out/metrics.csv``, checkpointing every ``checkpoint_every`` steps and at the end, and
    exporting to ``out/export``; with ``holdout`` (a dataset) and ``eval_every``, the EMA
    weights are evaluated on it then (``out/evals.csv``). Under torchrun (WORLD_SIZE > 1)
    every process calls it."""
    started = False
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
        gpu = _device(cfg.device).type == "cuda"
        dist.init_process_group("nccl" if gpu else "gloo")
        started = True
    try:
        return _run(data_dir, cfg, Path(out), on_log, holdout)
    finally:
        if started:
            dist.destroy_process_group()


def _run(data_dir: str | Path, cfg: TrainConfig, out: Path, on_log: Any,
         holdout: str | Path | None) -> Trainer:
    out.mkdir(parents=True, exist_ok=True)
    probe = preset(cfg.preset, **cfg.model)
    data = ClipSet.load(data_dir, history=probe.history, size=probe.window,
                        lookahead=probe.lookahead, hand_coeffs=probe.hand_coeffs,
                        ref_frames=probe.ref_frames)
    rates = {float(m["fps"]) for m, _ in data.clips}
    if len(rates) != 1:
        raise InvalidInput(f"the dataset mixes frame rates {sorted(rates)}: build it from "
                           "videos of one rate")
    trainer = Trainer(data, cfg, model_config(cfg, data, rates.pop()))
    ckpt = out / CHECKPOINT
    if ckpt.is_file():
        trainer.restore(ckpt)
    lead = trainer.rank == 0
    new_log = not (out / METRICS).is_file()
    with contextlib.ExitStack() as stack:
        log = None
        if lead:
            f = stack.enter_context((out / METRICS).open("a", newline=""))
            log = csv.writer(f)
            if new_log:
                log.writerow(["step", "total", "face", "body", "seconds"])
        t0 = time.perf_counter()
        while trainer.steps_done < cfg.steps:
            row = trainer.step()
            s = trainer.steps_done
            if log is not None and (s % cfg.log_every == 0 or s == cfg.steps):
                log.writerow([s, f"{row['total']:.6f}", f"{row['face']:.6f}",
                              f"{row['body']:.6f}", f"{time.perf_counter() - t0:.1f}"])
                f.flush()
                if on_log is not None:
                    on_log(s, row)
            if s % cfg.checkpoint_every == 0 or s == cfg.steps:
                trainer.save(ckpt)
            if lead and holdout is not None and cfg.eval_every and s % cfg.eval_every == 0:
                _evaluate(trainer, Path(holdout), out)
    if lead:
        trainer.export(out / EXPORT)
    return trainer


def _evaluate(trainer: Trainer, holdout: Path, out: Path) -> dict[str, float]:
    """The EMA weights' measures on the held-out set, appended to ``out/evals.csv``."""
    from avatarflow_motion_gen.engines.diffusion import DiffusionEngine
    from avatarflow_training.evaluate import MEASURES, evaluate

    weights = trainer.export(out / "eval-weights")
    engine = DiffusionEngine(weights=str(weights))
    try:
        model = evaluate(engine, holdout)["model"]
    finally:
        engine.close()
    path = out / EVALS
    new = not path.is_file()
    with path.open("a", newline="") as f:
        log = csv.writer(f)
        if new:
            log.writerow(["step", *MEASURES])
        log.writerow([trainer.steps_done, *(f"{model[k]:.4f}" for k in MEASURES)])
    return model
