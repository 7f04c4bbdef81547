"""The base model's prompt prefill, kept for a model that differs from it only from one layer up.

LENS trains the top layers of the decoder (2 of 30 on SmolLM2); below them the enhanced model
is the base model. Its evaluation prefills the same held-out prompts the base model's did, in
the same chunks (lensml.runtime.decoding.chunk_plan): the lower layers compute the same keys and
values from the same inputs, and hand the first trained layer the same input. A PrefillStore,
filled by the base model's decode (greedy(keep=store)), keeps both per chunk; the enhanced
model's decode (greedy(reuse=store)) then runs only the layers from `start` up over the kept
inputs (lensml.runtime.topblock) and takes the lower layers' keys and values as they were.
Same chunks, shapes and operations, so the same bits: the answers are the ones a full prefill
gives (tests compare ids and log-probabilities exactly).

What it saves: the prefill of the enhanced model's evaluation, less its top layers. On the
six-language run (280 prompts, 17.5k prompt tokens after the shared template prefix) that
prefill is about 30 s of each evaluation on the 2-core CPU. What it costs: the kept tensors,
on the host (keys and values of the lower layers for every prompt token: 43 kB a token on
SmolLM2, about 110 MB for the default run's 80 prompts), until the store is dropped; and as
much disk where lensml.evaluation.quick caches it beside the base answers (save/load), so that
a run that takes the base answers from the cache still has their prefill.

The store only ever serves a chunk whose prefix and prompt tokens are the ones it recorded;
whether the model's lower layers are still the base model's is the caller's check
(lensml.evaluation.quick compares a digest of their weights).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import DynamicCache

from lensml.io import save_tensors_atomic, tensors_for_start
from lensml.runtime.models import decoder_of, input_device
from lensml.runtime.shared_prefix import Prefix
from lensml.runtime.templating import Batch
from lensml.runtime.topblock import TopBlock

KV = tuple[torch.Tensor, torch.Tensor]


@dataclass
class _Kept:
    lower: list[KV]      # layers below start: (rows, kv heads, tokens, head dim) keys and values
    inputs: torch.Tensor  # the start layer's input (rows, tokens, d)


def _host(t: torch.Tensor) -> torch.Tensor:
    """t on the host, compact: a slice of a wider cache is copied out (else it would keep the whole of it alive)."""
    return t.detach().to("cpu").contiguous()


def _device(module) -> torch.device:
    return next(module.parameters()).device


class PrefillStore:
    """Kept prefill of one model's evaluation prompts, for a model equal to it below layer `start`."""

    def __init__(self, start: int):
        if start < 1:
            raise ValueError(f"a prefill store needs lower layers to keep: start layer {start}")
        self.start = start
        self.as_tuple: bool | None = None  # how the decoder layers return their states (TopBlock)
        self._prefix: tuple[tuple[int, ...], _Kept] | None = None
        self._chunks: dict[tuple, _Kept] = {}
        self.served = 0  # prefixes and chunks handed out (how a caller or test sees the store at work)

    def __len__(self) -> int:
        return len(self._chunks)

    @staticmethod
    def _key(prefix_ids: list[int] | None, part: list[list[int]]) -> tuple:
        return tuple(prefix_ids or ()), tuple(tuple(p) for p in part)

    # --- recording (the base model's decode) ---
    def keep_prefix(self, pre: Prefix, inputs: torch.Tensor, as_tuple: bool | None) -> None:
        """The shared prefix: its cache (batch 1, every layer) and the start layer's input (1, P, d)."""
        lower = [(_host(layer.keys), _host(layer.values)) for layer in pre.cache.layers[:self.start]]
        self._prefix = (tuple(pre.ids), _Kept(lower, _host(inputs)))
        self.as_tuple = as_tuple if as_tuple is not None else self.as_tuple

    def keep_chunk(self, prefix_ids: list[int] | None, part: list[list[int]], chunk_kv: list[KV],
                   inputs: torch.Tensor, as_tuple: bool | None) -> None:
        """One prefill chunk: its prompt tokens (after the prefix), every layer's new keys and values, the start layer's input."""
        lower = [(_host(k), _host(v)) for k, v in chunk_kv[:self.start]]
        self._chunks[self._key(prefix_ids, part)] = _Kept(lower, _host(inputs))
        self.as_tuple = as_tuple if as_tuple is not None else self.as_tuple

    # --- on disk (beside the cached base answers) ---
    def save(self, path: Path) -> None:
        """Write every kept tensor to a safetensors file (atomically), what it was kept for in its metadata."""
        entries = ([(self._prefix[0], None, self._prefix[1])] if self._prefix is not None else []) + \
                  [(key[0], key[1], kept) for key, kept in self._chunks.items()]
        tensors, index = {}, []
        for n, (prefix_ids, part, kept) in enumerate(entries):
            for i, (k, v) in enumerate(kept.lower):
                tensors[f"{n}.k{i}"], tensors[f"{n}.v{i}"] = k, v  # compact already (_host)
            tensors[f"{n}.in"] = kept.inputs
            index.append({"prefix": list(prefix_ids), "part": None if part is None else [list(p) for p in part]})
        meta = {"start": str(self.start), "as_tuple": json.dumps(self.as_tuple), "index": json.dumps(index)}
        save_tensors_atomic(path, tensors, meta)

    @classmethod
    def load(cls, path: Path, start: int) -> "PrefillStore | None":
        """The store save() wrote, or None when the file is absent or was kept for another start layer.
        A damaged file raises (OSError, ValueError, KeyError, SafetensorError) for the caller to handle."""
        with tensors_for_start(path, start) as found:
            if found is None:
                return None
            f, meta = found
            store = cls(start)
            store.as_tuple = json.loads(meta["as_tuple"])
            for n, entry in enumerate(json.loads(meta["index"])):
                lower = [(f.get_tensor(f"{n}.k{i}"), f.get_tensor(f"{n}.v{i}")) for i in range(start)]
                kept = _Kept(lower, f.get_tensor(f"{n}.in"))
                if entry["part"] is None:
                    store._prefix = (tuple(entry["prefix"]), kept)
                else:
                    store._chunks[cls._key(entry["prefix"], entry["part"])] = kept
        return store

    # --- serving (a model equal below start) ---
    def prefix(self, model, ids: list[int]) -> Prefix | None:
        """The model's own Prefix of these ids: the kept lower layers, its top layers run on the kept input."""
        if self._prefix is None or self._prefix[0] != tuple(ids) or self.as_tuple is None:
            return None
        kept, decoder = self._prefix[1], decoder_of(model)
        layers = decoder.layers
        # the top layers on the kept input, where the full prefix forward puts its ids
        _, top = TopBlock(model, self.start, self.as_tuple).prefix(kept.inputs.to(input_device(model)))
        cache = DynamicCache(config=decoder.config)
        for i, (k, v) in enumerate(kept.lower):  # under a device_map each layer's cache lives on that layer's device
            cache.update(k.to(_device(layers[i])), v.to(_device(layers[i])), i)
        for i in range(self.start, len(layers)):
            cache.update(top.layers[i].keys, top.layers[i].values, i)
        self.served += 1
        return Prefix(list(ids), cache)

    def chunk(self, model, pre: Prefix | None, part: list[list[int]], batch: Batch) -> list[KV] | None:
        """Every layer's keys and values of a chunk's new tokens, (rows, kv heads, width, head dim) as a full
        forward would give them; None when this chunk was not kept."""
        kept = self._chunks.get(self._key(pre.ids if pre is not None else None, part))
        if kept is None or self.as_tuple is None:
            return None
        block = TopBlock(model, self.start, self.as_tuple)
        decoder = decoder_of(model)
        hidden = kept.inputs.to(batch.input_ids.device)
        rows, width = hidden.shape[0], hidden.shape[1]
        if pre is not None:
            past = block.past_after(pre.cache, rows, len(pre), hidden)
        else:
            past = DynamicCache(config=decoder.config)
        block.forward(batch, hidden, past)
        top = [(past.layers[i].keys[:, :, -width:], past.layers[i].values[:, :, -width:])
               for i in range(self.start, len(decoder.layers))]
        self.served += 1
        return list(kept.lower) + top
