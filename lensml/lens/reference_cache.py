"""The reference cache: what the frozen original model says about every training prompt, computed once.

LENS compares the trained top block's states with the original model's (L2, L3), and the
layers below the start layer never change, so one no-grad pass stores, per prompt, the
start-layer input (what the top block is run from) and the reference final state. A layer
sweep fills one cache per start layer from the same forward (fill_caches).
"""

from __future__ import annotations

import logging

import torch

from lensml import distributed
from lensml.errors import LensError
from lensml.progress import progress
from lensml.runtime.models import input_device
from lensml.runtime.shared_prefix import after, batch_for, group_batches, shareable, sharing, split
from lensml.runtime.templating import Batch, encode_prompts, gather_last, pad
from lensml.runtime.topblock import TopBlock, capturing_all, shared_prefix

log = logging.getLogger(__name__)


def fill_caches(model, caches: list["ReferenceCache"], batch_size: int, share_prefix: bool = True) -> None:
    """One no-grad pass over the caches' common prompts fills every one of them, whatever its start layer.

    A layer sweep needs a cache per start layer; the final reference states are the same
    for all, and each start layer's input is one more hook on the same forward.
    """
    first = caches[0]
    if any(c.ids != first.ids for c in caches):
        raise ValueError("caches filled together must hold the same prompts")
    blocks = [TopBlock(model, c.start) for c in caches]
    model_device = input_device(model)
    for lang, seqs in first.ids.items():
        owned = distributed.my_share(list(range(len(seqs))))
        pre, heads, tails = shared_prefix(model, seqs, share_prefix, blocks, partial=True)
        shared = sharing(seqs, tails)  # prompts cut past their template run whole
        for group in progress(group_batches([len(tails[i]) for i in owned], [shared[i] for i in owned], batch_size),
                              desc=f"cache {lang}", leave=False):
            idx = [owned[g] for g in group]
            batch, past = batch_for(pre, seqs, tails, idx, first.pad_id, shared=shared)
            batch = batch.to(model_device)
            with torch.no_grad(), capturing_all(blocks) as captured:
                final = blocks[0]._call(batch, past=past).last_hidden_state
            for cache, cap, head in zip(caches, captured, heads):
                cache.store(lang, idx, cap["h"], final, batch, head if past is not None else None)
    for cache, block in zip(caches, blocks):
        cache.as_tuple = block.as_tuple


def _languages(languages: list[str], central: str) -> list[str]:
    return [central] + [lang for lang in languages if lang != central]


