"""Language subspace probing (LSP): per-layer means of last-token states.

Only the decoder runs (no LM head, no logits), batches are length-sorted, and
hooks keep just the last-token state of each layer instead of every layer's
full sequence; sums accumulate in float64.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field

import torch

from lensml import distributed
from lensml.errors import LensError
from lensml.lens.reference_cache import ReferenceCache
from lensml.lens.subspace import LanguageSubspace
from lensml.progress import progress as tqdm
from lensml.runtime.models import decoder_of, input_device, steady_attention
from lensml.runtime.shared_prefix import batch_for, group_batches, past_kwargs, sharing
from lensml.runtime.templating import encode_prompts
from lensml.runtime.topblock import TopBlock, capturing_all, shared_prefix

log = logging.getLogger(__name__)


@dataclass
class ProbeConfig:
    """How the language subspace is probed."""

    samples: int | None = field(default=None, metadata={"help": "texts per language (default: all the probe data has)"})
    max_length: int = field(default=128, metadata={"help": "token budget per templated text; cut from the left"})
    batch_size: int = field(default=32, metadata={"help": "texts per forward pass"})
    rank: int | None = field(default=None, metadata={"help": "rank r of the specific subspace (default L-1)"})
    system_prompt: str | None = field(default=None, metadata={"help": "system message (default: the template's own)"})
    share_prefix: bool = field(default=True, metadata={
        "help": "run the prompts' common template prefix once, not in every prompt (same states to float rounding)"})

    def __post_init__(self):
        for name in ("max_length", "batch_size"):
            if getattr(self, name) < 1:
                raise LensError(f"probe.{name} must be at least 1, got {getattr(self, name)}")
        for name in ("samples", "rank"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise LensError(f"probe.{name} must be at least 1, got {value}: leave it unset for the default")


def _layer_output(output) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output


@torch.no_grad()
def last_token_states(model, batch, keep_final: list | None = None, past=None) -> torch.Tensor:
    """(n_layers, b, d) last-token states of every layer; the last entry after the final norm.

    keep_final, when given, receives the full final states (b, T, d) (for a reference cache).
    past: the cached prefix the batch follows (lensml.runtime.shared_prefix.Prefix.past), or None.
    """
    decoder = decoder_of(model)
    layers = decoder.layers
    idx = batch.last_index
    rows = torch.arange(batch.input_ids.shape[0], device=idx.device)
    kept: list[torch.Tensor] = []

    def keep(_module, _args, output):
        h = _layer_output(output)  # under a device_map, layers may sit on different devices
        kept.append(h[rows.to(h.device), idx.to(h.device)].float().to(idx.device))

    handles = [layer.register_forward_hook(keep) for layer in layers[:-1]]
    try:
        out = decoder(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                      position_ids=batch.position_ids, use_cache=False, **past_kwargs(decoder, past))
    finally:
        for h in handles:
            h.remove()
    final = out.last_hidden_state
    if keep_final is not None:
        keep_final.append(final)
    kept.append(final[rows.to(final.device), idx.to(final.device)].float().to(idx.device))
    return torch.stack(kept)


def _caches(cache) -> list[ReferenceCache]:
    return [] if cache is None else list(cache) if isinstance(cache, (list, tuple)) else [cache]


def language_means(model, tokenizer, texts: list[str], cfg: ProbeConfig, desc: str = "probe",
                   cache: ReferenceCache | list[ReferenceCache] | None = None, lang: str | None = None) -> torch.Tensor:
    """(n_layers, d) float64 mean last-token state over texts.

    With a cache whose prompts for lang are these texts (same tokens), the same forward
    also fills the cache's start-layer inputs and reference states: one pass, not two.
    A list of caches (one per start layer, as a layer sweep needs) is filled alike.
    """
    device = input_device(model)
    ids = encode_prompts(tokenizer, texts, cfg.max_length, cfg.system_prompt)
    caches = _caches(cache)
    if any(c.ids[lang] != ids for c in caches):
        raise ValueError(f"the reference cache's '{lang}' prompts are not the probe texts: fill it on its own")
    blocks = [TopBlock(model, c.start) for c in caches]
    mine = distributed.my_share(list(range(len(ids))))
    total = torch.zeros(len(decoder_of(model).layers), model.get_input_embeddings().embedding_dim,
                        dtype=torch.float64, device=device)
    # prompts cut from the left past the template (long Bengali ones at 128 tokens) run whole; the rest share it
    pre, heads, tails = shared_prefix(model, ids, cfg.share_prefix, blocks, partial=True)
    shared = sharing(ids, tails)
    for idx in tqdm(group_batches([len(tails[i]) for i in mine], [shared[i] for i in mine], cfg.batch_size),
                    desc=desc, leave=False):
        rows = [mine[i] for i in idx]
        batch, past = batch_for(pre, ids, tails, rows, tokenizer.pad_token_id, shared=shared)
        batch = batch.to(device)
        if not blocks:
            total += last_token_states(model, batch, past=past).to(torch.float64).sum(dim=1)
            continue
        finals: list = []
        with capturing_all(blocks) as captured:
            total += last_token_states(model, batch, keep_final=finals, past=past).to(torch.float64).sum(dim=1)
        for c, cap, head in zip(caches, captured, heads):
            c.store(lang, rows, cap["h"], finals[0], batch, head if past is not None else None)
    for c, block in zip(caches, blocks):
        c.as_tuple = block.as_tuple
    return (distributed.all_reduce_sum(total) / len(ids)).cpu()


def _warn_thin(lang: str, texts: list[str]) -> None:
    """A language mean of one text is that text's state, and a duplicated text counts twice: say so."""
    if len(texts) == 1:
        log.warning("probe data has one text for '%s': its language mean is that one text's state; add more texts",
                    lang)
    repeats = len(texts) - len(set(texts))
    if repeats:
        log.warning("probe data for '%s' repeats %d of its %d texts: each copy weighs in the language mean again; "
                    "remove the duplicates", lang, repeats, len(texts))


