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

from contextlib import ExitStack, contextmanager

import torch
from torch import nn
from transformers import DynamicCache

from lensml.errors import LensError
from lensml.runtime.models import decoder_of, input_device
from lensml.runtime.shared_prefix import past_kwargs, run_prefix, shareable, split
from lensml.runtime.templating import Batch


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

        past: the cached prefix the batch follows (lensml.runtime.shared_prefix), or None.
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
        """Final states of a shared prefix, run once, and of batches that follow it (lensml.runtime.shared_prefix).

        head_hidden (1, P, d): the prefix's start-layer input; parts: (suffix batch from
        lensml.runtime.shared_prefix.after, its start-layer inputs). Returns the prefix's final states
        (1, P, d) and each batch's (b, S, d). Gradients reach the trained layers through
        the prefix's keys and values as well, as they do when every prompt holds the prefix.
        """

        head_final, head_cache = self.prefix(head_hidden)
        n = head_hidden.shape[1]
        return head_final, [self.forward(b, h, self.past_after(head_cache, h.shape[0], n, head_hidden)) for b, h in parts]

    def prefix(self, head_hidden: torch.Tensor):
        """A shared prefix run from its start-layer input head_hidden (1, P, d), alone: its final states
        (1, P, d) and a cache holding its keys and values in the layers from start up (see past_after)."""
        n, device = head_hidden.shape[1], head_hidden.device
        ones = torch.ones(1, n, dtype=torch.long, device=device)
        head_cache = DynamicCache(config=self.decoder.config)
        head_final = self.forward(Batch(ones * 0, ones, torch.arange(n, device=device)[None]), head_hidden, head_cache)
        return head_final, head_cache

    def past_after(self, head_cache, rows: int, n: int, like: torch.Tensor):
        """A prefix's keys and values (head_cache: batch 1, n tokens; only its layers from start up are read)
        as the past of `rows` prompts. The skipped layers get placeholders that only say how long the past
        is (the mask reads the first layer's length); they are never read."""

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


def shared_prefix(model, seqs: list[list[int]], enabled: bool, blocks: list[TopBlock] = (), partial: bool = False):
    """(Prefix or None, per block its (start-layer input, final states), suffixes).

    partial: prompts that lost the prefix (cut from the left) stay whole (lensml.runtime.shared_prefix.split).

    The prompts' common template prefix runs once (lensml.runtime.shared_prefix); each block's start-layer
    input is captured in that run too, since a reference cache stores whole prompts. No
    prefix (sharing off, too short, or a sliding window too small): (None, [None...], seqs).
    """
    head_ids, tails = split(seqs, shareable(model, seqs, enabled), partial=partial)
    if not head_ids:
        return None, [None] * len(blocks), seqs
    with capturing_all(list(blocks)) as captured:
        pre, final = run_prefix(decoder_of(model), head_ids, input_device(model))
    return pre, [(c["h"], final) for c in captured], tails


