"""A prompt set's common token prefix, run through the model once.

Templated prompts all begin with the same tokens: the chat template's system turn
and the user header (24 tokens on SmolLM2, against about 44 per English and 67 per
Chinese prompt). A decoder is causal, so every layer's states at those positions
are the same in every prompt. Probing, the reference cache, generation and the
answer NLL therefore run the prefix once, batch 1, and each batch only on what
follows it, with the prefix's keys and values as the past. The numbers are the
same up to float rounding (the last-token states of SmolLM2 differ by 1.5e-5 at a
magnitude of 47), for a third to a half fewer tokens through the model.

A suffix batch is left-padded after the prefix: its attention mask is the prefix's
ones followed by the suffix mask, and positions continue from the prefix length, so
padding never shifts a position.
"""

from __future__ import annotations

import copy
import functools
import inspect
from collections import Counter
from dataclasses import dataclass

import torch

from lensml.runtime.models import decoder_of
from lensml.runtime.templating import Batch, length_sorted_batches, pad, position_ids_from_mask

MIN_PREFIX = 4  # below this the extra call costs more than it saves


def common_prefix_length(seqs: list[list[int]], minimum: int = MIN_PREFIX) -> int:
    """Tokens every sequence starts with, leaving each at least one token of its own (0 below minimum).

    The last token must stay in the suffix: it is the one whose state probing reads and
    whose logits start generation.
    """
    if len(seqs) < 2:
        return 0
    limit = min(len(s) for s in seqs) - 1
    first, n = seqs[0], 0
    while n < limit and all(s[n] == first[n] for s in seqs):
        n += 1
    return n if n >= minimum else 0


@dataclass
class Prefix:
    """The common prefix's ids and its keys and values (batch 1) from one no-grad forward."""

    ids: list[int]
    cache: object  # a transformers Cache

    def __len__(self) -> int:
        return len(self.ids)

    def past(self, batch_size: int):
        """A fresh copy of the prefix cache for a batch (forwards append to the cache they get)."""
        past = copy.deepcopy(self.cache)
        if batch_size > 1:
            past.batch_repeat_interleave(batch_size)
        return past

    def batch(self, suffixes: list[list[int]], pad_id: int, side: str = "left") -> Batch:
        """The suffixes padded, with the prefix's ones in front of their mask and positions after it."""
        return after(pad(suffixes, pad_id, side), len(self))

    def full_ids(self, batch: Batch) -> torch.Tensor:
        """Prefix and suffix ids side by side (what generate expects beside a filled cache)."""
        head = torch.tensor(self.ids, dtype=batch.input_ids.dtype, device=batch.input_ids.device)
        return torch.cat([head.expand(batch.input_ids.shape[0], -1), batch.input_ids], 1)


def after(batch: Batch, n: int) -> Batch:
    """A padded batch of suffixes, made to follow n cached prefix tokens (mask and positions)."""
    ones = torch.ones(batch.input_ids.shape[0], n, dtype=batch.attention_mask.dtype, device=batch.attention_mask.device)
    mask = torch.cat([ones, batch.attention_mask], 1)
    return Batch(batch.input_ids, mask, position_ids_from_mask(mask)[:, n:], past_length=n)


def split(seqs: list[list[int]], enabled: bool = True, minimum: int = MIN_PREFIX,
          partial: bool = False) -> tuple[list[int], list[list[int]]]:
    """(common prefix ids, suffixes); an empty prefix when sharing is off or not worth it.

    partial: the prefix of the sequences that share the most common opening (template_prefix_length);
    a sequence without it (a prompt cut from the left past its template) keeps its whole ids as its
    "suffix" and must run without the prefix (batch_for, sharing).
    """
    n = (template_prefix_length(seqs, minimum) if partial else common_prefix_length(seqs, minimum)) if enabled else 0
    if not n:
        return [], [list(s) for s in seqs]
    opening = _opening(seqs, minimum) if partial else seqs[0][:minimum]
    head = next(s[:n] for s in seqs if s[:minimum] == opening)
    return list(head), [list(s[n:]) if len(s) > n and s[:n] == head else list(s) for s in seqs]


def _opening(seqs: list[list[int]], n: int) -> list[int]:
    """The n-token opening most sequences longer than n share (the first seen among equals)."""
    counts = Counter(tuple(s[:n]) for s in seqs if len(s) > n)
    return list(max(counts.items(), key=lambda kv: kv[1])[0]) if counts else []


def template_prefix_length(seqs: list[list[int]], minimum: int = MIN_PREFIX) -> int:
    """The common prefix of the sequences that open like most of them do (0 below minimum or when fewer than
    two share it).

    Prompts cut from the left to a token budget lose their template's head (on SmolLM2 at 128 tokens:
    112 of the 200 embedded Bengali prompts, 25 Korean, 17 Japanese, 15 Arabic): one such prompt makes
    the prefix of the whole set empty, and every other prompt then runs its 24 template tokens again.
    Here the others still share theirs. Equals common_prefix_length when every sequence opens alike.
    """
    opening = _opening(seqs, minimum)
    members = [s for s in seqs if len(s) > minimum and s[:minimum] == opening]
    if len(members) == len(seqs):
        return common_prefix_length(seqs, minimum)
    return common_prefix_length(members, minimum) if len(members) >= 2 else 0


def sharing(seqs: list[list[int]], tails: list[list[int]]) -> list[bool]:
    """Which sequences run after the prefix (their tail is shorter than they are) and which whole."""
    return [len(t) < len(s) for s, t in zip(seqs, tails)]


