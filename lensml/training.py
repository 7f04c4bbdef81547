"""Language subspace manipulation (LSM): train the top decoder layers.

The frozen original model is needed only for reference states, and the layers
below the start layer never change: one no-grad pass over the data caches both
(start-layer inputs and reference final states), then every step runs only the
top block. One model copy in memory, no second reference model.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from dataclasses import dataclass, field

import torch
from lensml.progress import progress as tqdm

from lensml import distributed
from lensml.caching import TopBlock
from lensml.errors import LensError
from lensml.losses import LossConfig, lens_loss
from lensml.models import input_device
from lensml.optim import make_optimizer
from lensml.subspace import LanguageSubspace
from lensml.templating import Batch, encode_prompts, gather_last, length_sorted_batches, masked_mean, pad

log = logging.getLogger(__name__)
TERMS = ("loss", "agnostic", "specific", "retain")


@dataclass
class TrainConfig:
    """Optimisation of the top layers."""

    start_layer: int = field(default=-2, metadata={"help": "first trained decoder layer; negative counts from the top (-2: top two)"})
    lr: float | None = field(default=None, metadata={"help": "peak learning rate (default: by model size, see lensml.training.default_lr)"})
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
    loss: LossConfig = field(default_factory=LossConfig)


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


SMALL_MODEL = 1e9  # below this, the retain defaults measured on SmolLM2-135M apply


def size_defaults(cfg: TrainConfig, num_parameters: int) -> TrainConfig:
    """Fill the options left unset (None) by model size.

    Large models (the paper's 7-8B) get the paper's and authors' values: lr 1e-5,
    L3 on mean-pooled states, lambda3 = 1. Small models need a larger step, and then
    the authors' mean-pooled retain term lets English drift (measured on SmolLM2-135M:
    English fidelity 100% -> 57.5%, answer NLL +10.9%); holding the last token too with
    lambda3 = 10 keeps English intact (NLL -0.3%).
    """
    small = num_parameters < SMALL_MODEL
    loss = dataclasses.replace(cfg.loss,
                               retain=cfg.loss.retain or ("both" if small else "mean"),
                               lambda3=cfg.loss.lambda3 if cfg.loss.lambda3 is not None else (10.0 if small else 1.0))
    return dataclasses.replace(cfg, lr=cfg.lr if cfg.lr is not None else default_lr(num_parameters), loss=loss)


@dataclass
class TrainResult:
    steps: int
    lr: float
    history: list[dict] = field(default_factory=list)
    timings_s: dict = field(default_factory=dict)
    trainable_parameters: int = 0
    total_parameters: int = 0
    resolved: dict = field(default_factory=dict)  # the options actually used (size defaults filled in)


class _Cache:
    """Per-prompt start-layer inputs and reference states, for every language.

    Under data parallelism a process caches only the prompts it owns (distributed.my_share).
    """

    def __init__(self, block: TopBlock, ids: dict[str, list[list[int]]], pad_id: int, batch_size: int, device):
        self.ids, self.hidden, self.last, self.mean = ids, {}, {}, {}
        model_device = input_device(block.model)
        for lang, seqs in ids.items():
            hidden, last, mean = [None] * len(seqs), [None] * len(seqs), [None] * len(seqs)
            owned = distributed.my_share(list(range(len(seqs))))
            for group in tqdm(length_sorted_batches([len(seqs[i]) for i in owned], batch_size), desc=f"cache {lang}",
                              leave=False):
                idx = [owned[g] for g in group]
                batch = pad([seqs[i] for i in idx], pad_id, "left").to(model_device)
                h_in, final = block.full(batch)
                last_b, mean_b = gather_last(final, batch.attention_mask), masked_mean(final, batch.attention_mask)
                for row, i in enumerate(idx):
                    hidden[i] = h_in[row, -len(seqs[i]):].to(device, copy=True)
                    last[i], mean[i] = last_b[row].float().to(device), mean_b[row].float().to(device)
            self.hidden[lang], self.last[lang], self.mean[lang] = hidden, last, mean
        self.as_tuple = block.as_tuple
        self.start = block.start

    def batch(self, lang: str, idx: list[int], pad_id: int, width: int, device):
        """Left-padded ids and cached inputs for prompts idx, padded to width tokens."""
        seqs = [self.ids[lang][i] for i in idx]
        b = pad(seqs, pad_id, "left", width)
        first = self.hidden[lang][idx[0]]
        h = first.new_zeros((len(seqs), width, first.shape[-1]))
        for row, i in enumerate(idx):
            h[row, width - len(seqs[row]):] = self.hidden[lang][i]
        refs = {"last": torch.stack([self.last[lang][i] for i in idx]).to(device),
                "mean": torch.stack([self.mean[lang][i] for i in idx]).to(device)}
        return b.to(device), h.to(device), refs


def _concat(batches: list[Batch]) -> Batch:
    return Batch(*(torch.cat([getattr(b, k) for b in batches]) for k in ("input_ids", "attention_mask", "position_ids")))


def _languages(languages: list[str], central: str) -> list[str]:
    return [central] + [lang for lang in languages if lang != central]


def _offload_unused(model, block: TopBlock) -> list[torch.nn.Module]:
    """Move the embeddings and LM head to the CPU: the cached forward needs neither."""
    trained = {id(p) for p in block.parameters()}
    modules = [m for m in (model.get_input_embeddings(), model.get_output_embeddings()) if m is not None]
    modules = [m for m in modules if not any(id(p) in trained for p in m.parameters())]
    for m in modules:
        m.to("cpu")
    return modules


def _cache_device(choice: str, device: torch.device, model, ids: dict[str, list[list[int]]]) -> torch.device:
    """auto: keep the cache beside the model unless it would take over half of the free GPU memory."""
    if choice != "auto":
        return torch.device(choice)
    if device.type != "cuda":
        return device
    width = model.get_input_embeddings().embedding_dim
    dtype_bytes = next(model.parameters()).element_size()
    need = sum(len(s) for seqs in ids.values() for s in seqs) * width * dtype_bytes
    free, _total = torch.cuda.mem_get_info(device)
    if need > free / 2:
        log.info("reference cache (%.1f GB) kept on the CPU: %.1f GB free on %s", need / 1e9, free / 1e9, device)
        return torch.device("cpu")
    return device


def build_cache(model, tokenizer, pairs: list[dict[str, str]], languages: list[str], central: str,
                cfg: TrainConfig) -> _Cache:
    """One no-grad pass: start-layer inputs and reference states of every prompt and language."""
    langs = _languages(languages, central)
    n = cfg.samples if cfg.samples is not None else len(pairs)
    if len(pairs) < n or n < 1:
        raise LensError(f"training data has {len(pairs)} prompts, {n} asked: lower --train-samples or add data")
    for lang in langs:
        if any(not p.get(lang) for p in pairs[:n]):
            raise LensError(f"training data lacks '{lang}' text in some rows: every row needs all of {','.join(langs)}")
    device = input_device(model)
    ids = {lang: encode_prompts(tokenizer, [p[lang] for p in pairs[:n]], cfg.max_length, cfg.system_prompt)
           for lang in langs}
    cache_device = _cache_device(cfg.cache_device, device, model, ids)
    model.eval()
    return _Cache(TopBlock(model, cfg.start_layer), ids, tokenizer.pad_token_id, max(cfg.batch_size, 16), cache_device)


def _loss_targets(subspace: LanguageSubspace, langs: list[str], loss_cfg: LossConfig, device):
    """Final-layer projectors (a, M_s) and directions delta_l, in float32 on the model's device."""
    a, m_s = (t.to(device=device, dtype=torch.float32) for t in subspace.projectors(-1, loss_cfg.normalize_agnostic))
    deltas = {lang: subspace.direction(lang, -1).to(device=device, dtype=torch.float32) for lang in langs}
    return a, m_s, deltas


