"""The precision a run computes in, chosen from what the hardware can do.

Two sound choices (mixed precision as in the data2vec 2.0 release, which trains in fp16/bf16 with fp32 master
weights): "fp32" (everything float32) and "bf16" (`torch.autocast` to bfloat16 around the forward pass: matrix
products and convolutions in bf16, norms, softmax and losses in float32; the weights, the optimiser state and
the EMA teacher's update stay float32). "auto" (every command's default) picks bf16 where it is faster:

- CUDA: bf16 when the GPU supports it (`torch.cuda.is_bf16_supported`).
- CPU: bf16 only when the CPU has bf16 units (`avx512_bf16` or `amx_bf16` among its flags): there a bf16
  matrix product runs 2-3x faster than a float32 one. Without them torch emulates bf16 and it is 60-90x
  slower, so auto keeps float32 and an explicit bf16 request gets a warning with the slowdown measured here.
- Where the flags cannot be read (not Linux), a short timing of both matrix products decides.

Differences from the original: fairseq trains in fp16 with a loss scaler on GPUs; bf16 needs no scaler, and the
CPU path is this project's own (the releases never trained on CPUs).
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

# torch is imported inside the functions: the command line reads PRECISIONS and PRECISION_HELP to build its help
PRECISIONS = ("auto", "fp32", "bf16")
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")  # instruction sets with native bf16 dot products
PRECISION_HELP = ("auto (default): bf16 autocast where the hardware has bf16 units (a GPU with bf16, a CPU with "
                  "avx512_bf16 or amx_bf16: 2-3x faster matrix products), else fp32; fp32: everything in float32 "
                  "(bit-exact comparisons, old CPUs); bf16: autocast to bfloat16 (weights, optimiser and EMA stay "
                  "float32). The choice is printed at the start")


@dataclass(frozen=True)
class Precision:
    """A resolved precision: "fp32" or "bf16", and why it was chosen (printed at the start of a run)."""

    name: str
    reason: str

    @property
    def bf16(self) -> bool:
        return self.name == "bf16"

    def autocast(self, device_type: str):
        """The forward pass's context: bf16 autocast, or nothing for fp32."""
        import torch

        return torch.autocast(device_type, dtype=torch.bfloat16) if self.bf16 else nullcontext()

    def describe(self) -> str:
        return f"precision: {self.name} ({self.reason})"


def cpu_flags() -> set[str] | None:
    """The CPU's instruction-set flags from /proc/cpuinfo (Linux), or None where they cannot be read."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return None


def cpu_model() -> str:
    """The CPU's model name (Linux /proc/cpuinfo), else platform's processor string."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def cpu_bf16_units(flags: set[str] | None = None) -> list[str] | None:
    """The bf16 flags this CPU has ([] = none), or None where the flags cannot be read."""
    flags = cpu_flags() if flags is None else flags
    return None if flags is None else [f for f in BF16_CPU_FLAGS if f in flags]


def matmul_gflops(dtype, n: int = 512, min_seconds: float = 0.15, device: str = "cpu") -> float:
    """GFLOP/s of an n x n matrix product in `dtype` on `device` (the CPU with the current threads; 2 n^3 flops
    each)."""
    import torch

    a, b = torch.randn(n, n, device=device).to(dtype), torch.randn(n, n, device=device).to(dtype)
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    a @ b  # warm-up: the kernel choice and the thread pool
    sync()
    every = 8 if torch.device(device).type == "cuda" else 1  # a GPU queues kernels: synchronise only now and then
    reps, start = 0, time.perf_counter()
    while True:
        a @ b
        reps += 1
        if reps % every == 0:
            sync()
            elapsed = time.perf_counter() - start
            if elapsed >= min_seconds:
                return 2 * n**3 * reps / elapsed / 1e9


def choose_precision(requested: str, device) -> Precision:
    """The precision of a run on `device` (a torch.device or its name) for --precision `requested`."""
    import torch

    if requested not in PRECISIONS:
        raise ValueError(f"--precision {requested!r} is not one of {', '.join(PRECISIONS)}; fix: e.g. --precision auto")
    kind = torch.device(device).type
    if requested == "fp32":
        return Precision("fp32", "asked for")
    if kind == "cuda":
        supported = torch.cuda.is_bf16_supported()
        if requested == "bf16":
            return Precision("bf16", "asked for" if supported else "asked for; this GPU emulates bf16 (slow)")
        return Precision("bf16", "auto: the GPU supports bf16") if supported else \
            Precision("fp32", "auto: this GPU has no bf16")
    if kind != "cpu":  # MPS and others: autocast support varies, fp32 is the safe default
        return Precision(requested if requested == "bf16" else "fp32", "asked for" if requested == "bf16" else
                         f"auto: fp32 on {kind}")
    return _choose_on_cpu(requested)


def _choose_on_cpu(requested: str) -> Precision:
    import torch

    units = cpu_bf16_units()
    if requested == "bf16":
        if units == []:
            fp32, bf16 = matmul_gflops(torch.float32), matmul_gflops(torch.bfloat16)
            return Precision("bf16", f"asked for; WARNING: this CPU has no bf16 units ({' / '.join(BF16_CPU_FLAGS)} "
                             f"not in its flags): a bf16 matrix product ran {fp32 / bf16:.0f}x slower than float32 "
                             f"here ({bf16:.1f} vs {fp32:.0f} GFLOP/s); fix: --precision fp32 (or auto)")
        return Precision("bf16", "asked for")
    if units:
        return Precision("bf16", f"auto: this CPU has {' and '.join(units)}; --precision fp32 turns it off")
    if units == []:
        return Precision("fp32", f"auto: this CPU has no bf16 units ({' / '.join(BF16_CPU_FLAGS)})")
    fp32, bf16 = matmul_gflops(torch.float32), matmul_gflops(torch.bfloat16)  # flags unreadable: measure
    if bf16 > 1.5 * fp32:
        return Precision("bf16", f"auto: a bf16 matrix product ran {bf16 / fp32:.1f}x faster than float32 here")
    return Precision("fp32", f"auto: bf16 was not faster here ({bf16:.0f} vs {fp32:.0f} GFLOP/s)")