def _hash_texts(texts: list[str]) -> str:
    return hashlib.sha256(json.dumps(texts, ensure_ascii=False).encode()).hexdigest()[:16]


def probe(model, tokenizer, texts_by_lang: dict[str, list[str]], central: str, cfg: ProbeConfig,
          model_name: str = "", source: str = "", cache: ReferenceCache | None = None) -> LanguageSubspace:
    """Probe every language and fit the per-layer subspace.

    cache: an empty reference cache (lensml.lens.reference_cache.empty_cache) whose prompts are the probe
    texts, or a list of them (start layers of a sweep); filled by the same forward passes
    (see shares_prompts).
    """
    steady_attention(model)
    languages = list(texts_by_lang)
    if central not in languages:
        raise LensError(f"probe data lacks the central language '{central}': add its texts")
    counts, selected = {}, {}
    for lang, texts in texts_by_lang.items():
        n = cfg.samples if cfg.samples is not None else len(texts)
        if len(texts) < n:
            raise LensError(f"probe data has {len(texts)} texts for '{lang}', {n} asked: lower --probe-samples or add data")
        if n < 1:
            raise LensError(f"probe data has no texts for '{lang}': add some")
        selected[lang] = texts[:n]
        counts[lang] = n
        _warn_thin(lang, selected[lang])
    means = torch.stack([language_means(model, tokenizer, selected[lang], cfg, desc=f"probe {lang}",
                                        cache=[c for c in _caches(cache) if lang in c.ids], lang=lang)
                         for lang in tqdm(languages, desc="probing", leave=False)], dim=1)
    meta = {"model": model_name, "samples": counts, "max_length": cfg.max_length, "source": source,
            "data_sha256": {lang: _hash_texts(selected[lang]) for lang in languages}}
    return LanguageSubspace.fit(means, languages, central, cfg.rank, meta)


def shares_prompts(probe_texts: dict[str, list[str]], probe_cfg: ProbeConfig, rows: list[dict], train_cfg,
                   languages: list[str]) -> bool:
    """True when probing reads exactly the prompts training reads (same texts, length budget and system
    prompt, in every language): then one forward can serve both (the default run's embedded data)."""
    n = train_cfg.samples if train_cfg.samples is not None else len(rows)
    for lang in languages:
        texts = probe_texts.get(lang, [])
        k = probe_cfg.samples if probe_cfg.samples is not None else len(texts)
        if texts[:k] != [r.get(lang) for r in rows[:n]]:
            return False
    return probe_cfg.max_length == train_cfg.max_length and probe_cfg.system_prompt == train_cfg.system_prompt
