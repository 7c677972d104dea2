"""One device resolver for the whole package, and moving (nested) batches to a device.

`resolve_device("auto" | "cpu" | "cuda" | "cuda:N" | "mps", local_rank)` is what every command and the
training loops call: "auto" picks the GPU when one is visible; a device this machine does not have is a
ValueError that names the fix (the CLI prints it as one line), never a CUDA traceback later on.
"""

from __future__ import annotations

import torch

__all__ = ["resolve_device", "to_device"]


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


def to_device(batch, device):
    """Tensors of a batch (a tensor, or dicts / lists / tuples of them) moved to `device`; the rest as is."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch
