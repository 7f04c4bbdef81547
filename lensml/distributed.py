"""Data parallelism through accelerate (`accelerate launch` or torchrun), and sharded training (FSDP2).

Each process takes a share of the probe texts and of every training batch; sums
and gradients are all-reduced, so all processes keep identical weights and the
result equals a one-process run up to floating-point summation order. Only the
main process writes outputs. Without a launcher everything here is a no-op.

Full-parameter training of a model whose weights, gradients and AdamW state do not fit
one device is sharded instead when the launch asks for it (`accelerate launch
--config_file configs/accelerate/fsdp.yaml`, which sets ACCELERATE_USE_FSDP, or
LENSML_FSDP=1 under torchrun): a copy of the model is split over the processes with
PyTorch's FSDP2 (`fully_shard`, one unit per decoder layer and one for the rest), so each
process holds 1/world of every parameter, gradient and optimiser moment; gradients are
reduce-scattered (summed, as the replicated path sums them), and after training the full
weights are gathered back into the model every process loaded, which then evaluates and
saves as in any run. It runs wherever torch.distributed does, the CPU (gloo) included.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache

import torch
from accelerate import PartialState
from accelerate.utils import reduce
from torch import nn
from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard
from torch.distributed.tensor import DTensor

log = logging.getLogger(__name__)


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


def _env_flag(name: str, default: str = "false") -> bool:
    return os.environ.get(name, default).strip().lower() in ("1", "true", "yes", "on")


def fsdp_requested() -> bool:
    """Does the launch ask for sharded training? accelerate launch with an FSDP config sets
    ACCELERATE_USE_FSDP=true (configs/accelerate/fsdp.yaml); under torchrun, LENSML_FSDP=1."""
    return is_distributed() and (_env_flag("ACCELERATE_USE_FSDP") or _env_flag("LENSML_FSDP"))


def is_sharded(params: Sequence[torch.Tensor]) -> bool:
    """Are these parameters FSDP shards (DTensors) rather than whole tensors?"""
    return any(isinstance(p, DTensor) for p in params)


def describe(params: Sequence[torch.Tensor]) -> dict:
    """What the manifest records about how training was spread over processes.

    parameters_held: elements of the trained parameters this process actually stored while
    training (its shards under FSDP, everything when replicated), beside their full count.
    """
    held = sum((p.to_local() if isinstance(p, DTensor) else p).numel() for p in params)
    return {"engine": "fsdp2" if is_sharded(params) else "data-parallel", "world_size": world_size(),
            "parameters_held": held, "parameters": sum(p.numel() for p in params)}


def busiest_micro_steps(step_idx: list[int], micro: int) -> int:
    """Micro-steps of the process with the most items of this step (my_share's split).

    Under FSDP every forward and backward is a collective (all-gathers, reduce-scatters), so a
    process with fewer items runs extra zero-weight micro-steps until it has done as many.
    """
    w = world_size()
    return max(math.ceil(sum(1 for i in step_idx if i % w == r) / micro) for r in range(w))


class ShardedRoot(nn.Module):
    """The outermost FSDP unit: calling it runs fn(model, *args) with the parameters outside the
    decoder layers (embeddings, final norm, LM head) gathered, and each layer gathered as it runs.

    Training code reaches the decoder and the LM head separately (lensml.methods.finetune computes
    logits only where a label is), so the unit around them is this wrapper rather than the model.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, fn: Callable, *args):
        return fn(self.model, *args)


def _replica_on_meta(model: nn.Module) -> nn.Module:
    """An empty copy of model (same class, config, tied weights and per-parameter dtypes): no memory."""
    with torch.device("meta"):
        twin = type(model)(model.config)
    for name, p in twin.named_parameters():
        want = model.get_parameter(name).dtype
        if p.dtype != want:
            p.data = p.data.to(want)
    return twin


@contextmanager
def sharded(model: nn.Module, layers_of: Callable[[nn.Module], Sequence[nn.Module]],
            trained: set[str]) -> Iterator[ShardedRoot]:
    """A copy of model sharded over the processes (FSDP2), trained instead of it, then gathered back.

    Yields the ShardedRoot to run the copy with (its .model has the same parameter names, with
    DTensor shards; those named in `trained` require grad). When the block exits normally every
    process all-gathers each parameter in turn and writes it into model, so model ends as a
    one-process run would leave it. The copy starts on the meta device: no process ever holds a
    second full set of weights.
    """
    dev = device()
    mesh = init_device_mesh(dev.type, (world_size(),))
    reshard = _env_flag("FSDP_RESHARD_AFTER_FORWARD", "true")
    twin = _replica_on_meta(model)
    root = ShardedRoot(twin)
    units = [*layers_of(twin), root]
    for unit in units:
        fully_shard(unit, mesh=mesh, reshard_after_forward=reshard)
    for unit in units:
        # Sum, not average, over processes: each process's gradients are already weighted by its share
        # of the global batch (lensml.training.optimise), as the replicated all-reduce sums them.
        unit.set_gradient_divide_factor(1.0)
        unit.set_force_sum_reduction_for_comms(True)
    root.to_empty(device=dev)
    set_model_state_dict(twin, model.state_dict(), options=StateDictOptions(full_state_dict=True))
    for name, buf in model.named_buffers():  # non-persistent ones (rotary frequencies) are in no state dict
        owner, _, leaf = name.rpartition(".")
        twin.get_submodule(owner)._buffers[leaf] = buf.detach().clone()
    for name, p in twin.named_parameters():
        p.requires_grad_(name in trained)
    log.info("training sharded with FSDP2 over %d processes (%s)", world_size(), dev.type)
    yield root
    with torch.no_grad():
        for name, p in twin.named_parameters():  # same order on every process: the all-gathers pair up
            model.get_parameter(name).copy_(p.full_tensor() if isinstance(p, DTensor) else p)
