"""What benchmarks/roofline.py counts while a stage runs: FLOPs, tokens, forward calls and seconds per phase.

Hooks, not a dispatch mode: torch.utils.flop_counter.FlopCounterMode routes every aten op through
Python (measured here: 18-27% slower on a probe batch) and does not count the CPU flash-attention
kernel at all, so timing under it would be wrong. A forward hook on every nn.Linear costs a few
microseconds per call and sees exactly what ran:
- linear: 2 * rows * in * out per call, rows = every position the Linear was given (padding included,
  the LM head only at the positions `logits_to_keep` asked for); under autograd a trained weight adds
  its weight gradient and its input gradient (x3 in all), a frozen Linear whose input needs a gradient x2.
- attention: 4 * b * q_len * kv_len * (heads * head_dim) per layer call (QK^T and AV, masked or not:
  the kernels compute the whole rectangle); x3 under autograd (dQ, dK, dV and dP in the backward).
Norms, rotary, softmax and the optimiser are left out (under 1% of the FLOPs at these shapes).
roofline.py cross-checks the linear count against FlopCounterMode on sampled calls.

On CUDA a phase also keeps the peak of allocated device memory over its intervals (the counter is reset
at every switch). A phase's seconds are wall time: each interval is given to the phase of the most recent outermost
forward (the model, its decoder, or the LM head called alone), so the Python around the forwards
(cache assembly, argmax, tolist) is charged to the phase it serves.
"""

from __future__ import annotations

import time
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass

import torch

from lensml.runtime import known_hooks
from lensml.runtime.models import decoder_of


@dataclass
class Phase:
    calls: int = 0            # outermost forward calls
    rows: int = 0             # sequences (decode: rows x steps)
    tokens_run: int = 0       # positions given to the decoder, padding included
    tokens_real: int = 0      # positions that were not padding
    linear_flops: float = 0.0
    attention_flops: float = 0.0
    linear_calls: int = 0     # nn.Linear calls, and the rows they were given (the mean matmul M)
    linear_rows: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0  # this process's CPU time (all threads): on a shared machine, the work done
    tokens_out: int | None = None  # decode: the answers' tokens (stop tokens included)
    peak_gb: float | None = None   # CUDA: the most device memory allocated while the phase ran (GiB)

    @property
    def flops(self) -> float:
        return self.linear_flops + self.attention_flops

    def to_dict(self) -> dict:
        return {**asdict(self), "flops": self.flops}


def _past(kwargs: dict):
    """The cache a forward was given, under either of transformers' names."""
    past = kwargs.get("past_key_values")
    return past if past is not None else kwargs.get("cache")


