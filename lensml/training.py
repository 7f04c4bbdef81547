"""Optimising the trainable layers: the configuration, defaults by model size, and the step loop.

The loop is shared by every training method (lensml.methods): a method supplies the
trainable parameters and a micro-step (forward on some training items, backward
scaled by a weight, loss terms back as floats); the loop owns shuffling, batching,
gradient accumulation, data-parallel reduction, clipping, AdamW with a cosine
schedule, the non-finite checks, and the per-step log.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from lensml import distributed, tracking
from lensml.errors import LensError
from lensml.io import append_jsonl
from lensml.lens.losses import LossConfig
from lensml.progress import progress
from lensml.runtime.models import steady_attention
from lensml.runtime.optim import make_optimizer, param_groups

log = logging.getLogger(__name__)


class Default(int):
    """An int left at its default: equal to the number, but telling "not given" from "given as -2".

    The paper's baselines train every parameter unless the user picks layers with
    --train.start-layer (lensml.methods.sft); LENS and the controls train the top layers either
    way. A value read from the command line or YAML is a plain int, so it counts as given.
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return int.__repr__(self)


def start_layer_given(cfg: "TrainConfig") -> bool:
    """Did the user choose train.start_layer (command line, YAML, a sweep), rather than leave its default?"""
    return not isinstance(cfg.start_layer, Default)