def group_batches(lengths: list[int], shared: list[bool], batch_size: int) -> list[list[int]]:
    """length_sorted_batches that never mix sequences that follow the prefix with whole ones (a batch has one
    past or none); the same batches as length_sorted_batches when all share or none do."""
    if all(shared) or not any(shared):
        return length_sorted_batches(lengths, batch_size)
    out = []
    for keep in (True, False):
        idx = [i for i, s in enumerate(shared) if s == keep]
        out += [[idx[j] for j in b] for b in length_sorted_batches([lengths[i] for i in idx], batch_size)]
    return out


def batch_for(pre: "Prefix | None", seqs: list[list[int]], tails: list[list[int]], idx: list[int], pad_id: int,
              side: str = "left", shared: list[bool] | None = None) -> tuple[Batch, object]:
    """Sequences idx as a batch, with the past they follow: after the shared prefix when there is
    one (their tails, and a fresh copy of its cache), else whole (and no past).

    shared (from split(partial=True), see sharing): which sequences hold the prefix; those that do not
    go whole, and one batch may not mix both (group_batches). None: every sequence holds it.
    """
    if pre is None or (shared is not None and not any(shared[i] for i in idx)):
        return pad([seqs[i] for i in idx], pad_id, side), None
    if shared is not None and not all(shared[i] for i in idx):
        raise ValueError("a batch mixes sequences that follow the shared prefix with whole ones: use group_batches")
    return pre.batch([tails[i] for i in idx], pad_id, side), pre.past(len(idx))


def shareable(model, seqs: list[list[int]], enabled: bool = True, extra: int = 0) -> bool:
    """May these sequences (plus `extra` tokens each, e.g. generated ones) run their prefix once?"""
    return bool(enabled and seqs) and fits_window(model, max(len(s) for s in seqs) + extra)


def fits_window(model, longest: int) -> bool:
    """Can a prefix be shared for sequences of up to `longest` tokens (padding and new tokens included)?

    Sliding-window attention counts cache slots, not positions: padding between prefix and
    prompt would take slots inside the window, and a window shorter than the sequence
    would see other tokens than the whole prompt sees. So a model with a sliding window
    shares only when every sequence fits in it (Gemma-3's 512 holds our 128-token prompts).

    Rotary scalings that pick their frequencies from a forward's longest position (LongRoPE's
    short and long factors, dynamic NTK) rotate every position differently once a forward passes
    their switch: a prefix run alone would be rotated otherwise than inside whole prompts
    (measured on a tiny Phi-3: probe means 2.8e-3 apart). Such a model shares only up to the
    switch (Phi-3.5-mini: 4096 tokens).
    """
    config = getattr(model, "config", None)
    config = getattr(config, "get_text_config", lambda: config)()
    window = getattr(config, "sliding_window", None)
    types = getattr(config, "layer_types", None)
    sliding = window is not None and (types is None or any("sliding" in t for t in types))
    return (not sliding or longest < window) and longest <= rope_switch(config)


def rope_switch(config) -> float:
    """The longest sequence whose rotary frequencies do not depend on how long the forward is (inf for
    the rotary scalings fixed at load: default, linear, llama3, yarn)."""
    params = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    sets = [p for p in params.values() if isinstance(p, dict)] if isinstance(params, dict) else []
    sets = sets or ([params] if isinstance(params, dict) else [])
    limit = float("inf")
    for p in sets:
        kind = p.get("rope_type", p.get("type"))
        if kind == "longrope" or (isinstance(kind, str) and "dynamic" in kind):
            original = p.get("original_max_position_embeddings") or getattr(config, "original_max_position_embeddings",
                                                                            None)
            limit = min(limit, original or getattr(config, "max_position_embeddings", 0) or 0)
    return limit


@torch.no_grad()
def run_prefix(decoder, ids: list[int], device) -> tuple[Prefix, torch.Tensor]:
    """Run the prefix once: (Prefix, its final decoder states (1, P, d)).

    decoder is the model's base decoder (lensml.runtime.models.decoder_of); hooks the caller has
    attached see this forward like any other.
    """
    x = torch.tensor([ids], dtype=torch.long, device=device)
    out = decoder(input_ids=x, attention_mask=torch.ones_like(x), use_cache=True)
    return Prefix(list(ids), output_cache(out)), out.last_hidden_state


def past_kwargs(module, past) -> dict:
    """{name: past} for a forward or generate call: transformers renamed `past_key_values` to `cache`
    (5.2x); the name the module's forward takes is the one to use. {} without a past."""
    if past is None:
        return {}
    return {_cache_name(type(module)): past}


@functools.lru_cache(maxsize=None)
def _cache_name(cls) -> str:
    return "cache" if "cache" in inspect.signature(cls.forward).parameters else "past_key_values"


def output_cache(out):
    """The cache a forward returned, under either name."""
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values


def hooked(model) -> bool:
    """Does anything hook the decoder or its layers? Such hooks (steering) must see whole prompts."""
    return bool(hook_ids(model))


def hook_ids(model) -> set[int]:
    """The ids of the forward and pre-forward hooks on the model, its decoder, layers and final norm."""
    decoder = decoder_of(model)
    modules = [model, decoder, *decoder.layers, getattr(decoder, "norm", None)]
    return {i for m in modules if m is not None for i in (*m._forward_hooks, *m._forward_pre_hooks)}