class Meter:
    """Counts per phase for one model; `stage(name, split=True)` splits an evaluation into prefill,
    decode and nll by what each outermost forward is (a one-token model call is a decode step; a decoder
    call with token ids a prefill, and so is one with cached states and a past: the top block run over a
    kept prefill, lensml.runtime.prefill_store; one with cached states and no past, or the LM head alone,
    the NLL's top block)."""

    def __init__(self, model):
        self.model, self.decoder = model, decoder_of(model)
        self.cuda = next(model.parameters()).is_cuda
        self.phases: dict[str, Phase] = {}
        self.stage_name: str | None = None
        self.split = False
        self.phase: str | None = None
        self.depth = 0
        self.mark = self.cpu_mark = 0.0
        self._pending_real: list[torch.Tensor] = []
        self.handles = []
        head = model.get_output_embeddings()
        for m in model.modules():
            if isinstance(m, torch.nn.Linear):
                self.handles.append(m.register_forward_hook(self._linear))
        for layer in self.decoder.layers:
            attn = getattr(layer, "self_attn", None)
            if attn is not None:
                self.handles.append(attn.register_forward_pre_hook(self._attention, with_kwargs=True))
        outer = []
        for module, kind in ((model, "model"), (self.decoder, "decoder"), (head, "head")):
            outer.append(module.register_forward_pre_hook(
                lambda m, a, k, kind=kind: self._enter(kind, a, k), with_kwargs=True))
            outer.append(module.register_forward_hook(lambda m, a, o: self._leave()))
        self.handles += outer
        # The evaluation decoder gives a model with hooks of unknown needs generate() instead of its own
        # path; registered as known (it needs no pausing), the meter leaves the path the run takes.
        self.hook_ids = {h.id for h in outer}
        known_hooks.add(model, self)

    def paused(self):
        return nullcontext()  # counting goes on while the decoder prefills

    def restart(self) -> None:
        pass

    def close(self) -> None:
        known_hooks.discard(self.model, self)
        for h in self.handles:
            h.remove()

    def _now(self) -> float:
        if self.cuda:
            torch.cuda.synchronize()
        return time.perf_counter()

    def _switch(self, phase: str) -> None:
        if phase == self.phase:
            return
        self._flush()
        t, c = self._now(), time.process_time()
        if self.phase is not None:
            ph = self.phases.setdefault(self.phase, Phase())
            ph.seconds += t - self.mark
            ph.cpu_seconds += c - self.cpu_mark
            if self.cuda:
                ph.peak_gb = max(ph.peak_gb or 0.0, torch.cuda.max_memory_allocated() / 2 ** 30)
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
        self.phase, self.mark, self.cpu_mark = phase, t, c

    @property
    def current(self) -> Phase:
        return self.phases.setdefault(self.phase or "other", Phase())

    def _enter(self, kind: str, args, kwargs) -> None:
        if self.stage_name is None:
            return
        outer = self.depth == 0
        self.depth += 1
        ids = kwargs.get("input_ids", args[0] if args and kind != "head" else None)
        embeds = kwargs.get("inputs_embeds")
        if outer and self.split:
            if kind == "model" and ids is not None and ids.shape[-1] == 1:
                self._switch(f"{self.stage_name}/decode")
            elif kind == "decoder" and (embeds is None or _past(kwargs) is not None):
                self._switch(f"{self.stage_name}/prefill")
            else:
                self._switch(f"{self.stage_name}/nll")
        if outer:
            self.current.calls += 1
        if kind != "decoder":
            return
        x = ids if ids is not None else embeds
        b, t = x.shape[0], x.shape[1]
        ph = self.current
        ph.rows += b
        ph.tokens_run += b * t
        mask = kwargs.get("attention_mask")
        if mask is not None and mask.dim() == 2:
            self._pending_real.append(mask[:, -t:].sum())
        else:
            ph.tokens_real += b * t
        if len(self._pending_real) > 256:
            self._flush()

    def _flush(self) -> None:
        if self._pending_real and self.phase is not None:
            self.phases.setdefault(self.phase, Phase()).tokens_real += int(torch.stack(self._pending_real).sum())
        self._pending_real = []

    def _leave(self) -> None:
        if self.stage_name is not None:
            self.depth -= 1

    def _linear(self, module, args, _out) -> None:
        if self.stage_name is None:
            return
        x = args[0]
        rows = x.numel() // module.in_features
        flops = 2.0 * rows * module.in_features * module.out_features
        if torch.is_grad_enabled():
            if module.weight.requires_grad:
                flops *= 3
            elif x.requires_grad:
                flops *= 2
        ph = self.current
        ph.linear_flops += flops
        ph.linear_calls += 1
        ph.linear_rows += rows

    def _attention(self, module, args, kwargs) -> None:
        if self.stage_name is None:
            return
        h = args[0] if args else kwargs["hidden_states"]
        b, q = h.shape[0], h.shape[1]
        mask = kwargs.get("attention_mask")
        if isinstance(mask, torch.Tensor) and mask.dim() == 4:
            kv = mask.shape[-1]
        else:
            past = kwargs.get("past_key_values", kwargs.get("cache"))
            kv = q + (past.get_seq_length(module.layer_idx) if past is not None else 0)
        cfg = module.config
        width = cfg.num_attention_heads * getattr(module, "head_dim", cfg.hidden_size // cfg.num_attention_heads)
        flops = 4.0 * b * q * kv * width
        if torch.is_grad_enabled() and (h.requires_grad or any(p.requires_grad for p in module.parameters())):
            flops *= 3
        self.current.attention_flops += flops

    @contextmanager
    def stage(self, name: str, split: bool = False):
        """Count everything that runs inside as stage `name` (or its prefill/decode/nll phases)."""
        self.stage_name, self.split, self.depth = name, split, 0
        self.phase = None
        self._switch(f"{name}/prefill" if split else name)
        try:
            yield self
        finally:
            self._switch("")  # closes the last phase's interval
            self.phases.pop("", None)
            self.stage_name, self.phase = None, None

    def take(self, prefix: str) -> dict[str, Phase]:
        """The phases whose names start with prefix (and forget them)."""
        got = {k: v for k, v in self.phases.items() if k == prefix or k.startswith(prefix + "/")}
        for k in got:
            del self.phases[k]
        return got
