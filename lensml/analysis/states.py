"""What a run folder says about itself, and the per-prompt states of its two models.

Everything a picture of a run needs is read from the run: the base model from manifest.json,
the enhanced one from OUT/model, the held-out prompts and the templating options from the
config the run recorded. States are taken exactly as probing takes them (lensml.lens.probing:
same chat template, left cut to the probe's token budget, last real token, the last entry
after the final norm), so the means of these states are the run's own language means,
computed on held-out prompts.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from lensml.data.loaders import load_rows
from lensml.errors import LensError
from lensml.lens.probing import last_token_states
from lensml.progress import progress
from lensml.results.rundir import RunDir
from lensml.runtime.models import ModelConfig, input_device, load_model
from lensml.runtime.shared_prefix import batch_for
from lensml.runtime.templating import encode_prompts, length_sorted_batches
from lensml.runtime.topblock import shared_prefix

log = logging.getLogger(__name__)

NOT_A_RUN = "pass a folder written by `lens run` or `lens train`"


@dataclass
class RunFolder:
    """The parts of a run folder the analysis reads, checked before any model loads."""

    rundir: RunDir
    base_model: str
    config: dict

    @property
    def path(self) -> Path:
        return self.rundir.path

    @property
    def model_dir(self) -> Path:
        return self.rundir.model

    @property
    def languages(self) -> list[str]:
        """Central first, then the targets (RunConfig.languages)."""
        central = self.config.get("central", "en")
        langs = self.config.get("langs") or []
        return [central] + [lang for lang in langs if lang != central]

    def num_layers(self) -> int | None:
        """Decoder layers of the enhanced model per its config.json (None if it does not say)."""
        try:
            cfg = json.loads((self.model_dir / "config.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        for doc in (cfg, cfg.get("text_config") or {}):
            if isinstance(doc, dict) and isinstance(doc.get("num_hidden_layers"), int):
                return doc["num_hidden_layers"]
        return None

    def model_config(self, side: str, device: str, dtype: str) -> ModelConfig:
        """How to load one side: the base as the run loaded it (template, revision, remote code), or OUT/model."""
        recorded = self.config.get("model") or {}
        trust = bool(recorded.get("trust_remote_code", False))
        if side == "enhanced":
            return ModelConfig(model=str(self.model_dir), device=device, dtype=dtype, trust_remote_code=trust)
        common = dict(template=recorded.get("template"), revision=recorded.get("revision"), device=device,
                      dtype=dtype, trust_remote_code=trust)
        if self.base_model.endswith(".gguf"):
            return ModelConfig(gguf=self.base_model, **common)
        return ModelConfig(model=self.base_model, **common)


def read_run(path: str | Path) -> RunFolder:
    """The run folder at path, or a one-line LensError naming what is missing and the fix."""
    run = RunDir(path)
    manifest = run.read_manifest(NOT_A_RUN)
    if not isinstance(manifest.get("base_model"), str) or not isinstance(manifest.get("config"), dict):
        raise LensError(f"{run.manifest} names no base_model or config: {NOT_A_RUN}")
    if run.model_or_none() is None:
        kind = manifest.get("kind", "unknown")
        raise LensError(f"{run.path} has no trained model in model/ (a '{kind}' folder): {NOT_A_RUN}")
    return RunFolder(run, manifest["base_model"], manifest["config"])


def held_out_prompts(run: RunFolder, data: str | None = None, samples: int | None = None) -> tuple[dict[str, list[str]], str]:
    """({lang: prompts}, source): the run's held-out prompts (its eval data and samples) unless overridden."""
    recorded = run.config.get("eval") or {}
    source = data or recorded.get("data") or "embedded:heldout"
    if samples is not None and samples < 1:
        raise LensError(f"--samples must be at least 1, got {samples}")
    langs = run.languages
    rows = load_rows(source, langs)
    n = samples or recorded.get("samples") or len(rows)
    if len(rows) < n:
        raise LensError(f"data {source} has {len(rows)} prompts, {n} asked: lower --samples or pass other --data")
    return {lang: [r[lang] for r in rows[:n]] for lang in langs}, source


def collect_states(model, tokenizer, prompts: dict[str, list[str]], max_length: int | None, batch_size: int,
                   system: str | None = None, desc: str = "states") -> tuple[torch.Tensor, list[str]]:
    """(n_layers, N, d) float32 CPU last-token states of every prompt, languages in order; and N labels."""
    device = input_device(model)
    blocks, labels = [], []
    for lang, texts in prompts.items():
        ids = encode_prompts(tokenizer, texts, max_length, system)
        pre, _, tails = shared_prefix(model, ids, True)  # the template prefix runs once, as in probing
        chunks, order = [], []
        for idx in progress(length_sorted_batches([len(x) for x in tails], batch_size), desc=f"{desc} {lang}",
                            leave=False):
            batch, past = batch_for(pre, ids, tails, idx, tokenizer.pad_token_id)
            chunks.append(last_token_states(model, batch.to(device), past=past).float().cpu())
            order.extend(idx)
        blocks.append(torch.cat(chunks, dim=1)[:, torch.argsort(torch.tensor(order))])
        labels.extend([lang] * len(texts))
    return torch.cat(blocks, dim=1), labels


def model_states(run: RunFolder, prompts: dict[str, list[str]], device: str = "auto",
                 dtype: str = "auto") -> tuple[dict[str, torch.Tensor], list[str]]:
    """{"base": states, "enhanced": states} and the labels; one model in memory at a time."""
    probe = run.config.get("probe") or {}
    states, labels = {}, []
    for side in ("base", "enhanced"):
        cfg = run.model_config(side, device, dtype)
        log.info("%s model: loading %s", side, cfg.gguf or cfg.model)
        model, tok, _ = load_model(cfg)
        states[side], labels = collect_states(model, tok, prompts, probe.get("max_length", 128),
                                              probe.get("batch_size", 32), probe.get("system_prompt"), desc=side)
        del model
    if states["base"].shape != states["enhanced"].shape:
        raise LensError(f"the base model {run.base_model} and {run.model_dir} differ in shape "
                        f"({tuple(states['base'].shape)} vs {tuple(states['enhanced'].shape)}): "
                        f"the manifest names another base than the one trained")
    return states, labels
