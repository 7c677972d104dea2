"""Speed benchmark: one training step (forward + backward) of our Transformer core against two references.

Compares, at equal size and with identical weights,

- ``ours``:  `data2vec.transformer.Encoder` built from `get_preset("text", "base", ...)` (post-LN);
- ``hf``:    `transformers`' `BertModel(...).encoder` (the `BertEncoder` stack) with
             ``attn_implementation="sdpa"``; its padding mask is built inside the timed step with
             `transformers.masking_utils.create_bidirectional_mask`, exactly as `BertModel.forward` does;
- ``torch``: `torch.nn.TransformerEncoder` of `TransformerEncoderLayer(batch_first=True, norm_first=False)`.

What is timed (the same for all three): only the encoder stack, no embedding layer and no head. The input
is a float tensor x (B, T, D) with requires_grad=True (as if it came from an embedding layer), optionally
with a key-padding mask; one step = zero the gradients, y = stack(x), y.backward(g) with a fixed random
g (B, T, D) (i.e. the loss <y, g>). All three are post-LN, exact GELU (erf), FFN width 4D, head width 64,
LayerNorm eps 1e-5, dropout 0 everywhere (so the three compute the same function; checked below), train
mode, fp32. Our weights are copied into the two references and the outputs compared once per size
(``max_abs_diff`` in the JSON) so a mismatch in settings cannot go unnoticed. The sizes, the inputs, the
three stacks, the weight copy and the comparison live in the sibling `speed_models.py`; this script holds
the timing, the memory measurement and the report.

Protocol: threads set with `torch.set_num_threads` (default: the cores this process may use); every
implementation gets `--warmup` untimed steps, then `--reps` repetitions in which the three are run
interleaved (the order rotates each repetition: ABC, BCA, CAB, ...) so that machine noise hits all of them
alike; the median seconds per step and the ratios ``ours_over_hf`` and ``ours_over_torch`` (< 1 = ours
faster) are printed and written to `--out`. On CUDA the device is synchronised before each clock read.

Peak memory of one step: on CUDA `torch.cuda.max_memory_allocated` after `reset_peak_memory_stats`, minus
the memory allocated before the step. On CPU torch's allocator keeps no statistics, so each
implementation runs one step in a fresh subprocess (Linux): the kernel's RSS high-water mark (VmHWM) is
reset just before the step (/proc/self/clear_refs), and the mark after the step minus the RSS before it
is the step's own peak (activations kept for backward, gradients, temporaries) as the operating system
sees it; glibc is told to mmap every block >= 64 KiB so that freed tensors leave the RSS at once.

Run:  python benchmarks/speed.py                    (CPU, both default sizes, ~7 min on 2 cores)
      python benchmarks/speed.py --device cuda --reps 30
      python benchmarks/speed.py --sizes 4x256:32 --reps 5 --no-memory --out /tmp/speed.json

Differences from a real training step: no optimiser update and no embedding/head (they are identical
work for the three and would only dilute the ratios).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn

from data2vec.precision import cpu_model

# the sibling speed_models.py, also when this script is loaded by its path (tests/test_benchmarks.py)
if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
from speed_models import (  # noqa: E402
    IMPLEMENTATIONS,
    NORM_EPS,
    VARIANTS,
    Size,
    build_all,
    build_hf,
    build_ours,
    build_torch,
    forward_fn,
    make_inputs,
    max_abs_diff,
)

DEFAULT_SIZES = "4x256:32,12x768:8"  # depth x width : batch (mini preset, base preset with a smaller batch)
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "speed.json"


# ---------------------------------------------------------------------------------------------------
# Sizes
# ---------------------------------------------------------------------------------------------------


def parse_sizes(text: str) -> list[Size]:
    """Parse "4x256:32,12x768:8" (depth x width : batch) into sizes; widths must be multiples of 64."""
    sizes = []
    for item in text.split(","):
        item = item.strip()
        try:
            shape, batch = item.split(":")
            depth, dim = shape.lower().split("x")
            size = Size(int(depth), int(dim), int(batch))
        except ValueError:
            raise ValueError(
                f"--sizes: cannot parse {item!r}; write DEPTHxWIDTH:BATCH, e.g. 4x256:32,12x768:8"
            ) from None
        if size.depth < 1 or size.batch < 1 or size.dim < 64 or size.dim % 64:
            raise ValueError(f"--sizes: {item!r} needs depth >= 1, batch >= 1 and a width that is a multiple of 64 "
                             "(heads are 64 wide)")
        sizes.append(size)
    return sizes


# ---------------------------------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------------------------------


def make_step(impl: str, model: nn.Module, x: Tensor, padding_mask: Tensor | None, g: Tensor,
              bf16: bool = False) -> Callable[[], None]:
    """One training step without the optimiser: zero gradients, forward (under bf16 autocast with `bf16`, as
    `--precision bf16` trains), backward of the loss <y, g>."""
    fwd = forward_fn(impl, model, padding_mask)

    def step() -> None:
        model.zero_grad(set_to_none=True)
        x.grad = None
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
            y = fwd(x)  # (B, T, D)
        y.backward(g.to(y.dtype))

    return step


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_interleaved(
    steps: dict[str, Callable[[], None]], reps: int, warmup: int, device: str
) -> dict[str, list[float]]:
    """Seconds per step of each callable, run interleaved with a rotating order (ABC, BCA, CAB, ...)."""
    names = list(steps)
    for _ in range(warmup):
        for name in names:
            steps[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for rep in range(reps):
        order = names[rep % len(names):] + names[:rep % len(names)]
        for name in order:
            _sync(device)
            start = time.perf_counter()
            steps[name]()
            _sync(device)
            times[name].append(time.perf_counter() - start)
    return times


# ---------------------------------------------------------------------------------------------------
# Peak memory
# ---------------------------------------------------------------------------------------------------


def _proc_status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def step_peak_bytes(impl: str, size: Size, tokens: int, variant: str, device: str) -> int:
    """Peak memory of one step of `impl` above what was in use just before it (module docstring: method).

    CPU (Linux): the kernel's RSS high-water mark (VmHWM) is reset to the current RSS by writing "5" to
    /proc/self/clear_refs right before the step, so the build's own transient peak does not hide the step's.
    """
    torch.manual_seed(0)
    model = {"ours": build_ours, "hf": build_hf, "torch": build_torch}[impl](size).to(device).float().train()
    x, padding_mask, g = make_inputs(size, tokens, variant, device)
    step = make_step(impl, model, x, padding_mask, g)
    if device.startswith("cuda"):
        _sync(device)
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        step()
        _sync(device)
        return torch.cuda.max_memory_allocated() - before
    before = _proc_status_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS (Linux >= 4.0)
    step()
    return (_proc_status_kib("VmHWM") - before) * 1024


def measure_peak_memory(impl: str, size: Size, tokens: int, variant: str, device: str, threads: int) -> int:
    """On CUDA in-process; on CPU in a fresh subprocess so that the RSS high-water mark is this step's alone."""
    if device.startswith("cuda"):
        return step_peak_bytes(impl, size, tokens, variant, device)
    if not Path("/proc/self/clear_refs").exists():
        raise ValueError("CPU peak memory needs Linux (/proc/self/clear_refs); pass --no-memory on this system")
    # glibc: serve every tensor-sized block by mmap so that freed memory leaves the RSS at once
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    cmd = [sys.executable, str(Path(__file__).resolve()), "--memory-child", impl, "--sizes",
           f"{size.depth}x{size.dim}:{size.batch}", "--tokens", str(tokens), "--variants", variant,
           "--threads", str(threads), "--device", device]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    if result.returncode != 0:
        raise RuntimeError(f"memory subprocess for {impl} failed:\n{result.stderr[-2000:]}")
    return int(result.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------------
# Environment, report, main
# ---------------------------------------------------------------------------------------------------


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS / Windows
        return os.cpu_count() or 1


def environment(device: str) -> dict:
    import transformers

    env = {
        "python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
        "threads": torch.get_num_threads(), "interop_threads": torch.get_num_interop_threads(),
        "cores_available": available_cores(), "cpu": cpu_model(), "platform": platform.platform(), "device": device,
    }
    if device.startswith("cuda"):
        env["gpu"] = torch.cuda.get_device_name()
    return env


def summarise(times: dict[str, list[float]]) -> dict:
    """Medians and minima (seconds per step), the ratios ours/hf and ours/torch of both and paired per
    repetition, and the raw times."""
    med = {name: statistics.median(ts) for name, ts in times.items()}
    best = {name: min(ts) for name, ts in times.items()}
    out = {"median_s": med, "min_s": best, "times_s": times}
    for other in ("hf", "torch"):
        if other in med:
            out[f"ours_over_{other}"] = med["ours"] / med[other]
            out[f"ours_over_{other}_min"] = best["ours"] / best[other]  # best-of: less sensitive to a busy machine
            # paired: the median over repetitions of ours / other within the same repetition (run seconds
            # apart), which cancels the slow drifts of a shared host that move both times together
            ratios = (a / b for a, b in zip(times["ours"], times[other], strict=True))  # one time per name per rep
            out[f"ours_over_{other}_paired"] = statistics.median(ratios)
    return out


def add_headline(entry: dict) -> None:
    """Copy one variant's medians and ratios to the top of a size's entry (``nopad`` when measured).

    ``results[size]["median_s"]``, ``["ours_over_hf"]`` and ``["ours_over_torch"]`` are then the headline
    figures; ``["headline_variant"]`` says which variant they come from; ``["variants"]`` keeps them all.
    """
    variant = "nopad" if "nopad" in entry["variants"] else next(iter(entry["variants"]))
    summary = entry["variants"][variant]
    entry["headline_variant"] = variant
    entry["median_s"] = dict(summary["median_s"])
    entry["ours_over_hf"] = summary["ours_over_hf"]
    entry["ours_over_torch"] = summary["ours_over_torch"]


def run_benchmark(sizes: list[Size], tokens: int, variants: list[str], reps: int, warmup: int, device: str,
                  reps_large: int | None = None, memory: bool = True, threads: int = 1, log=print,
                  bf16: bool = False) -> dict:
    """Time every (size, variant); sizes of width >= 512 use `reps_large` repetitions when given."""
    results = {}
    for size in sizes:
        n_reps = reps_large if (reps_large is not None and size.dim >= 512) else reps
        models = build_all(size, device)
        entry = {"depth": size.depth, "dim": size.dim, "heads": size.heads, "ffn": 4 * size.dim,
                 "batch": size.batch, "tokens": tokens, "reps": n_reps, "warmup": warmup, "variants": {}}
        for variant in variants:
            x, padding_mask, g = make_inputs(size, tokens, variant, device)
            diff = max_abs_diff(models, x, padding_mask)
            steps = {name: make_step(name, m, x, padding_mask, g, bf16) for name, m in models.items()}
            summary = summarise(time_interleaved(steps, n_reps, warmup, device))
            summary["max_abs_diff_vs_ours"] = diff
            if padding_mask is not None:
                summary["padded_fraction"] = padding_mask.float().mean().item()
            entry["variants"][variant] = summary
            med = summary["median_s"]
            log(f"{size.name} T={tokens} {variant:5s} median s/step: "
                + "  ".join(f"{n}={med[n]:.4f}" for n in med)
                + f"  | ours/hf={summary['ours_over_hf']:.3f}  ours/torch={summary['ours_over_torch']:.3f}"
                + f"  (max |diff| {max(diff.values()):.1e}, {n_reps} reps)")
        del models
        add_headline(entry)
        if memory:
            peak = {impl: measure_peak_memory(impl, size, tokens, "nopad", device, threads) for impl in IMPLEMENTATIONS}
            entry["peak_step_memory_mib"] = {k: v / 2**20 for k, v in peak.items()}
            entry["peak_memory_ours_over_hf"] = peak["ours"] / peak["hf"]
            entry["peak_memory_ours_over_torch"] = peak["ours"] / peak["torch"]
            log(f"{size.name} peak step memory (MiB, nopad): "
                + "  ".join(f"{k}={v / 2**20:.0f}" for k, v in peak.items()))
        results[size.name] = entry
    return results


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Forward+backward time of one training step: our Encoder vs transformers' BertEncoder (sdpa) "
                    "vs torch.nn.TransformerEncoder, same size, same weights, interleaved, medians.")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="where to run (default cpu)")
    p.add_argument("--sizes", default=DEFAULT_SIZES,
                   help="comma-separated DEPTHxWIDTH:BATCH (heads = width/64, FFN = 4 x width); default %(default)s")
    p.add_argument("--tokens", type=int, default=128, help="sequence length T (default 128)")
    p.add_argument("--variants", default=",".join(VARIANTS),
                   help="nopad (no padding mask) and/or pad (random 0-50%% tail padding per sequence)")
    p.add_argument("--reps", type=int, default=15,
                   help="timed repetitions per implementation for sizes narrower than 512 (default 15); more reps "
                        "= steadier medians on a busy machine")
    p.add_argument("--reps-large", type=int, default=8,
                   help="repetitions for widths >= 512 (default 8; a 12x768 step takes seconds on a laptop CPU, and "
                        "on a shared host single steps vary by +-20%%, so fewer reps cannot settle a 5%% difference)")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps per implementation first (default 1)")
    p.add_argument("--threads", type=int, default=available_cores(),
                   help="torch.set_num_threads (default: the cores this process may use)")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses (faster)")
    p.add_argument("--bf16", action="store_true", help="every step under bf16 autocast (the fp32 weights and the "
                   "outputs compared before timing stay fp32)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON file to write (default %(default)s)")
    p.add_argument("--memory-child", choices=IMPLEMENTATIONS, help=argparse.SUPPRESS)  # internal: one memory probe
    return p


