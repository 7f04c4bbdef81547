"""Data parallelism through accelerate (`accelerate launch` or torchrun).

Each process takes a share of the probe texts and of every training batch; sums
and gradients are all-reduced, so all processes keep identical weights and the
result equals a one-process run up to floating-point summation order. Only the
main process writes outputs. Without a launcher everything here is a no-op.
"""

from __future__ import annotations

import os
from functools import lru_cache

import torch
from accelerate import PartialState
from accelerate.utils import reduce


def is_distributed() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


@lru_cache(maxsize=1)
def _state():
    # Without a GPU, accelerate only forms a (gloo) process group when told it runs on CPU.
    return PartialState(cpu=not torch.cuda.is_available())


def rank() -> int:
    return _state().process_index if is_distributed() else 0


def world_size() -> int:
    return _state().num_processes if is_distributed() else 1


def is_main() -> bool:
    return rank() == 0


def device() -> torch.device:
    """This process's device under a launcher (cuda:LOCAL_RANK or cpu)."""
    return _state().device


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over processes (in place where possible) and return it."""
    if not is_distributed():
        return t
    return reduce(t, reduction="sum")


def all_reduce_grads(params: list[torch.nn.Parameter]) -> None:
    """Sum gradients over processes through one flat buffer."""
    if not is_distributed():
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = all_reduce_sum(torch.cat([g.reshape(-1) for g in grads]))
    offset = 0
    for p in params:
        n = p.numel()
        p.grad = flat[offset:offset + n].view_as(p).clone()
        offset += n


def my_share(indices: list[int]) -> list[int]:
    """This process's items of a list of sample indices (by index modulo world size)."""
    w, r = world_size(), rank()
    return [i for i in indices if i % w == r]