class ReferenceCache:
    """Per-prompt start-layer inputs and reference final states, for every language.

    Filled in one no-grad pass of the original model (its own, `fill`, or the probing
    pass when probe and training prompts are the same, lensml.lens.probing.probe); the
    reference model is then never needed again. Under data parallelism a process
    caches only the prompts it owns (distributed.my_share).
    """

    def __init__(self, ids: dict[str, list[list[int]]], pad_id: int, start: int, device, prefix: int = 0,
                 head: list[int] | None = None):
        self.ids, self.pad_id, self.start, self.device = ids, pad_id, start, device
        self.prefix = prefix  # tokens the prompts start with, run once per step (0: none)
        # which prompts hold those tokens (head; default: every prompt): one cut from the left past them runs whole
        head = head if head is not None else next((s[:prefix] for seqs in ids.values() for s in seqs), [])
        self.shared = {lang: [bool(prefix) and len(s) > prefix and s[:prefix] == head for s in seqs]
                       for lang, seqs in ids.items()}
        self.as_tuple: bool | None = None
        self.hidden = {lang: [None] * len(seqs) for lang, seqs in ids.items()}
        self.last = {lang: [None] * len(seqs) for lang, seqs in ids.items()}
        self.mean = {lang: [None] * len(seqs) for lang, seqs in ids.items()}

    def store(self, lang: str, idx: list[int], h_in: torch.Tensor, final: torch.Tensor, batch: Batch,
              head: tuple[torch.Tensor, torch.Tensor] | None = None) -> None:
        """Keep a batch's start-layer inputs and reference states (rows in the order of idx).

        head: the shared prefix's (start-layer input, final states), each (1, P, d), when the
        batch followed a cached prefix (lensml.runtime.shared_prefix): every prompt's states begin with them.
        """
        own = batch.own_mask
        last_b = gather_last(final, own).float()
        m = own.to(torch.float32).unsqueeze(-1)
        sums, counts = (final.float() * m).sum(1), m.sum(1)
        if head is not None:
            sums, counts = sums + head[1][0].float().sum(0), counts + head[1].shape[1]
        mean_b = sums / counts.clamp(min=1)
        skip = batch.past_length
        for row, i in enumerate(idx):
            h = h_in[row, -(len(self.ids[lang][i]) - skip):]
            h = torch.cat([head[0][0].to(h.device), h]) if head is not None else h
            self.hidden[lang][i] = h.to(self.device, copy=True)
            self.last[lang][i] = last_b[row].to(self.device)
            self.mean[lang][i] = mean_b[row].to(self.device)

    def fill(self, block: TopBlock, batch_size: int, share_prefix: bool = True) -> "ReferenceCache":
        """The cache's own no-grad pass over its prompts."""
        fill_caches(block.model, [self], batch_size, share_prefix)
        return self

    @property
    def complete(self) -> bool:
        """Every prompt this process owns has its states."""
        return all(self.last[lang][i] is not None for lang, seqs in self.ids.items()
                   for i in distributed.my_share(list(range(len(seqs)))))

    @property
    def languages(self) -> list[str]:
        return list(self.ids)

    def __len__(self) -> int:
        return len(next(iter(self.ids.values())))

    def batch(self, lang: str, idx: list[int], width: int, device, skip: int = 0):
        """Left-padded ids, cached inputs and reference states for prompts idx, padded to width tokens.

        skip: leave out the first tokens of every prompt (the shared prefix, self.prefix); the
        batch then follows them (lensml.runtime.shared_prefix.after) and width counts the rest.
        """
        seqs = [self.ids[lang][i][skip:] for i in idx]
        b = pad(seqs, self.pad_id, "left", width)
        b = after(b, skip) if skip else b
        first = self.hidden[lang][idx[0]]
        h = first.new_zeros((len(seqs), width, first.shape[-1]))
        for row, i in enumerate(idx):
            h[row, width - len(seqs[row]):] = self.hidden[lang][i][skip:]
        refs = {"last": torch.stack([self.last[lang][i] for i in idx]).to(device),
                "mean": torch.stack([self.mean[lang][i] for i in idx]).to(device)}
        return b.to(device), h.to(device), refs

    def prefix_hidden(self, device) -> torch.Tensor:
        """(1, P, d) start-layer input of the shared prefix (the same in every prompt)."""
        first = next(h for lang, seqs in self.hidden.items() for h, s in zip(seqs, self.shared[lang])
                     if h is not None and s)  # a process owns a share
        return first[None, :self.prefix].to(device)


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
        log.info("reference cache (%.1f GB) kept on the CPU: %.1f GB free on %s",
                                         need / 1e9, free / 1e9, device)
        return torch.device("cpu")
    return device


def empty_cache(model, tokenizer, pairs: list[dict[str, str]], languages: list[str], central: str,
                cfg) -> ReferenceCache:
    """The cache's prompts, tokenised as training reads them, with nothing computed yet.

    cfg is a TrainConfig (start_layer, max_length, samples, system_prompt, cache_device).
    """
    langs = _languages(languages, central)
    n = cfg.samples if cfg.samples is not None else len(pairs)
    if len(pairs) < n or n < 1:
        raise LensError(f"training data has {len(pairs)} prompts, {n} asked: lower --train-samples or add data")
    for lang in langs:
        if any(not p.get(lang) for p in pairs[:n]):
            raise LensError(f"training data lacks '{lang}' text in some rows: every row needs all of {','.join(langs)}")
    ids = {lang: encode_prompts(tokenizer, [p[lang] for p in pairs[:n]], cfg.max_length, cfg.system_prompt)
           for lang in langs}
    device = _cache_device(cfg.cache_device, input_device(model), model, ids)
    every = [s for seqs in ids.values() for s in seqs]
    head, _ = split(every, shareable(model, every, cfg.share_prefix), partial=True)
    return ReferenceCache(ids, tokenizer.pad_token_id, TopBlock(model, cfg.start_layer).start, device,
                          prefix=len(head), head=head)


def build_cache(model, tokenizer, pairs: list[dict[str, str]], languages: list[str], central: str,
                cfg) -> ReferenceCache:
    """One no-grad pass: start-layer inputs and reference states of every prompt and language."""
    cache = empty_cache(model, tokenizer, pairs, languages, central, cfg)
    model.eval()
    return cache.fill(TopBlock(model, cfg.start_layer), max(cfg.batch_size, 16))
