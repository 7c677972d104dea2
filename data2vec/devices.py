"""One device resolver for the whole package, and moving (nested) batches to a device.

`resolve_device("auto" | "cpu" | "cuda" | "cuda:N" | "mps", local_rank)` is what every command and the
training loops call: "auto" picks the GPU when one is visible; a device this machine does not have is a
ValueError that names the fix (the CLI prints it as one line), never a CUDA traceback later on.

`set_threads(n)` is what `--threads n` does: n threads in torch's pool and in the BLAS / OpenMP pools of numpy and
scipy, which the probes' logistic regressions and k-NN run on.
"""

from __future__ import annotations

import os

import torch

__all__ = ["resolve_device", "set_threads", "to_device"]


def resolve_device(name: str = "auto", local_rank: int | None = None) -> torch.device:
    """The torch.device for a --device value. Under torchrun a plain "cuda" becomes this rank's GPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise ValueError(f"--device {name!r} is not a device; fix: use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {name}: CUDA is not available on this machine; fix: use --device cpu "
                             "(or auto)")
        if device.index is None and local_rank is not None:
            device = torch.device("cuda", local_rank)
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"--device {name}: only {torch.cuda.device_count()} GPU(s) here; fix: use cuda:0")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"--device {name}: MPS is not available on this machine; fix: use --device cpu")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"--device {name!r} is not supported; fix: use auto, cpu, cuda or cuda:N")
    return device


def set_threads(threads: int) -> None:
    """Run on `threads` CPU threads: torch's intra-op pool, the BLAS / OpenMP pools of the libraries numpy and scipy
    load (through threadpoolctl, which scikit-learn also uses) and the tokenizers library's pool. torch.set_num_threads
    alone leaves the others at one thread per core, so a `--threads 1` study still spread each probe's small BLAS
    calls over every core; with the other core busy that cost the probes 3x their wall clock (docs/performance.md,
    "Thread pools")."""
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(threads)
    # read when a library loads or its pool starts: scipy's own OpenBLAS loads with the first probe, and the
    # tokenizers library's Rust pool (RAYON_NUM_THREADS) starts with the first batch it encodes
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "RAYON_NUM_THREADS"):
        os.environ[name] = str(threads)
    threadpool_limits(limits=threads)  # the pools already loaded (numpy's OpenBLAS comes with torch)


def to_device(batch, device):
    """Tensors of a batch (a tensor, or dicts / lists / tuples of them) moved to `device`; the rest as is."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch
