"""The three LENS manipulation losses.

L1 pulls a target language toward the central one in the agnostic subspace,
L2 pushes it along its own direction in the specific subspace, L3 keeps the
central language where it was. Defaults follow the authors' code (MSE with mean
reduction, normalised M_a, central side of L1 not detached, L3 on mean-pooled
states); each convention is an option.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from lensml.errors import LensError


@dataclass
class LossConfig:
    """Weights and conventions of the LENS objective."""

    lambda1: float = field(default=1.0, metadata={"help": "weight of L1, the agnostic alignment term"})
    lambda3: float | None = field(default=None, metadata={"help": "weight of L3, the central-language retain term (default: by model size, see lensml.methods.lens.size_defaults)"})
    lambdas: dict[str, float] = field(default_factory=dict, metadata={"help": "per-language push lambda_l, e.g. zh=1,ja=0.6 (default 1)"})
    reduction: str = field(default="mean", metadata={"help": "mean: MSE over batch x d (authors); sum: squared norm per sample (paper)"})
    retain: str | None = field(default=None, metadata={"help": "L3 on mean-pooled states (authors), last token (paper Eq. 6), or both (default: by model size)"})
    normalize_agnostic: bool = field(default=True, metadata={"help": "project on M_a/|M_a| (authors) rather than raw M_a"})
    detach_central: bool = field(default=False, metadata={"help": "stop L1 gradients through the central-language side"})

    def __post_init__(self):
        for name in ("lambda1", "lambda3"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and value >= 0):
                raise LensError(f"train.loss.{name} must be a finite number >= 0, got {value}")
        for lang, value in self.lambdas.items():
            if not (math.isfinite(value) and value >= 0):
                raise LensError(f"--lambda {lang}={value}: a push weight must be a finite number >= 0")
        if self.reduction not in ("mean", "sum"):
            raise LensError(f"loss reduction must be mean or sum, got '{self.reduction}'")
        if self.retain not in (None, "mean", "last", "both"):
            raise LensError(f"retain must be mean, last or both, got '{self.retain}'")


def _sq(diff: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return diff.pow(2).mean()
    return diff.pow(2).sum(-1).mean()


def project_agnostic(x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
    return (x @ a).unsqueeze(-1) * a


def project_specific(x: torch.Tensor, m_s: torch.Tensor) -> torch.Tensor:
    return (x @ m_s) @ m_s.T


def agnostic_loss(x_l, x_c, a, cfg: LossConfig) -> torch.Tensor:
    """L1 = |P_a (x_l - x_c)|^2."""
    if cfg.detach_central:
        x_c = x_c.detach()
    return _sq(project_agnostic(x_l, a) - project_agnostic(x_c, a), cfg.reduction)


def specific_loss(x_l, x_l_ref, m_s, delta, lam: float, cfg: LossConfig) -> torch.Tensor:
    """L2 = |P_s (x_l - x_l_ref) - lambda_l delta_l|^2."""
    return _sq(project_specific(x_l - x_l_ref, m_s) - lam * delta, cfg.reduction)


def retain_loss(x_c_last, x_c_last_ref, x_c_mean, x_c_mean_ref, cfg: LossConfig) -> torch.Tensor:
    """L3 = |x_c - x_c_ref|^2 on the last token, the token mean, or both (summed)."""
    if cfg.retain is None:
        raise ValueError("LossConfig.retain is unresolved: fill it with lensml.methods.lens.size_defaults")
    terms = []
    if cfg.retain in ("mean", "both"):
        terms.append(_sq(x_c_mean - x_c_mean_ref, cfg.reduction))
    if cfg.retain in ("last", "both"):
        terms.append(_sq(x_c_last - x_c_last_ref, cfg.reduction))
    return sum(terms)


def lens_loss(states: dict, refs: dict, central: str, a, m_s, deltas: dict, cfg: LossConfig) -> dict[str, torch.Tensor]:
    """Total loss and its terms, summed over target languages.

    states[lang] / refs[lang] hold {"last": (b, d), "mean": (b, d)} for the model being
    trained and the frozen original; deltas[lang] is delta_l in the same dtype.
    """
    l1 = l2 = 0.0
    for lang, st in states.items():
        if lang == central:
            continue
        l1 = l1 + agnostic_loss(st["last"], states[central]["last"], a, cfg)
        l2 = l2 + specific_loss(st["last"], refs[lang]["last"], m_s, deltas[lang], cfg.lambdas.get(lang, 1.0), cfg)
    c, cr = states[central], refs[central]
    l3 = retain_loss(c["last"], cr["last"], c["mean"], cr["mean"], cfg)
    if cfg.lambda3 is None:
        raise ValueError("LossConfig.lambda3 is unresolved: fill it with lensml.methods.lens.size_defaults")
    total = cfg.lambda1 * l1 + l2 + cfg.lambda3 * l3
    return {"loss": total, "agnostic": l1, "specific": l2, "retain": l3}


@dataclass
class LensObjective:
    """The LENS loss together with its targets, so they travel as one object.

    a and M_s are the final-layer projectors and deltas the per-language directions
    delta_l, all float32 on one device; cfg must be resolved (lensml.methods.lens.size_defaults).
    """

    central: str
    a: torch.Tensor
    m_s: torch.Tensor
    deltas: dict[str, torch.Tensor]
    cfg: LossConfig

    @classmethod
    def from_subspace(cls, subspace, languages: list[str], central: str, cfg: LossConfig, device) -> "LensObjective":
        a, m_s = (t.to(device=device, dtype=torch.float32) for t in subspace.projectors(-1, cfg.normalize_agnostic))
        deltas = {lang: subspace.direction(lang, -1).to(device=device, dtype=torch.float32) for lang in languages}
        return cls(central, a, m_s, deltas, cfg)

    def to(self, device) -> "LensObjective":
        if self.a.device == torch.device(device):
            return self
        return LensObjective(self.central, self.a.to(device), self.m_s.to(device),
                             {k: v.to(device) for k, v in self.deltas.items()}, self.cfg)

    def __call__(self, states: dict, refs: dict) -> dict[str, torch.Tensor]:
        return lens_loss(states, refs, self.central, self.a, self.m_s, self.deltas, self.cfg)
