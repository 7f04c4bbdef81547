"""Language subspace probing (LSP): per-layer means of last-token states.

Only the decoder runs (no LM head, no logits), batches are length-sorted, and
hooks keep just the last-token state of each layer instead of every layer's
full sequence; sums accumulate in float64.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

import torch
from lensml.progress import progress as tqdm

from lensml import distributed
from lensml.errors import LensError
from lensml.models import decoder_of, input_device
from lensml.subspace import LanguageSubspace
from lensml.templating import encode_prompts, length_sorted_batches, pad


@dataclass
class ProbeConfig:
    """How the language subspace is probed."""

    samples: int | None = field(default=None, metadata={"help": "texts per language (default: all the probe data has)"})
    max_length: int = field(default=128, metadata={"help": "token budget per templated text; cut from the left"})
    batch_size: int = field(default=32, metadata={"help": "texts per forward pass"})
    rank: int | None = field(default=None, metadata={"help": "rank r of the specific subspace (default L-1)"})
    system_prompt: str | None = field(default=None, metadata={"help": "system message (default: the template's own)"})

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
def last_token_states(model, batch) -> torch.Tensor:
    """(n_layers, b, d) last-token states of every layer; the last entry after the final norm."""
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
                      position_ids=batch.position_ids, use_cache=False)
    finally:
        for h in handles:
            h.remove()
    final = out.last_hidden_state
    kept.append(final[rows.to(final.device), idx.to(final.device)].float().to(idx.device))
    return torch.stack(kept)


def language_means(model, tokenizer, texts: list[str], cfg: ProbeConfig, desc: str = "probe") -> torch.Tensor:
    """(n_layers, d) float64 mean last-token state over texts."""
    device = input_device(model)
    ids = encode_prompts(tokenizer, texts, cfg.max_length, cfg.system_prompt)
    mine = distributed.my_share(list(range(len(ids))))
    total = torch.zeros(len(decoder_of(model).layers), model.get_input_embeddings().embedding_dim,
                        dtype=torch.float64, device=device)
    for idx in tqdm(length_sorted_batches([len(ids[i]) for i in mine], cfg.batch_size), desc=desc, leave=False):
        batch = pad([ids[mine[i]] for i in idx], tokenizer.pad_token_id, side="left").to(device)
        total += last_token_states(model, batch).to(torch.float64).sum(dim=1)
    return (distributed.all_reduce_sum(total) / len(ids)).cpu()


def _hash_texts(texts: list[str]) -> str:
    return hashlib.sha256(json.dumps(texts, ensure_ascii=False).encode()).hexdigest()[:16]


def probe(model, tokenizer, texts_by_lang: dict[str, list[str]], central: str, cfg: ProbeConfig,
          model_name: str = "", source: str = "") -> LanguageSubspace:
    """Probe every language and fit the per-layer subspace."""
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
    means = torch.stack([language_means(model, tokenizer, selected[lang], cfg, desc=f"probe {lang}")
                         for lang in tqdm(languages, desc="probing", leave=False)], dim=1)
    meta = {"model": model_name, "samples": counts, "max_length": cfg.max_length, "source": source,
            "data_sha256": {lang: _hash_texts(selected[lang]) for lang in languages}}
    return LanguageSubspace.fit(means, languages, central, cfg.rank, meta)
