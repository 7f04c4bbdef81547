"""Run only the trainable top block of a decoder, from cached inputs.

The layers below the start layer are frozen, so their output never changes:
compute it once, then each training step runs just the top layers and the final
norm. Instead of re-implementing the decoder loop (which would have to rebuild
attention masks, sliding windows and per-layer-type rotary embeddings), the
model's own forward runs with the lower layers swapped for pass-through modules
and a pre-hook on the start layer that substitutes the cached hidden states.
The cached states go in as `inputs_embeds`, so the embedding table is not touched
(it can even sit on the CPU while training).
"""

from __future__ import annotations

import logging
from contextlib import ExitStack, contextmanager

import torch
from torch import nn

from lensml import distributed
from lensml.errors import LensError
from lensml.models import decoder_of, input_device
from lensml.progress import progress
from lensml.prefix import after, batch_for, common_prefix_length, past_kwargs, shareable
from lensml.templating import Batch, encode_prompts, gather_last, length_sorted_batches, pad

log = logging.getLogger(__name__)


class _PassThrough(nn.Module):
    """Stands in for a frozen lower layer: returns its input unchanged."""

    def __init__(self, as_tuple: bool):
        super().__init__()
        self.as_tuple = as_tuple

    def forward(self, hidden_states, *args, **kwargs):
        return (hidden_states,) if self.as_tuple else hidden_states


