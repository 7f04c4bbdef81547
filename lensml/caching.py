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

from contextlib import contextmanager

import torch
from torch import nn

from lensml.errors import LensError
from lensml.models import decoder_of
from lensml.templating import Batch


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

    def _call(self, batch: Batch, inputs_embeds: torch.Tensor | None = None):
        ids = batch.input_ids if inputs_embeds is None else None
        return self.decoder(input_ids=ids, inputs_embeds=inputs_embeds, attention_mask=batch.attention_mask,
                            position_ids=batch.position_ids, use_cache=False)

    @torch.no_grad()
    def full(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """Full forward: (input of the start layer, final post-norm states), both (b, T, d)."""
        captured = {}

        def grab(_module, args, kwargs):
            captured["h"] = args[0] if args else kwargs["hidden_states"]

        def kind(_module, _args, output):
            self._as_tuple = isinstance(output, tuple)

        layer = self.decoder.layers[self.start]
        handles = [layer.register_forward_pre_hook(grab, with_kwargs=True), layer.register_forward_hook(kind)]
        try:
            out = self._call(batch)
        finally:
            for h in handles:
                h.remove()
        return captured["h"], out.last_hidden_state

    @contextmanager
    def _lower_layers_skipped(self):
        if self._as_tuple is None:
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

    def forward(self, batch: Batch, hidden_in: torch.Tensor) -> torch.Tensor:
        """Final post-norm states (b, T, d) computed from cached start-layer inputs."""
        def substitute(_module, args, kwargs):
            if args:
                return (hidden_in, *args[1:]), kwargs
            return args, {**kwargs, "hidden_states": hidden_in}

        handle = self.decoder.layers[self.start].register_forward_pre_hook(substitute, with_kwargs=True)
        try:
            with self._lower_layers_skipped():
                # Whatever the forward does to inputs_embeds before the start layer is replaced by the pre-hook.
                return self._call(batch, inputs_embeds=hidden_in).last_hidden_state
        finally:
            handle.remove()
