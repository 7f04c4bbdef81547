"""The LENS patch: only the tensors a run changed, and what they apply to.

A run changes the top layers only (5.4% of an 8B model), so shipping them alone is
enough: OUT/patch/patch.safetensors holds the changed tensors under their checkpoint
names, and patch_config.json the base model, a fingerprint of the base tensors the
patch replaces (sha256 over their original bytes, in name order), the method and its
options. Applying it to any other weights is refused: the fingerprint would differ.
Plain transformers can apply it too: load_state_dict(load_file(...), strict=False).

patch_config.json also records how far the run moved the weights (weight_change): a run whose
weights did not move measurably is not an enhanced model, and says so (WeightChange).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from lensml import __version__
from lensml.errors import LensError
from lensml.io import dumps, staged_dir
from lensml.results.rundir import RunDir

WEIGHTS = "patch.safetensors"
CONFIG = "patch_config.json"


def fingerprint(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over the names, dtypes, shapes and raw bytes of tensors, in name order."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def snapshot(model, names: list[str]) -> dict[str, torch.Tensor]:
    """CPU copies of the named parameters, taken before training changes them."""
    params = dict(model.named_parameters())
    return {n: params[n].detach().to("cpu", copy=True) for n in names}


@dataclass
class WeightChange:
    """How far training moved the trained tensors, each measured against its own scale.

    relative: the largest over tensors of max|W_after - W_before| / max|W_before| (an all-zero tensor is
    measured against the largest weight of all trained tensors). The weights moved measurably when it
    exceeds bound = eps(dtype)^2, the square of the dtype's relative resolution (float32 1.4e-14,
    float16 9.5e-7, bfloat16 6.1e-5): any real optimiser step (Adam moves a weight by about lr,
    and a bf16 weight by at least one unit in its last place) is orders of magnitude above it,
    while a learning rate of 1e-30 or all-zero loss weights stay orders of magnitude below.
    """

    relative: float
    tensor: str | None        # the tensor with the largest relative change
    bound: float
    changed_tensors: int      # tensors whose bytes differ at all
    tensors: int

    @property
    def moved(self) -> bool:
        return self.relative > self.bound

    def to_dict(self) -> dict:
        return {**asdict(self), "moved": self.moved}

    def describe(self) -> str:
        if not self.changed_tensors:
            return f"none of the {self.tensors} trained tensors changed at all"
        return (f"the largest change is {self.relative:.2g} of its tensor's largest weight ({self.tensor}), "
                f"below {self.bound:.2g}, the resolution of the weights' dtype squared")


@torch.no_grad()
def weight_change(model, originals: dict[str, torch.Tensor]) -> WeightChange:
    """Compare the named parameters of model with their copies taken before training (snapshot)."""
    params = dict(model.named_parameters())
    scale = max((float(t.abs().max()) for t in originals.values() if t.numel()), default=0.0)
    best, where, changed, bound = 0.0, None, 0, 0.0
    for name, before in originals.items():
        after = params[name].detach()
        bound = max(bound, torch.finfo(before.dtype).eps ** 2) if before.is_floating_point() else bound
        if after.numel() == 0:
            continue
        diff = float((after.float() - before.to(after.device).float()).abs().max())
        if diff == 0.0:
            continue
        changed += 1
        own = float(before.abs().max())
        rel = diff / (own or scale or 1.0)
        if rel > best:
            best, where = rel, name
    return WeightChange(best, where, bound, changed, len(originals))


def save_patch(model, originals: dict[str, torch.Tensor], directory: str | os.PathLike, info: dict) -> dict:
    """Write the tensors that differ from originals; returns the patch config (empty tensors list if none)."""
    params = dict(model.named_parameters())
    changed = {n: params[n].detach().to("cpu").contiguous() for n, before in originals.items()
               if not torch.equal(params[n].detach().to("cpu"), before)}
    cfg = {"format": "lensml-patch", "version": 1, "lensml_version": __version__, **info,
           "base_fingerprint": fingerprint({n: originals[n] for n in changed}),
           "tensors": sorted(changed), "parameters": sum(t.numel() for t in changed.values()),
           "dtype": str(next(iter(changed.values())).dtype) if changed else None}
    with staged_dir(directory, overwrite=True) as tmp:
        save_file(changed, str(tmp / WEIGHTS), metadata={"format": "pt"})
        (tmp / CONFIG).write_text(dumps(cfg), encoding="utf-8")
    return cfg


def read_weight_change(directory: str | os.PathLike) -> dict | None:
    """The weight_change a patch folder records (WeightChange.to_dict), None when it has none."""
    path = Path(directory) / CONFIG
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    change = doc.get("weight_change") if isinstance(doc, dict) else None
    return change if isinstance(change, dict) else None


def read_patch(directory: str | os.PathLike) -> tuple[dict, dict[str, torch.Tensor]]:
    directory = Path(directory)
    if RunDir(directory).patch.is_dir():  # a run folder
        directory = RunDir(directory).patch
    if not (directory / CONFIG).is_file() or not (directory / WEIGHTS).is_file():
        raise LensError(f"{directory} is not a lensml patch (no {CONFIG} / {WEIGHTS}): point at OUT/patch of a run")
    try:
        cfg = json.loads((directory / CONFIG).read_text(encoding="utf-8"))
        tensors = load_file(str(directory / WEIGHTS))
    except (ValueError, UnicodeDecodeError, SafetensorError, OSError) as err:
        raise LensError(f"{directory} holds a damaged patch: copy it again from the run") from err
    if not isinstance(cfg, dict) or sorted(tensors) != sorted(cfg.get("tensors", [])):
        raise LensError(f"{directory}: {CONFIG} does not list the tensors of {WEIGHTS}: copy it again from the run")
    return cfg, tensors


@torch.no_grad()
def apply_patch(model, patch_dir: str | os.PathLike) -> dict:
    """Replace the patched tensors of model in place, after checking it is the base the patch was made on."""
    cfg, tensors = read_patch(patch_dir)
    params = dict(model.named_parameters())
    missing = [n for n in tensors if n not in params]
    if missing:
        raise LensError(f"the model has no tensor {missing[0]}: this patch is for {cfg.get('base_model')}")
    current = {n: params[n] for n in tensors}
    if fingerprint(current) != cfg["base_fingerprint"]:
        dtypes = {str(t.dtype) for t in current.values()}
        hint = (f" (the patch was made on {cfg.get('dtype')} weights, these are {', '.join(sorted(dtypes))}: "
                f"load the base with --dtype to match)" if cfg.get("dtype") not in dtypes else "")
        raise LensError(f"these weights are not the base this patch was made on ({cfg.get('base_model')}){hint}: "
                        f"load that model")
    for name, value in tensors.items():
        params[name].copy_(value.to(params[name].device))
    return cfg