class TopBlock:
    """The decoder layers from `start` to the top, runnable on cached inputs."""

    def __init__(self, model, start: int, as_tuple: bool | None = None):
        self.model = model
        self.decoder = decoder_of(model)
        n = len(self.decoder.layers)
        self.start = start + n if start < 0 else start
        if not 0 <= self.start < n:
            raise LensError(f"start layer {start} is outside the model's {n} decoder layers: use 0..{n - 1} or -1..-{n}")
        self._as_tuple = as_tuple  # do the layers return tuples? learnt in full() or given by a cache

    @property
    def as_tuple(self) -> bool | None:
        return self._as_tuple

    @property
    def layers(self) -> list[nn.Module]:
        return list(self.decoder.layers)[self.start:]

    def parameters(self) -> list[nn.Parameter]:
        return [p for layer in self.layers for p in layer.parameters()]

    def _call(self, batch: Batch, inputs_embeds: torch.Tensor | None = None, past=None):
        ids = batch.input_ids if inputs_embeds is None else None
        return self.decoder(input_ids=ids, inputs_embeds=inputs_embeds, attention_mask=batch.attention_mask,
                            position_ids=batch.position_ids, use_cache=False, **past_kwargs(self.decoder, past))

    @contextmanager
    def capturing(self):
        """While active, any forward of the model records the start layer's input in captured["h"]."""
        captured: dict = {}

        def grab(_module, args, kwargs):
            captured["h"] = args[0] if args else kwargs["hidden_states"]

        def kind(_module, _args, output):
            self._as_tuple = isinstance(output, tuple)

        layer = self.decoder.layers[self.start]
        handles = [layer.register_forward_pre_hook(grab, with_kwargs=True), layer.register_forward_hook(kind)]
        try:
            yield captured
        finally:
            for h in handles:
                h.remove()

    @torch.no_grad()
    def full(self, batch: Batch, past=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Full forward: (input of the start layer, final post-norm states), both (b, T, d).

        past: the cached prefix the batch follows (lensml.prefix), or None.
        """
        with self.capturing() as captured:
            out = self._call(batch, past=past)
        return captured["h"], out.last_hidden_state

    @contextmanager
    def _lower_layers_skipped(self):
        if self._as_tuple is None and self.start > 0:
            raise RuntimeError("call TopBlock.full once before the cached forward")
        layers = self.decoder.layers
        saved = [layers[i] for i in range(self.start)]
        try:
            for i in range(self.start):
                layers[i] = _PassThrough(self._as_tuple)
            yield
        finally:
            for i, original in enumerate(saved):
                layers[i] = original

    def after_prefix(self, head_hidden: torch.Tensor, parts: list[tuple[Batch, torch.Tensor]]):
        """Final states of a shared prefix, run once, and of batches that follow it (lensml.prefix).

        head_hidden (1, P, d): the prefix's start-layer input; parts: (suffix batch from
        lensml.prefix.after, its start-layer inputs). Returns the prefix's final states
        (1, P, d) and each batch's (b, S, d). Gradients reach the trained layers through
        the prefix's keys and values as well, as they do when every prompt holds the prefix.
        """
        from transformers import DynamicCache

        n, device = head_hidden.shape[1], head_hidden.device
        ones = torch.ones(1, n, dtype=torch.long, device=device)
        head_cache = DynamicCache(config=self.decoder.config)
        head_final = self.forward(Batch(ones * 0, ones, torch.arange(n, device=device)[None]), head_hidden, head_cache)
        return head_final, [self.forward(b, h, self._past(head_cache, h.shape[0], n, head_hidden)) for b, h in parts]

    def _past(self, head_cache, rows: int, n: int, like: torch.Tensor):
        """The prefix's keys and values for `rows` prompts. The skipped layers get placeholders that
        only say how long the past is (the mask reads the first layer's length); they are never read."""
        from transformers import DynamicCache

        past = DynamicCache(config=self.decoder.config)
        placeholder = like.new_zeros(1, 1, n, 1).expand(rows, 1, n, 1)
        for i in range(len(self.decoder.layers)):
            if i < self.start:
                past.update(placeholder, placeholder, i)
            else:
                layer = head_cache.layers[i]
                past.update(layer.keys.expand(rows, -1, -1, -1), layer.values.expand(rows, -1, -1, -1), i)
        return past

    def forward(self, batch: Batch, hidden_in: torch.Tensor, past=None) -> torch.Tensor:
        """Final post-norm states (b, T, d) computed from cached start-layer inputs (after `past`, if given)."""
        def substitute(_module, args, kwargs):
            if args:
                return (hidden_in, *args[1:]), kwargs
            return args, {**kwargs, "hidden_states": hidden_in}

        handle = self.decoder.layers[self.start].register_forward_pre_hook(substitute, with_kwargs=True)
        try:
            with self._lower_layers_skipped():
                # Whatever the forward does to inputs_embeds before the start layer is replaced by the pre-hook.
                return self._call(batch, inputs_embeds=hidden_in, past=past).last_hidden_state
        finally:
            handle.remove()


@contextmanager
def capturing_all(blocks: list[TopBlock]):
    """Each block's start-layer input, recorded by the same forwards (one dict per block)."""
    with ExitStack() as stack:
        yield [stack.enter_context(block.capturing()) for block in blocks]


def shared_prefix(model, seqs: list[list[int]], enabled: bool, blocks: list[TopBlock] = ()):
    """(Prefix or None, per block its (start-layer input, final states), suffixes).

    The prompts' common template prefix runs once (lensml.prefix); each block's start-layer
    input is captured in that run too, since a reference cache stores whole prompts. No
    prefix (sharing off, too short, or a sliding window too small): (None, [None...], seqs).
    """
    from lensml.prefix import run_prefix, split

    head_ids, tails = split(seqs, shareable(model, seqs, enabled))
    if not head_ids:
        return None, [None] * len(blocks), seqs
    with capturing_all(list(blocks)) as captured:
        pre, final = run_prefix(decoder_of(model), head_ids, input_device(model))
    return pre, [(c["h"], final) for c in captured], tails


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
        pre, heads, tails = shared_prefix(model, seqs, share_prefix, blocks)
        for group in progress(length_sorted_batches([len(tails[i]) for i in owned], batch_size),
                              desc=f"cache {lang}", leave=False):
            idx = [owned[g] for g in group]
            batch, past = batch_for(pre, seqs, tails, idx, first.pad_id)
            batch = batch.to(model_device)
            with torch.no_grad(), capturing_all(blocks) as captured:
                final = blocks[0]._call(batch, past=past).last_hidden_state
            for cache, cap, head in zip(caches, captured, heads):
                cache.store(lang, idx, cap["h"], final, batch, head)
    for cache, block in zip(caches, blocks):
        cache.as_tuple = block.as_tuple


def _languages(languages: list[str], central: str) -> list[str]:
    return [central] + [lang for lang in languages if lang != central]


class ReferenceCache:
    """Per-prompt start-layer inputs and reference final states, for every language.

    Filled in one no-grad pass of the original model (its own, `fill`, or the probing
    pass when probe and training prompts are the same, lensml.probing.probe); the
    reference model is then never needed again. Under data parallelism a process
    caches only the prompts it owns (distributed.my_share).
    """

    def __init__(self, ids: dict[str, list[list[int]]], pad_id: int, start: int, device, prefix: int = 0):
        self.ids, self.pad_id, self.start, self.device = ids, pad_id, start, device
        self.prefix = prefix  # tokens every prompt of every language starts with, run once per step (0: none)
        self.as_tuple: bool | None = None
        self.hidden = {lang: [None] * len(seqs) for lang, seqs in ids.items()}
        self.last = {lang: [None] * len(seqs) for lang, seqs in ids.items()}
        self.mean = {lang: [None] * len(seqs) for lang, seqs in ids.items()}

    def store(self, lang: str, idx: list[int], h_in: torch.Tensor, final: torch.Tensor, batch: Batch,
              head: tuple[torch.Tensor, torch.Tensor] | None = None) -> None:
        """Keep a batch's start-layer inputs and reference states (rows in the order of idx).

        head: the shared prefix's (start-layer input, final states), each (1, P, d), when the
        batch followed a cached prefix (lensml.prefix): every prompt's states begin with them.
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
        batch then follows them (lensml.prefix.after) and width counts the rest.
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
        first = next(h for seqs in self.hidden.values() for h in seqs if h is not None)  # a process owns a share
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
    return ReferenceCache(ids, tokenizer.pad_token_id, TopBlock(model, cfg.start_layer).start, device,
                          prefix=common_prefix_length(every) if shareable(model, every, cfg.share_prefix) else 0)


def build_cache(model, tokenizer, pairs: list[dict[str, str]], languages: list[str], central: str,
                cfg) -> ReferenceCache:
    """One no-grad pass: start-layer inputs and reference states of every prompt and language."""
    cache = empty_cache(model, tokenizer, pairs, languages, central, cfg)
    model.eval()
    return cache.fill(TopBlock(model, cfg.start_layer), max(cfg.batch_size, 16))
