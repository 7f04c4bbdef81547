"""`lens run --dry-run` and `lens train --dry-run`: what a job would do, resolved, with nothing loaded or written.

A job on an 8B model fails expensively when a path is wrong or an option means something else
than its user thought. The plan reads what is cheap to read and checks what can be checked:
the options (validated when built), the local data files (read and checked as the job would;
Hub datasets are named, not fetched), the output folder (free, or replaceable, and its parent
writable, checked without writing), the model's config (config.json, or a GGUF file's key-values;
the model is built on the meta device for its parameter count and structure, no weights), and
from those the options the job would resolve by model size, the trained layers and parameters,
the steps, and the files it would write.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM

from lensml import methods
from lensml.data.loaders import AYA_HUB_ID, BACTRIAN_HUB_ID
from lensml.errors import LensError
from lensml.export.gguf import SUPPORTED as GGUF_EXPORTS
from lensml.io import check_free
from lensml.lens.subspace import LanguageSubspace
from lensml.methods import lens
from lensml.recipes.config import RunConfig
from lensml.recipes.stages import gguf_source, load_inputs, replaceable, response_languages
from lensml.results.rundir import RunDir
from lensml.runtime.families import Family, check_family, read_config
from lensml.runtime.gguf_config import config_of, read_metadata
from lensml.runtime.models import PACKAGED_MODELS, check_hub, resolve_device, resolve_dtype
from lensml.training import size_defaults


@dataclass
class Plan:
    """What a job would do: its model, data, training and outputs, and its options resolved."""

    kind: str                       # run or train
    method: str
    model: str                      # as given (--model, or --gguf)
    source: str                     # where the weights would come from
    family: Family
    device: str
    dtype: str
    languages: list[str]
    data: dict[str, str]            # role -> what was read (or why not)
    rank: int | None                # r of the probed subspace (LENS, steering)
    trained_layers: list[int]
    trainable_parameters: int
    steps: int | None               # optimiser steps of the epochs over the training rows (a method with stages of its
                                    # own, qalign, runs more); None when the rows are not read (Hub data)
    outputs: list[str]              # what the job would write
    resolved: RunConfig             # the options with size defaults filled in
    notes: list[str] = field(default_factory=list)

    @property
    def trainable_share(self) -> float:
        return self.trainable_parameters / self.family.parameters if self.family.parameters else 0.0


def is_hub_data(source: str) -> bool:
    """A data source that would be fetched from the Hub (not read by a dry run)."""
    base = source.split("#")[0]
    return base in (AYA_HUB_ID, BACTRIAN_HUB_ID) or base.startswith("hf:")


def _writable(folder: Path) -> None:
    """check_writable without its test file: the nearest existing ancestor must take new entries."""
    parent = folder.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise LensError(f"cannot write to {folder.parent}: choose another --out")


def model_config(cfg: RunConfig):
    """(transformers config, where the weights would come from), read without weights."""
    if cfg.model.gguf or cfg.model.model in PACKAGED_MODELS:
        path = gguf_source(cfg)
        if not path.is_file():
            raise LensError(f"GGUF file {path} does not exist: check --gguf")
        arch = read_metadata(path)[0]["general.architecture"]
        return config_of(path), f"GGUF file {path} ({arch}; converted once to safetensors in the cache)"
    local = Path(cfg.model.model).expanduser()
    if local.exists():
        if not (local / "config.json").is_file():
            raise LensError(f"model directory {local} has no config.json: point --model at a Hugging Face checkpoint")
        return read_config(str(local), cfg.model.trust_remote_code), f"local checkpoint {local}"
    if cfg.model.model.startswith((".", "/", "~")) or cfg.model.model.count("/") > 1:
        raise LensError(f"model path {cfg.model.model} does not exist: check --model")
    check_hub(cfg.model.model, cfg.model.revision)
    config = read_config(cfg.model.model, cfg.model.trust_remote_code, cfg.model.revision)
    return config, f"Hugging Face Hub {cfg.model.model} (config.json read; weights not fetched)"


def _resolved(cfg: RunConfig, parameters: int) -> RunConfig:
    """The size defaults a job fills in: LENS's (lr and its loss options), else training's (the lr)."""
    train = lens.size_defaults(cfg.train, parameters) if cfg.method == "lens" else size_defaults(cfg.train, parameters)
    return dataclasses.replace(cfg, train=train)


def _data(cfg: RunConfig, method, kind: str, probe: bool, held_out: bool) -> tuple[dict, int | None]:
    """What each data source holds (read and checked as the job reads it), or why it was not read."""
    report: dict[str, str] = {}
    hub = {role: is_hub_data(src) for role, src in (("probe", cfg.probe_data), ("train", cfg.train_data),
                                                     ("eval", cfg.eval.data))}
    for role, src in (("probe", cfg.probe_data), ("train", cfg.train_data), ("eval", cfg.eval.data)):
        if hub[role] and (role != "probe" or probe) and (role != "eval" or held_out):
            report[role] = f"{src}: a Hub dataset, not fetched in a dry run"
    inputs = load_inputs(cfg, probe=probe and not hub["probe"], train=not hub["train"],
                         held_out=held_out and not hub["eval"], responses=response_languages(method, cfg))
    rows = None
    if inputs.probe_texts is not None:
        report["probe"] = f"{cfg.probe_data}: " + ", ".join(f"{lang} {len(t)}" for lang, t in inputs.probe_texts.items())
    if inputs.train_rows is not None:
        rows = len(inputs.train_rows) if cfg.train.samples is None else min(cfg.train.samples, len(inputs.train_rows))
        report["train"] = f"{cfg.train_data}: {len(inputs.train_rows)} rows, {rows} used"
    if inputs.held_out is not None:
        report["eval"] = f"{cfg.eval.data}: {len(next(iter(inputs.held_out.values())))} prompts per language"
    return report, rows


def plan_job(cfg: RunConfig, kind: str = "run", subspace: str | None = None, config=None) -> Plan:
    """The plan of `lens run` (kind "run") or `lens train` (kind "train", with --subspace), nothing loaded or written.

    config: the model's transformers config, when the caller has it (tests build one for an 8B shape).
    """
    method = methods.get(cfg.method)
    out = Path(cfg.out)
    check_free(out, cfg.overwrite, replaceable)
    _writable(out)
    notes = []
    sub = None
    if kind == "train" and method.needs_subspace:
        if not subspace:
            raise LensError(f"method '{cfg.method}' needs a probed subspace: pass --subspace DIR (from lens probe or lens run)")
        sub = LanguageSubspace.from_pretrained(RunDir(subspace).find_subspace())
    held_out = kind == "run" and cfg.eval.enabled
    data, rows = _data(cfg, method, kind, probe=kind == "run" and method.needs_subspace, held_out=held_out)
    source = "given config"
    if config is None:
        config, source = model_config(cfg)
    family = check_family(config, cfg.model.gguf or cfg.model.model, cfg.model.trust_remote_code)
    if sub is not None:
        text = config.get_text_config() if hasattr(config, "get_text_config") else config
        sub.check_compatible(text.hidden_size, text.num_hidden_layers, cfg.langs, cfg.central)
    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(config, trust_remote_code=cfg.model.trust_remote_code)
    names = set(method.trainable_names(skeleton, cfg.train))
    params = dict(skeleton.named_parameters())
    trainable = sum(params[n].numel() for n in names if n in params)
    layers = sorted({int(part) for n in names for prev, part in zip(n.split("."), n.split(".")[1:])
                     if prev == "layers" and part.isdigit()})
    if not method.changes_weights:
        notes.append(f"method {cfg.method} changes no weight: it steers at inference, nothing is trained")
    resolved = _resolved(cfg, family.parameters)
    steps = math.ceil(rows / resolved.train.batch_size) * resolved.train.epochs if rows and method.changes_weights else None
    device = resolve_device(cfg.model.device)
    outputs = _outputs(cfg, method, kind, RunDir(out), family, notes)
    rank = None
    if method.needs_subspace:
        rank = sub.rank if sub is not None else (cfg.probe.rank or len(cfg.languages) - 1)
    return Plan(kind, cfg.method, cfg.model.gguf or cfg.model.model, source, family, str(device),
                str(resolve_dtype(cfg.model.dtype, device)).replace("torch.", ""), cfg.languages, data, rank,
                layers, trainable, steps, outputs, resolved, notes)


def _outputs(cfg: RunConfig, method, kind: str, run: RunDir, family: Family, notes: list[str]) -> list[str]:
    files = [run.manifest, run.report, run.losses, run.plot]
    if kind == "run" and cfg.eval.enabled:
        files += [run.answers, run.report_html]
    if method.needs_subspace:
        files.append(run.subspace)
    if not method.changes_weights:
        files.append(run.steering)
    else:
        files += [run.model, run.patch]
        source = gguf_source(cfg)
        if source is not None and cfg.gguf_out != "none":
            arch = read_metadata(source)[0]["general.architecture"]
            files.append(run.gguf)
            if arch not in GGUF_EXPORTS:
                notes.append(f"OUT/model.gguf cannot be written: GGUF export does not know architecture '{arch}' "
                             f"(it knows {', '.join(GGUF_EXPORTS)}), so the job would stop when saving: pass "
                             f"--gguf-out none")
    if kind == "run" and cfg.benchmarks.tasks:
        files.append(run.eval_dir)
    if cfg.push_to_hub:
        notes.append(f"would upload to the Hub repository {cfg.push_to_hub} when the run succeeds")
    return [str(f) for f in files]
