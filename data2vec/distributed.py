"""Scale-out with `torch.distributed` (DDP launched by `torchrun`): process group, rank helpers, reductions.

`torchrun --nproc_per_node N -m data2vec pretrain ...` starts N processes with RANK, LOCAL_RANK,
WORLD_SIZE, MASTER_ADDR and MASTER_PORT set; `init_distributed` reads them and joins the group (NCCL on
CUDA, gloo on CPU). Without them everything runs as one process and every helper is a no-op.

The EMA teacher stays identical on every rank without communication: all ranks build the model from the
same seed, DDP broadcasts rank 0's parameters at wrap time, gradients are all-reduced so every rank
takes the same optimiser step, and the EMA update is a deterministic function of the student's
parameters. `checksum` + `all_gather_floats` let the engine verify this at every checkpoint.

Differences from the original: fairseq/BEiT use their own launch utilities; this uses torchrun only.
"""

from __future__ import annotations

import atexit
import os
from datetime import timedelta

import torch
import torch.distributed as dist


def env_world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def init_distributed(device: str = "cpu", timeout_s: float = 300.0) -> tuple[int, int, int]:
    """Join the process group when launched by torchrun; returns (rank, local_rank, world_size).

    device "cuda" selects NCCL and binds this process to GPU LOCAL_RANK; anything else uses gloo.
    """
    world = env_world_size()
    if world <= 1:
        return 0, 0, 1
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(local_rank)
        timeout = timedelta(seconds=timeout_s)
        dist.init_process_group(backend=backend, timeout=timeout, store=attempt_store(rank, world, timeout),
                                rank=rank, world_size=world)
        # the CLI leaves the group when its run ends; a library caller (`engine.pretrain` under torchrun) may not,
        # and a process that exits with the gloo group alive can abort in its teardown ("terminate called without
        # an active exception", seen once in the suite): leave it at exit at the latest
        atexit.register(cleanup)
    return rank, local_rank, world


def attempt_store(rank: int, world: int, timeout: timedelta) -> dist.Store:
    """The rendezvous store of torchrun's MASTER_ADDR:MASTER_PORT with a key prefix per launch attempt.

    Under `torchrun --max-restarts` the store outlives a failed attempt, and a relaunched rank could read the
    dead attempt's process-group addresses before the new rank 0 overwrites them; gloo then waits on a port
    nobody listens on (seen here: "Connection refused" until the timeout, then again on every relaunch). A
    prefix with TORCHELASTIC_RESTART_COUNT gives every attempt its own keys."""
    agent_hosts = os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"  # torchrun's agent serves the store
    store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world,
                          is_master=rank == 0 and not agent_hosts, timeout=timeout)
    return dist.PrefixStore(f"data2vec/attempt_{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}", store)


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    """True on rank 0 (the only rank that logs, plots and writes checkpoints)."""
    return get_rank() == 0


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_mean(values: torch.Tensor) -> torch.Tensor:
    """Mean over ranks of a float tensor (a copy; the input is untouched)."""
    out = values.detach().clone()
    if is_distributed():
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        out /= dist.get_world_size()
    return out


def all_reduce_max(values: torch.Tensor) -> torch.Tensor:
    """Element-wise max over ranks (used for 'any rank saw a signal / a non-finite loss')."""
    out = values.detach().clone()
    if is_distributed():
        dist.all_reduce(out, op=dist.ReduceOp.MAX)
    return out


def all_gather_object(obj) -> list:
    """Every rank's `obj` (picklable), in rank order; `[obj]` without a group."""
    if not is_distributed():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def checksum(module: torch.nn.Module, trainable: bool | None = None) -> float:
    """Sum of |p| + p over parameters (float64), optionally only frozen (False) or trainable (True) ones.

    Equal checksums on all ranks are a cheap test that the weights agree (used for the EMA teacher).
    """
    total = torch.zeros((), dtype=torch.float64)
    for p in module.parameters():
        if trainable is None or p.requires_grad == trainable:
            q = p.detach().to(device="cpu", dtype=torch.float64)
            total += q.abs().sum() + q.sum() * 1e-3
    return float(total)
