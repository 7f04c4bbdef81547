"""AdamW for bf16/fp16 weights without an fp32 master copy.

A learning rate of 1e-5 on bf16 weights mostly rounds away (a bf16 weight of 0.02
has a spacing of 1.2e-4), which is why DeepSpeed keeps fp32 master weights. Those
cost 4 bytes a parameter more; instead the update is computed in fp32 and the new
weight is rounded stochastically to bf16 (unbiased: small updates survive in
expectation). Moments stay in fp32. fp32 weights take the plain torch AdamW path.
"""

from __future__ import annotations

import torch


def stochastic_round_to_bf16(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Round fp32 to bf16 up or down with probability given by the distance (unbiased)."""
    bits = x.contiguous().view(torch.int32)
    noise = torch.randint(0, 1 << 16, x.shape, device=x.device, dtype=torch.int32, generator=generator)
    return ((bits + noise) & -65536).view(torch.float32).to(torch.bfloat16)


class LowPrecisionAdamW(torch.optim.Optimizer):
    """AdamW with fp32 moments and stochastically rounded bf16 weights (fp16: nearest rounding)."""

    def __init__(self, params, lr: float, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0,
                 seed: int = 0):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))
        self._seed = seed
        self._generators: dict[torch.device, torch.Generator] = {}

    def _gen(self, device: torch.device) -> torch.Generator:
        if device not in self._generators:
            self._generators[device] = torch.Generator(device=device).manual_seed(self._seed)
        return self._generators[device]

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            lr, (b1, b2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p, dtype=torch.float32)
                    state["exp_avg_sq"] = torch.zeros_like(p, dtype=torch.float32)
                state["step"] += 1
                t = state["step"]
                g = p.grad.float()
                m, v = state["exp_avg"], state["exp_avg_sq"]
                m.mul_(b1).add_(g, alpha=1 - b1)
                v.mul_(b2).addcmul_(g, g, value=1 - b2)
                w = p.float()
                w.mul_(1 - lr * wd)
                denom = (v / (1 - b2 ** t)).sqrt_().add_(eps)
                w.addcdiv_(m, denom, value=-lr / (1 - b1 ** t))
                if p.dtype == torch.bfloat16:
                    p.copy_(stochastic_round_to_bf16(w, self._gen(p.device)))
                else:
                    p.copy_(w)
        return None


def make_optimizer(params: list[torch.nn.Parameter], lr: float, weight_decay: float, seed: int = 0):
    """torch AdamW for fp32 weights, LowPrecisionAdamW for bf16/fp16 ones."""
    if all(p.dtype == torch.float32 for p in params):
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    return LowPrecisionAdamW(params, lr=lr, weight_decay=weight_decay, seed=seed)