def train(model, tokenizer, subspace: LanguageSubspace, pairs: list[dict[str, str]], languages: list[str],
          central: str, cfg: TrainConfig, cache: _Cache | None = None) -> TrainResult:
    """Train the top block in place on parallel prompts; returns losses and timings.

    `cache` lets several trainings of the same original model share one reference pass.
    """
    from transformers import get_cosine_schedule_with_warmup

    langs = _languages(languages, central)
    device = input_device(model)
    t0 = time.perf_counter()
    if cache is None:
        cache = build_cache(model, tokenizer, pairs, languages, central, cfg)
    block = TopBlock(model, cfg.start_layer, as_tuple=cache.as_tuple)
    if cache.start != block.start:
        raise LensError(f"reference cache was built for start layer {cache.start}, training starts at {block.start}")
    n = len(cache.ids[central])
    for p in model.parameters():
        p.requires_grad_(False)
    params = block.parameters()
    for p in params:
        p.requires_grad_(True)
    total = sum(p.numel() for p in model.parameters())
    cfg = size_defaults(cfg, total)
    lr = cfg.lr
    result = TrainResult(steps=0, lr=lr, trainable_parameters=sum(p.numel() for p in params), total_parameters=total,
                         resolved=dataclasses.asdict(cfg))
    result.timings_s["reference_cache"] = time.perf_counter() - t0

    a, m_s, deltas = _loss_targets(subspace, langs, cfg.loss, device)
    steps_per_epoch = math.ceil(n / cfg.batch_size)
    total_steps = steps_per_epoch * cfg.epochs
    opt = make_optimizer(params, lr, cfg.weight_decay, cfg.seed)
    sched = get_cosine_schedule_with_warmup(opt, math.ceil(cfg.warmup_ratio * total_steps), total_steps)
    if cfg.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    gen = torch.Generator().manual_seed(cfg.seed)
    micro = max(1, math.ceil(cfg.batch_size / cfg.grad_accum / distributed.world_size()))

    t1 = time.perf_counter()
    offloaded = _offload_unused(model, block) if cfg.offload_unused and device.type == "cuda" else []
    model.train()
    bar = tqdm(total=total_steps, desc="training", leave=False)
    try:
        for _epoch in range(cfg.epochs):
            order = torch.randperm(n, generator=gen).tolist()
            for s in range(steps_per_epoch):
                step_idx = order[s * cfg.batch_size:(s + 1) * cfg.batch_size]
                mine = distributed.my_share(step_idx)
                logged = dict.fromkeys(TERMS, 0.0)
                for m in range(0, len(mine), micro):
                    idx = mine[m:m + micro]
                    terms = _micro_step(block, cache, idx, langs, central, tokenizer.pad_token_id, device,
                                        a, m_s, deltas, cfg.loss, weight=len(idx) / len(step_idx))
                    for k, v in terms.items():
                        logged[k] += v * len(idx) / len(step_idx)
                if distributed.is_distributed():
                    distributed.all_reduce_grads(params)
                    summed = distributed.all_reduce_sum(torch.tensor([logged[k] for k in TERMS], device=device))
                    logged = dict(zip(TERMS, summed.tolist()))
                if not all(math.isfinite(v) for v in logged.values()):
                    raise LensError(f"training loss became non-finite at step {result.steps + 1} ({_fmt(logged)}): "
                                    f"lower --lr or check the data and subspace")
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                opt.step()
                sched.step()
                opt.zero_grad(set_to_none=True)
                result.steps += 1
                logged["lr"] = sched.get_last_lr()[0]
                result.history.append({"step": result.steps, **logged})
                bar.set_postfix(loss=f"{logged['loss']:.4g}")
                bar.update()
                log.debug("step %d %s", result.steps, _fmt(logged))
    finally:
        bar.close()
        for module in offloaded:
            module.to(device)
        model.eval()
        if cfg.gradient_checkpointing:
            model.gradient_checkpointing_disable()
        for p in params:
            p.requires_grad_(False)
    result.timings_s["steps"] = time.perf_counter() - t1
    return result