@dataclass
class TrainConfig:
    """Optimisation of the top layers."""

    start_layer: int = field(default=Default(-2), metadata={"help": "first trained decoder layer; negative counts from the top (-2: top two); the paper's baselines (xsft, xsft-full, qalign, sdrrl) train every parameter unless it is given"})
    lr: float | None = field(default=None, metadata={"help": "peak learning rate (default: by model size, 1e-3 at 135M parameters to 1e-5 at 8B on a log scale)"})
    weight_decay: float = field(default=0.1, metadata={"help": "AdamW weight decay"})
    warmup_ratio: float = field(default=0.05, metadata={"help": "share of steps with linear warm-up before the cosine decay"})
    epochs: int = field(default=1, metadata={"help": "passes over the training prompts"})
    batch_size: int = field(default=8, metadata={"help": "prompts per optimiser step (each in every language)"})
    grad_accum: int = field(default=1, metadata={"help": "micro-batches per optimiser step (batch_size is split)"})
    max_length: int = field(default=128, metadata={"help": "token budget per templated prompt; cut from the left"})
    samples: int | None = field(default=None, metadata={"help": "training prompts to use (default: all)"})
    seed: int = field(default=0, metadata={"help": "shuffling seed"})
    cache_device: str = field(default="auto", metadata={"help": "where cached states live: auto (model device unless over half its free memory), cpu"})
    gradient_checkpointing: bool = field(default=False, metadata={"help": "recompute activations in the trained block"})
    offload_unused: bool = field(default=False, metadata={"help": "on a GPU, move the embeddings and LM head to the CPU while training (-2 GB on an 8B model, +1.8 s on an H100)"})
    system_prompt: str | None = field(default=None, metadata={"help": "system message (default: the template's own)"})
    share_prefix: bool = field(default=True, metadata={
        "help": "run the prompts' common template prefix once per step, not in every prompt (same loss to float rounding)"})
    loss: LossConfig = field(default_factory=LossConfig)

    def __post_init__(self):
        for name in ("epochs", "batch_size", "grad_accum", "max_length"):
            if getattr(self, name) < 1:
                raise LensError(f"train.{name} must be at least 1, got {getattr(self, name)}")
        if self.samples is not None and self.samples < 1:
            raise LensError(f"train.samples must be at least 1, got {self.samples}: leave it unset to use all prompts")
        if self.lr is not None and not (math.isfinite(self.lr) and self.lr > 0):
            raise LensError(f"train.lr must be a finite number > 0, got {self.lr}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise LensError(f"train.weight_decay must be a finite number >= 0, got {self.weight_decay}")
        if not 0 <= self.warmup_ratio < 1:
            raise LensError(f"train.warmup_ratio must be in [0, 1), got {self.warmup_ratio}")


def default_lr(num_parameters: int) -> float:
    """Peak learning rate by model size.

    The paper's 1e-5 is for 7-8B models; on SmolLM2-135M it barely moves the
    representations in 25 steps, and 1e-3 (with the retain term on the last token
    too) lifts Chinese fidelity to 100% with English intact (benchmarks/sweep.py,
    README). Sizes in between are interpolated on a log scale.
    """
    small, large = (1.35e8, 1e-3), (8e9, 1e-5)
    t = (math.log(max(num_parameters, small[0])) - math.log(small[0])) / (math.log(large[0]) - math.log(small[0]))
    t = min(max(t, 0.0), 1.0)
    return math.exp(math.log(small[1]) + t * (math.log(large[1]) - math.log(small[1])))


def size_defaults(cfg: TrainConfig, num_parameters: int) -> TrainConfig:
    """Fill the shared options left unset (None) by model size: the learning rate (default_lr).

    A method's own options are its own to resolve: LENS's loss options (train.loss.retain,
    lambda3) in lensml.methods.lens.size_defaults.
    """
    return dataclasses.replace(cfg, lr=cfg.lr if cfg.lr is not None else default_lr(num_parameters))


@dataclass
class TrainResult:
    """What a training method did: steps, per-step log, timings, sizes and the options actually used."""

    method: str
    steps: int
    lr: float
    history: list[dict] = field(default_factory=list)
    timings_s: dict = field(default_factory=dict)
    trainable_parameters: int = 0
    total_parameters: int = 0
    resolved: dict = field(default_factory=dict)  # the options actually used (size defaults filled in)

    @property
    def trainable_share(self) -> float:
        return self.trainable_parameters / self.total_parameters if self.total_parameters else 0.0

    @property
    def final(self) -> dict:
        return self.history[-1] if self.history else {}

    def __repr__(self) -> str:
        """One line a notebook can show: the per-step history and the resolved options stay in their fields."""
        loss = self.final.get("loss")
        seconds = self.timings_s.get("steps")
        parts = [f"method={self.method!r}", f"steps={self.steps}", f"lr={self.lr:g}",
                 *([f"final_loss={loss:.4g}"] if loss is not None else []),
                 f"trainable={100 * self.trainable_share:.2f}% of {self.total_parameters:,}",
                 *([f"train_s={seconds:.1f}"] if seconds is not None else [])]
        return f"TrainResult({', '.join(parts)})"


#: A micro-step: (item indices, backward weight or None for no backward) -> loss terms as floats.
MicroStep = Callable[[list[int], "float | None"], dict]


def lr_factor(step: int, warmup: int, total: int) -> float:
    """Share of the peak rate used by optimiser step `step` (0-based): linear warm-up, then cosine decay.

    Unlike transformers' get_cosine_schedule_with_warmup, the first step does not run at
    rate 0 (warm-up climbs (k+1)/(warmup+1)) and the last step not at 0 either, so every
    step moves the weights: a one-step run trains.
    """
    if step < warmup:
        return (step + 1) / (warmup + 1)
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def fmt_terms(terms: dict) -> str:
    return ", ".join(f"{k}={v:.4g}" for k, v in terms.items())


def _check_finite(terms: dict, when: str) -> None:
    if not all(math.isfinite(v) for v in terms.values()):
        raise LensError(f"training loss became non-finite {when} ({fmt_terms(terms)}): "
                        f"lower --lr or check the data and subspace")


def optimise(params: list[torch.nn.Parameter], n_items: int, cfg: TrainConfig, micro_step: MicroStep,
             result: TrainResult, terms: tuple[str, ...], device, log_path: Path | None = None,
             model: torch.nn.Module | None = None, sizes: list[int] | None = None) -> TrainResult:
    """Run cfg.epochs passes of shuffled batches over n_items, updating params in place.

    Appends one record per step to result.history (and to log_path as JSONL while it
    runs, so a long run can be watched). The learning rate logged is the one the step
    used. After the last step the loss is computed once more with the final weights:
    a run that diverged on its last update fails here instead of saving a broken model.
    model: the model params belong to; its norm weights and biases then take no weight decay
    (lensml.runtime.optim.param_groups, the HF Trainer's convention every built-in method follows).
    sizes: each item's weight in its step's loss (an SFT item's response tokens: the step's loss is then the
    mean over its tokens however the step is split into micro-batches and processes); default: one per item.
    """
    steady_attention(params)  # models not loaded by lensml.runtime.models.load_model get it here
    steps_per_epoch = math.ceil(n_items / cfg.batch_size)
    total_steps = steps_per_epoch * cfg.epochs
    groups = param_groups(model, params, cfg.weight_decay) if model is not None else params
    opt = make_optimizer(groups, cfg.lr, cfg.weight_decay, cfg.seed)
    result.resolved.setdefault("no_weight_decay", sum(p.numel() for g in groups if isinstance(g, dict)
                                                      and g["weight_decay"] == 0.0 for p in g["params"]))
    warmup = math.ceil(cfg.warmup_ratio * total_steps)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: lr_factor(k, warmup, total_steps))
    gen = torch.Generator().manual_seed(cfg.seed)
    micro = max(1, math.ceil(cfg.batch_size / cfg.grad_accum / distributed.world_size()))
    sharded = distributed.is_sharded(params)  # FSDP: the model's own hooks reduce-scatter the gradients
    if distributed.is_distributed():
        result.resolved.setdefault("parallel", distributed.describe(params))
    size_of = len if sizes is None else (lambda idx: sum(sizes[i] for i in idx))
    t0 = time.perf_counter()
    last_step = result.steps + total_steps  # steps count on across calls (qalign's two stages)
    bar = progress(total=total_steps, desc="training", leave=False)
    try:
        for _epoch in range(cfg.epochs):
            order = torch.randperm(n_items, generator=gen).tolist()
            for s in range(steps_per_epoch):
                step_idx = order[s * cfg.batch_size:(s + 1) * cfg.batch_size]
                mine = distributed.my_share(step_idx)
                logged = dict.fromkeys(terms, 0.0)
                whole = size_of(step_idx)
                for m in range(0, len(mine), micro):
                    idx = mine[m:m + micro]
                    share = size_of(idx) / whole if whole else 0.0
                    for k, v in micro_step(idx, share).items():
                        logged[k] += v * share
                if sharded:  # every forward/backward is a collective: match the busiest process, adding nothing
                    for _ in range(distributed.busiest_micro_steps(step_idx, micro) - math.ceil(len(mine) / micro)):
                        micro_step(step_idx[:1], 0.0)
                if distributed.is_distributed():
                    if not sharded:
                        distributed.all_reduce_grads(params)
                    summed = distributed.all_reduce_sum(torch.tensor([logged[k] for k in terms], device=device))
                    logged = dict(zip(terms, summed.tolist()))
                _check_finite(logged, f"at step {result.steps + 1}")
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                logged["lr"] = sched.get_last_lr()[0]  # the rate this step uses
                opt.step()
                sched.step()
                opt.zero_grad(set_to_none=True)
                result.steps += 1
                record = {"step": result.steps, **logged}
                result.history.append(record)
                if log_path is not None and distributed.is_main():
                    append_jsonl(log_path, record)
                tracking.log_step(record, last_step)  # run.log every few steps, --report-to trackers every step
                bar.set_postfix(loss=f"{logged['loss']:.4g}")
                bar.update()
                log.debug("step %d %s", result.steps, fmt_terms(logged))
    finally:
        bar.close()
    check_idx = distributed.my_share(list(range(n_items)))[:micro]  # items this process holds
    if sharded:  # the forward is a collective: every process runs it
        check_idx = check_idx or [0]
    if check_idx:
        with torch.no_grad():
            _check_finite(micro_step(check_idx, None), "with the trained weights")
    if not all(torch.isfinite(p).all() for p in params):
        raise LensError("training produced non-finite weights: lower --lr")
    result.timings_s["steps"] = time.perf_counter() - t0
    return result
