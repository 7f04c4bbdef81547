"""AdamW for bf16/fp16 weights without an fp32 master copy.

A learning rate of 1e-5 on bf16 weights mostly rounds away (a bf16 weight of 0.02
has a spacing of 1.2e-4), which is why DeepSpeed keeps fp32 master weights. Those,
with fp32 moments, cost 12 bytes a parameter more, which on an 8B model's top two
layers pushes peak memory past a 24 GB card; instead the update is computed in fp32
and written back with stochastic rounding (unbiased: small updates survive in
expectation). fp32 weights take the plain torch AdamW path.
"""

from __future__ import annotations

import re

import torch
from torch.distributed.tensor import DTensor


def stochastic_round_to_bf16(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Round fp32 to bf16 up or down with probability given by the distance (unbiased)."""
    bits = x.contiguous().view(torch.int32)
    noise = torch.randint(0, 1 << 16, x.shape, device=x.device, dtype=torch.int32, generator=generator)
    return ((bits + noise) & -65536).view(torch.float32).to(torch.bfloat16)


class LowPrecisionAdamW(torch.optim.Optimizer):
    """AdamW for bf16/fp16 weights: fp32 math, moments stored in the weights' dtype, stochastic rounding.

    Memory per trained parameter is 2 (weight) + 2 (gradient) + 4 (two bf16 moments) bytes, against
    16 with fp32 master weights and fp32 moments; the math runs in fp32 in chunks so temporaries
    stay small. bf16 weights are rounded stochastically; moments and fp16 weights to nearest.
    """

    CHUNK = 1 << 24

    def __init__(self, params, lr: float, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0,
                 seed: int = 0):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))
        self._seed = seed
        self._generators: dict[torch.device, torch.Generator] = {}

    def _gen(self, device: torch.device) -> torch.Generator:
        if device not in self._generators:
            self._generators[device] = torch.Generator(device=device).manual_seed(self._seed)
        return self._generators[device]

    def _store(self, target: torch.Tensor, value: torch.Tensor) -> None:
        if target.dtype == torch.bfloat16:
            target.copy_(stochastic_round_to_bf16(value, self._gen(value.device)))
        else:
            target.copy_(value)

    @torch.no_grad()
    def step(self, closure=None):
        """One AdamW update; a closure, as torch optimisers take one, re-evaluates the loss first."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, (b1, b2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p)
                    state["exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                t = state["step"]
                # Sharded (FSDP) parameters update their local shard: the update is elementwise.
                flat = [(x.to_local() if isinstance(x, DTensor) else x).view(-1)
                        for x in (p, p.grad, state["exp_avg"], state["exp_avg_sq"])]
                for lo in range(0, flat[0].numel(), self.CHUNK):
                    w_, g_, m_, v_ = (x[lo:lo + self.CHUNK] for x in flat)
                    g = g_.float()
                    m = m_.float().mul_(b1).add_(g, alpha=1 - b1)
                    v = v_.float().mul_(b2).addcmul_(g, g, value=1 - b2)
                    w = w_.float().mul_(1 - lr * wd)
                    w.addcdiv_(m, (v / (1 - b2 ** t)).sqrt_().add_(eps), value=-lr / (1 - b1 ** t))
                    m_.copy_(m)  # moments: nearest rounding; their error does not accumulate in the weights
                    v_.copy_(v)
                    self._store(w_, w)
        return loss


#: Parameter names that take no weight decay: transformers' Trainer.get_decay_parameter_names patterns.
_NO_DECAY_NAMES = re.compile(r"bias|layernorm|rmsnorm|(?:^|\.)norm(?:$|\.)|_norm(?:$|\.)")


def no_decay_names(model: torch.nn.Module) -> set[str]:
    """Names of the norm weights and biases: the parameters weight decay must leave alone.

    The LENS authors (and every method they compare with) train through the HF Trainer, which
    decays only the other weights: pulling a norm's gain toward 0 shrinks the whole layer's
    output, and a bias has no scale to regularise. Same rule as Trainer.get_decay_parameter_names
    (parameters of nn.LayerNorm modules, and names with bias / layernorm / rmsnorm / norm), plus
    any module whose class name ends in "Norm" (LlamaRMSNorm, Gemma3RMSNorm) whatever its name.
    """
    out = set()
    for module_name, module in model.named_modules():
        is_norm = isinstance(module, torch.nn.LayerNorm) or type(module).__name__.endswith("Norm")
        for name, _ in module.named_parameters(recurse=False):
            full = f"{module_name}.{name}" if module_name else name
            if is_norm or _NO_DECAY_NAMES.search(full.lower()):
                out.add(full)
    return out


def param_groups(model: torch.nn.Module, params: list[torch.nn.Parameter], weight_decay: float) -> list[dict]:
    """AdamW parameter groups of params: weight decay for the weights, none for norms and biases (no_decay_names).

    Tied parameters (an LM head sharing the embedding) appear once, in the group of their first name.
    """
    skip = no_decay_names(model)
    wanted = {id(p) for p in params}
    decay, plain, seen = [], [], set()
    for name, p in model.named_parameters(remove_duplicate=False):
        if id(p) in wanted and id(p) not in seen:
            seen.add(id(p))
            (plain if name in skip else decay).append(p)
    stray = [p for p in params if id(p) not in seen]  # not the model's (a plugin's own tensors): decayed
    groups = [{"params": decay + stray, "weight_decay": weight_decay}, {"params": plain, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def make_optimizer(params: list[torch.nn.Parameter] | list[dict], lr: float, weight_decay: float, seed: int = 0):
    """torch AdamW for fp32 weights, LowPrecisionAdamW for bf16/fp16 ones; params may be param_groups()."""
    flat = [p for g in params for p in g["params"]] if params and isinstance(params[0], dict) else params
    if all(p.dtype == torch.float32 for p in flat):
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    return LowPrecisionAdamW(params, lr=lr, weight_decay=weight_decay, seed=seed)