@torch.no_grad()
def evaluate_loss(model, tokenizer, subspace: LanguageSubspace, cache: _Cache, languages: list[str], central: str,
                  loss_cfg: LossConfig, batch_size: int = 8) -> dict[str, float]:
    """Loss terms of the current weights against a cache's reference states, averaged over its prompts."""
    langs = _languages(languages, central)
    device = input_device(model)
    loss_cfg = size_defaults(TrainConfig(loss=loss_cfg), sum(p.numel() for p in model.parameters())).loss
    block = TopBlock(model, cache.start, as_tuple=cache.as_tuple)
    a, m_s, deltas = _loss_targets(subspace, langs, loss_cfg, device)
    n = len(cache.ids[central])
    totals: dict[str, float] = {}
    for s in range(0, n, batch_size):
        idx = list(range(s, min(n, s + batch_size)))
        terms = _micro_step(block, cache, idx, langs, central, tokenizer.pad_token_id, device, a, m_s, deltas,
                            loss_cfg, weight=None)
        for k, v in terms.items():
            totals[k] = totals.get(k, 0.0) + v * len(idx) / n
    return totals


def _micro_step(block, cache, idx, langs, central, pad_id, device, a, m_s, deltas, loss_cfg, weight) -> dict:
    """Forward the top block for prompts idx in every language; backward scaled by weight (None: no backward)."""
    width = max(len(cache.ids[lang][i]) for lang in langs for i in idx)
    parts = [cache.batch(lang, idx, pad_id, width, device) for lang in langs]
    batch = _concat([p[0] for p in parts])
    final = block.forward(batch, torch.cat([p[1] for p in parts])).float()
    last, mean = gather_last(final, batch.attention_mask), masked_mean(final, batch.attention_mask)
    k = len(idx)
    states = {lang: {"last": last[j * k:(j + 1) * k], "mean": mean[j * k:(j + 1) * k]} for j, lang in enumerate(langs)}
    refs = {lang: p[2] for lang, p in zip(langs, parts)}
    if final.device != a.device:  # the last layers may sit on another GPU under a device_map
        a, m_s = a.to(final.device), m_s.to(final.device)
        deltas = {k: v.to(final.device) for k, v in deltas.items()}
        refs = {k: {kk: vv.to(final.device) for kk, vv in v.items()} for k, v in refs.items()}
    terms = lens_loss(states, refs, central, a, m_s, deltas, loss_cfg)
    if weight is not None:
        (terms["loss"] * weight).backward()
    return {k: float(v.detach()) if torch.is_tensor(v) else float(v) for k, v in terms.items()}


def _fmt(terms: dict) -> str:
    return ", ".join(f"{k}={v:.4g}" for k, v in terms.items())
