"""LENS language subspace manipulation (LSM): train the top decoder layers on the three losses.

The frozen original model is needed only for reference states, and the layers
below the start layer never change: one no-grad pass over the data caches both
(start-layer inputs and reference final states, lensml.runtime.topblock), then every step
runs only the top block. One model copy in memory, no second reference model.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import torch

from lensml import training
from lensml.errors import LensError
from lensml.lens.losses import LensObjective, LossConfig
from lensml.lens.reference_cache import ReferenceCache, build_cache
from lensml.lens.subspace import LanguageSubspace
from lensml.methods.base import Method, MethodInputs
from lensml.runtime.models import input_device
from lensml.runtime.templating import Batch, gather_last, masked_mean
from lensml.runtime.topblock import TopBlock
from lensml.training import TrainConfig, TrainResult, optimise

TERMS = ("loss", "agnostic", "specific", "retain")
SMALL_MODEL = 1e9  # below this, the retain defaults measured on SmolLM2-135M apply


def size_defaults(cfg: TrainConfig, num_parameters: int) -> TrainConfig:
    """lensml.training.size_defaults (the lr), then LENS's own loss options left unset (None), by model size.

    Large models (the paper's 7-8B) get the paper's and authors' values: L3 on mean-pooled
    states, lambda3 = 1. Small models need a larger step, and then the authors' mean-pooled
    retain term lets English drift (measured on SmolLM2-135M: English fidelity 100% -> 57.5%,
    answer NLL +10.9%); holding the last token too with lambda3 = 10 keeps English intact
    (NLL -0.3%). Only LENS reads train.loss, so only LENS resolves it.
    """
    small = num_parameters < SMALL_MODEL
    loss = dataclasses.replace(cfg.loss,
                               retain=cfg.loss.retain or ("both" if small else "mean"),
                               lambda3=cfg.loss.lambda3 if cfg.loss.lambda3 is not None else (10.0 if small else 1.0))
    return dataclasses.replace(training.size_defaults(cfg, num_parameters), loss=loss)


def _languages(languages: list[str], central: str) -> list[str]:
    return [central] + [lang for lang in languages if lang != central]


def _concat(batches: list[Batch]) -> Batch:
    return Batch(*(torch.cat([getattr(b, k) for b in batches]) for k in ("input_ids", "attention_mask", "position_ids")))


def _offload_unused(model, block: TopBlock) -> list[torch.nn.Module]:
    """Move the embeddings and LM head to the CPU: the cached forward needs neither."""
    trained = {id(p) for p in block.parameters()}
    modules = [m for m in (model.get_input_embeddings(), model.get_output_embeddings()) if m is not None]
    modules = [m for m in modules if not any(id(p) in trained for p in m.parameters())]
    for m in modules:
        m.to("cpu")
    return modules


def micro_step(block: TopBlock, cache: ReferenceCache, objective: LensObjective, idx: list[int], langs: list[str],
               device, weight: float | None) -> dict[str, float]:
    """Forward the top block for prompts idx in every language; backward scaled by weight (None: no backward)."""
    if cache.prefix:
        states, refs = _states_after_prefix(block, cache, idx, langs, device)
    else:
        width = max(len(cache.ids[lang][i]) for lang in langs for i in idx)
        parts = [cache.batch(lang, idx, width, device) for lang in langs]
        batch = _concat([p[0] for p in parts])
        final = block.forward(batch, torch.cat([p[1] for p in parts])).float()
        last, mean = gather_last(final, batch.attention_mask), masked_mean(final, batch.attention_mask)
        k = len(idx)
        states = {lang: {"last": last[j * k:(j + 1) * k], "mean": mean[j * k:(j + 1) * k]}
                  for j, lang in enumerate(langs)}
        refs = {lang: p[2] for lang, p in zip(langs, parts)}
    final = next(iter(states.values()))["last"]
    if final.device != objective.a.device:  # the last layers may sit on another GPU under a device_map
        objective = objective.to(final.device)
        refs = {k: {kk: vv.to(final.device) for kk, vv in v.items()} for k, v in refs.items()}
    terms = objective(states, refs)
    if weight is not None:
        (terms["loss"] * weight).backward()
    return {k: float(v.detach()) if torch.is_tensor(v) else float(v) for k, v in terms.items()}


def _states_after_prefix(block: TopBlock, cache: ReferenceCache, idx: list[int], langs: list[str], device):
    """The step's states with the shared prefix run once: one forward per language, each only as
    wide as its own prompts (Chinese prompts no longer pad English ones to their length). Prompts cut
    from the left past the prefix (cache.shared) run whole, those of every language in one more forward."""
    skip = cache.prefix
    follow = {lang: [i for i in idx if cache.shared[lang][i]] for lang in langs}
    parts = {lang: cache.batch(lang, rows, max(len(cache.ids[lang][i]) for i in rows) - skip, device, skip)
             for lang, rows in follow.items() if rows}
    got: dict[str, list] = {}
    if parts:
        head, finals = block.after_prefix(cache.prefix_hidden(device), [(b, h) for b, h, _ in parts.values()])
        head_sum = head[0].float().sum(0)
        for (lang, (b, _, ref)), final in zip(parts.items(), finals):
            final, own = final.float(), b.own_mask
            m = own.to(final.dtype).unsqueeze(-1)
            mean = ((final * m).sum(1) + head_sum) / (m.sum(1) + skip)
            got[lang] = [({"last": gather_last(final, own), "mean": mean}, ref)]
    whole = {lang: rows for lang in langs if (rows := [i for i in idx if not cache.shared[lang][i]])}
    if whole:  # cut prompts are all as long as the budget: every language's in one forward, next to no padding
        width = max(len(cache.ids[lang][i]) for lang, rows in whole.items() for i in rows)
        cut = [cache.batch(lang, rows, width, device) for lang, rows in whole.items()]
        batch = _concat([b for b, _, _ in cut])
        final = block.forward(batch, torch.cat([h for _, h, _ in cut])).float()
        last, mean, at = gather_last(final, batch.attention_mask), masked_mean(final, batch.attention_mask), 0
        for (lang, rows), (_, _, ref) in zip(whole.items(), cut):
            own = slice(at, at + len(rows))
            got.setdefault(lang, []).append(({"last": last[own], "mean": mean[own]}, ref))
            at += len(rows)
    states, refs = {}, {}
    for lang in langs:
        if len(got[lang]) == 1:
            states[lang], refs[lang] = got[lang][0]
            continue
        pos = {i: k for k, i in enumerate(follow[lang] + whole[lang])}
        order = [pos[i] for i in idx]  # back to the rows' order in idx
        states[lang], refs[lang] = ({k: torch.cat([d[k] for d in ds])[order] for k in ("last", "mean")}
                                    for ds in ([s for s, _ in got[lang]], [r for _, r in got[lang]]))
    return states, refs


def train(model, tokenizer, subspace: LanguageSubspace, pairs: list[dict[str, str]], languages: list[str],
          central: str, cfg: TrainConfig, cache: ReferenceCache | None = None,
          log_path: Path | None = None) -> TrainResult:
    """Train the top block in place on parallel prompts with the LENS objective.

    `cache` lets several trainings of the same original model share one reference pass.
    """
    langs = _languages(languages, central)
    device = input_device(model)
    t0 = time.perf_counter()
    if cache is None:
        cache = build_cache(model, tokenizer, pairs, languages, central, cfg)
    block = TopBlock(model, cfg.start_layer, as_tuple=cache.as_tuple)
    if cache.start != block.start:
        raise LensError(f"reference cache was built for start layer {cache.start}, training starts at {block.start}")
    for p in model.parameters():
        p.requires_grad_(False)
    params = block.parameters()
    for p in params:
        p.requires_grad_(True)
    total = sum(p.numel() for p in model.parameters())
    cfg = size_defaults(cfg, total)
    result = TrainResult(method="lens", steps=0, lr=cfg.lr, trainable_parameters=sum(p.numel() for p in params),
                         total_parameters=total, resolved={**dataclasses.asdict(cfg), "role": "paper",
                                                           "instruction_rows": len(cache)})
    result.timings_s["reference_cache"] = time.perf_counter() - t0
    objective = LensObjective.from_subspace(subspace, langs, central, cfg.loss, device)
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    offloaded = _offload_unused(model, block) if cfg.offload_unused and device.type == "cuda" else []
    model.train()
    try:
        optimise(params, len(cache), cfg, lambda idx, w: micro_step(block, cache, objective, idx, langs, device, w),
                 result, TERMS, device, log_path, model=model)
    finally:
        for module in offloaded:
            module.to(device)
        model.eval()
        if cfg.gradient_checkpointing:
            model.gradient_checkpointing_disable()
        for p in params:
            p.requires_grad_(False)
    return result


@torch.no_grad()
def evaluate_loss(model, subspace: LanguageSubspace, cache: ReferenceCache, central: str,
                  loss_cfg: LossConfig, batch_size: int = 8) -> dict[str, float]:
    """Loss terms of the current weights against a cache's reference states, averaged over its prompts."""
    langs = _languages(cache.languages, central)
    device = input_device(model)
    loss_cfg = size_defaults(TrainConfig(loss=loss_cfg), sum(p.numel() for p in model.parameters())).loss
    block = TopBlock(model, cache.start, as_tuple=cache.as_tuple)
    objective = LensObjective.from_subspace(subspace, langs, central, loss_cfg, device)
    n = len(cache)
    totals: dict[str, float] = {}
    for s in range(0, n, batch_size):
        idx = list(range(s, min(n, s + batch_size)))
        for k, v in micro_step(block, cache, objective, idx, langs, device, None).items():
            totals[k] = totals.get(k, 0.0) + v * len(idx) / n
    return totals


class LensMethod(Method):
    description = "LENS: align with the central language in the agnostic subspace, push along the language's own direction, keep the central language"
    needs_subspace = True
    uses_reference_cache = True

    def trainable_names(self, model, cfg: TrainConfig) -> list[str]:
        ids = {id(p) for p in TopBlock(model, cfg.start_layer).parameters()}
        return [name for name, p in model.named_parameters() if id(p) in ids]

    def train(self, model, tokenizer, inputs: MethodInputs, cfg: TrainConfig,
              log_path: Path | None = None, options=None) -> TrainResult:
        if inputs.subspace is None:
            raise LensError("LENS needs a probed subspace: run the probe stage or pass --subspace")
        return train(model, tokenizer, inputs.subspace, inputs.rows, inputs.languages, inputs.central, cfg,
                     cache=inputs.cache, log_path=log_path)
