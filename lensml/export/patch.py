"""The LENS patch: only the tensors a run changed, and what they apply to.

A run changes the top layers only (5.4% of an 8B model), so shipping them alone is
enough: OUT/patch/patch.safetensors holds the changed tensors under their checkpoint
names, and patch_config.json the base model, a fingerprint of the base tensors the
patch replaces (sha256 over their original bytes, in name order), the method and its
options. Applying it to any other weights is refused: the fingerprint would differ.
Plain transformers can apply it too: load_state_dict(load_file(...), strict=False).
"""

from __future__ import annotations

import hashlib
import json
import os
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
