"""Attention on the CPU: torch's fused kernel (`scaled_dot_product_attention`) against the formula written out
(`data2vec.transformer.explicit_attention`), forward + backward, per sequence length, in float32 and under bf16
autocast. It is the measurement behind `EXPLICIT_ATTENTION_MAX_T` and `EXPLICIT_ATTENTION_MAX_T_BF16` (the lengths
up to which `Attention` takes the written-out path on a CPU, in float32 and in bf16).

Protocol: q, k, v of shape (B, H, T, d_h) with requires_grad, B chosen so that B x T = `--tokens` (the same work
per token at every length), H = 4, d_h = 32; one step = forward, backward of <out, g>; both paths interleaved
(alternating order) for `--reps` repetitions after one warm-up each; medians, and the ratio explicit / fused
(< 1: the written-out path is faster). One thread by default (the studies' setting).

Run:  python benchmarks/attention_cpu.py                      (T = 9 .. 513, fp32 and bf16)
      python benchmarks/attention_cpu.py --lengths 17,65 --reps 5 --out /tmp/attention.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from data2vec.precision import cpu_model
from data2vec.transformer import EXPLICIT_ATTENTION_MAX_T, EXPLICIT_ATTENTION_MAX_T_BF16, explicit_attention

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "attention_cpu.json"


def step_fn(path: str, q, k, v, g, bf16: bool):
    def step():
        for t in (q, k, v):
            t.grad = None
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            qa, ka, va = (t.bfloat16() for t in (q, k, v)) if bf16 else (q, k, v)
            out = explicit_attention(qa, ka, va, None) if path == "explicit" else \
                F.scaled_dot_product_attention(qa, ka, va)
        out.float().backward(g)

    return step


def time_pair(steps: dict, reps: int) -> dict[str, list[float]]:
    for f in steps.values():
        f()
    times = {name: [] for name in steps}
    names = list(steps)
    for rep in range(reps):
        for name in (names if rep % 2 == 0 else names[::-1]):
            start = time.perf_counter()
            steps[name]()
            times[name].append(time.perf_counter() - start)
    return times


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--lengths", default="9,17,33,65,129,257,513", help="sequence lengths T")
    p.add_argument("--tokens", type=int, default=8192, help="B x T per step (default 8192)")
    p.add_argument("--reps", type=int, default=9)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    for bf16 in (False, True):
        for T in (int(x) for x in args.lengths.split(",")):
            B = max(1, args.tokens // T)
            g0 = torch.Generator().manual_seed(T)
            q, k, v = (torch.randn(B, 4, T, 32, generator=g0).requires_grad_() for _ in range(3))
            g = torch.randn(B, 4, T, 32, generator=g0)
            times = time_pair({p_: step_fn(p_, q, k, v, g, bf16) for p_ in ("fused", "explicit")}, args.reps)
            med = {name: statistics.median(ts) for name, ts in times.items()}
            row = {"precision": "bf16" if bf16 else "fp32", "T": T, "B": B, "median_s": med,
                   "explicit_over_fused": med["explicit"] / med["fused"]}
            rows.append(row)
            print(f"{row['precision']} T={T:4d} B={B:4d} fused {1e3 * med['fused']:7.2f} ms  explicit "
                  f"{1e3 * med['explicit']:7.2f} ms  explicit/fused {row['explicit_over_fused']:.2f}", flush=True)
    report = {"what": "forward + backward of attention (B, 4 heads, T, 32) on the CPU: fused kernel vs written out",
              "command": "python benchmarks/attention_cpu.py " + " ".join(argv or []), "cpu": cpu_model(),
              "threads": args.threads, "torch": torch.__version__, "tokens_per_step": args.tokens,
              "explicit_attention_max_t": {"fp32": EXPLICIT_ATTENTION_MAX_T, "bf16": EXPLICIT_ATTENTION_MAX_T_BF16},
              "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    main()