def main(argv: list[str] | None = None) -> dict:
    args = build_parser().parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda: no CUDA device is visible; use --device cpu")
    if args.reps < 1 or args.reps_large < 1 or args.warmup < 0 or args.tokens < 2 or args.threads < 1:
        raise ValueError("--reps/--reps-large must be >= 1, --warmup >= 0, --tokens >= 2, --threads >= 1")
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    if not variants or any(v not in VARIANTS for v in variants):
        raise ValueError(f"--variants: got {args.variants!r}; use a comma-separated subset of {VARIANTS}")
    sizes = parse_sizes(args.sizes)
    torch.set_num_threads(args.threads)
    if args.memory_child:  # internal: print the peak bytes of one step and exit
        print(step_peak_bytes(args.memory_child, sizes[0], args.tokens, variants[0], args.device))
        return {}
    env = environment(args.device)
    print("environment:", json.dumps(env))
    results = run_benchmark(sizes, args.tokens, variants, args.reps, args.warmup, args.device,
                            reps_large=args.reps_large, memory=not args.no_memory, threads=args.threads,
                            bf16=args.bf16)
    report = {
        "what": "median seconds of one training step (zero grads + forward + backward of <y, g>) of the encoder "
                "stack only: x (B, T, D) float input with requires_grad, no embedding layer, no head, no optimiser",
        "settings": {"post_ln": True, "activation": "gelu (exact, erf)", "ffn": "4 x width", "head_width": 64,
                     "layer_norm_eps": NORM_EPS, "dropout": 0.0, "mode": "train",
                     "dtype": "bfloat16 autocast, fp32 weights" if args.bf16 else "float32",
                     "same_weights": True, "interleaved": "rotating order per repetition",
                     "pad_variant": "random 0-50% tail padding per sequence (first one full); key-padding mask"},
        "implementations": {
            "ours": "data2vec.transformer.Encoder(get_preset('text', 'base', dim, depth, heads, dropout=0))",
            "hf": "transformers BertModel(attn_implementation='sdpa').encoder (BertEncoder); padding mask from "
                  "masking_utils.create_bidirectional_mask inside the step, as BertModel.forward does",
            "torch": "torch.nn.TransformerEncoder(TransformerEncoderLayer(batch_first=True, norm_first=False, "
                     "activation='gelu', dropout=0), enable_nested_tensor=False) with src_key_padding_mask",
        },
        "memory_method": None if args.no_memory else (
            "CUDA: torch.cuda.max_memory_allocated during one step minus allocated before it" if args.device == "cuda"
            else "CPU: RSS high-water mark (VmHWM, reset via /proc/self/clear_refs just before) after one "
                 "step minus the RSS before it, one fresh subprocess per implementation (glibc "
                 "MALLOC_MMAP_THRESHOLD_=65536 so freed tensors leave the RSS), nopad variant, first step"),
        "command": "python benchmarks/speed.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "environment": env,
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print("ratios (median time ours / other; < 1 = ours faster):")
    for name, entry in results.items():
        for variant, s in entry["variants"].items():
            print(f"  {name} {variant:5s} ours_over_hf={s['ours_over_hf']:.3f}"
                  f"  ours_over_torch={s['ours_over_torch']:.3f}"
                  f"  (paired per repetition: {s['ours_over_hf_paired']:.3f}, {s['ours_over_torch_paired']:.3f})")
    print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    main()
