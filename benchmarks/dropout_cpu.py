"""Dropout on the CPU: torch's mask against one drawn 16 bits at a time, forward + backward.

Why: profiling a text update (`methods.py --profile`) puts 4-8 % of a float32 update and 6-13 % of a bf16 one in
`aten::bernoulli_`, the dropout masks: torch's CPU generator draws one random number per element, whatever the
dtype, so the masks do not get cheaper when the matrix products do. The alternative measured here splits each
64-bit random word into four 16-bit lanes and keeps an element when its lane is at least p * 65536 (the keep
probability is exact to 1/65,536), then scales by 1 / (1 - p) as dropout does. It is not used by the library
(docs/performance.md says why); this script is the measurement behind that decision.

What it measures: for each dtype, the median over `--repeats` of forward + backward through `F.dropout` and
through the lane mask on an (N, D) tensor (default 8,192 x 1,024: a mini text batch's FFN activations), one thread,
interleaved by `attention_cpu.time_pair` (one warm-up call each, the order alternating); and the lane mask's
observed drop rate (it must be p).

Run:  python benchmarks/dropout_cpu.py            (writes benchmarks/results/dropout_cpu.json)
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from data2vec.precision import cpu_model

# the interleaved timer of the sibling attention_cpu.py, also when this script is loaded by its path (the tests)
if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
from attention_cpu import time_pair  # noqa: E402

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "dropout_cpu.json"


def lane_dropout(x: torch.Tensor, p: float) -> torch.Tensor:
    """Dropout whose mask is four 16-bit lanes of each 64-bit random word: keep where lane >= p * 2^16."""
    n = x.numel()
    words = torch.empty((n + 3) // 4, dtype=torch.int64).random_(-(2**63), None)  # 64 uniform random bits each
    lanes = words.view(torch.int16)[:n].view(x.shape)  # (N/4,) int64 -> (N, D) int16, uniform on [-2^15, 2^15)
    keep = lanes >= round(p * 65536) - 32768  # bool, True = kept; P(keep) = 1 - p (to 1/65,536)
    return x * keep.to(x.dtype).mul_(1.0 / (1.0 - p))


def backward_step(fn, x0: torch.Tensor):
    """A callable: one forward + backward through fn on a leaf copy of x0 (its gradient reset each call)."""
    x = x0.detach().clone().requires_grad_()
    g = torch.ones_like(x0)

    def step():
        x.grad = None
        fn(x).backward(g)
    return step


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=8192)
    p.add_argument("--cols", type=int, default=1024)
    p.add_argument("--p", type=float, default=0.1, help="drop probability (default 0.1, data2vec text's)")
    p.add_argument("--repeats", type=int, default=8)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    torch.manual_seed(0)
    kinds = {"F.dropout": lambda x: F.dropout(x, args.p, training=True), "lane mask": lambda x: lane_dropout(x, args.p)}
    results = {}
    for dtype in (torch.float32, torch.bfloat16):
        x0 = torch.randn(args.rows, args.cols, dtype=dtype)
        times = time_pair({name: backward_step(fn, x0) for name, fn in kinds.items()}, args.repeats)
        medians = {name: statistics.median(ts) * 1e3 for name, ts in times.items()}
        drop_rate = float((lane_dropout(x0.float(), args.p) == 0).float().mean())
        results[str(dtype).removeprefix("torch.")] = {"ms": medians, "lane_drop_rate": drop_rate}
        print(f"{dtype}: " + ", ".join(f"{name} {ms:.1f} ms" for name, ms in medians.items())
              + f" (forward + backward); lane mask drops {drop_rate:.4f} (p = {args.p})")
    report = {"what": "forward + backward of dropout on one (rows, cols) tensor, median ms, one thread",
              "cpu": cpu_model(), "rows": args.rows, "cols": args.cols, "p": args.p, "repeats": args.repeats,
              "torch": torch.__version__, "results": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    main()
