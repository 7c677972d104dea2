"""Cost of one pretraining update of every method (data2vec, data2vec 2.0, BERT, DINO) in every precision, on
this machine's CPU (or GPU), and how close each comes to the machine's matrix-product rate.

What it measures
- The machine: the CPU model and its bf16 flags (`avx512_bf16`, `amx_bf16`), and the rate of an n x n matrix
  product in float32 and in bfloat16 (n = 512 and 1024 on a CPU, 1024 and 4096 on a GPU; GFLOP/s, the same
  threads as the runs): the ceiling of a step made of matrix products. `data2vec.precision` picks its default
  ("auto") from the same flags.
- Every (method, modality) pair runs `data2vec pretrain` for `--steps` updates in a fresh subprocess per variant
  (`--variants`: fp32, bf16, fp32+compile, bf16+compile), on the same preset, batch, data and seed. The engine
  logs `step_time` for every update (loading the batch, forward, backward, clipping, the optimiser step, the EMA
  teacher update); the first `--skip` updates (warm-up, and the compilation with +compile) are dropped and the
  median of the rest over `--repeats` rounds is the seconds per update. Rounds rotate the order of the runs.
  The first update's own time is kept too (`first_update_s`): with +compile it carries the compilation.
- The work of one update: the floating-point operations of the fp32 eager update counted by torch's
  `FlopCounterMode` (matrix products, convolutions, attention) in an in-process run of the same command. Divided by
  the seconds per update it gives the achieved GFLOP/s, and by the matrix-product rate of that precision (the
  faster of the two sizes) the share of the machine's ceiling (`peak_share`).
- Which variant `--precision auto` picks here, and its speed-up over fp32 eager per method.

The default settings are the image study's (preset mini, 32 px images of scikit-learn's digits, batch 64,
data2vec 2.0 with M = 4 masks) and the text study's encoder on the built-in corpus (batch 64, 128 tokens), one
thread (`--threads 1`, the studies' setting).

With `--profile`, instead of timing, it tells where one update's CPU time goes: each run of `--steps` updates and
one of `--skip` updates run in this process under torch's profiler, and their difference per update (set-up and
warm-up cancel) is each op's self CPU time, grouped into families (matrix products, convolutions, copies, dropout
masks, GELU, layer norm, softmax, the optimiser's step, other), written to `results/methods_profile.json`.

Run:  python benchmarks/methods.py                          (every method, fp32 and bf16, eager and compiled)
      python benchmarks/methods.py --profile --methods data2vec/text --variants fp32,bf16
      python benchmarks/methods.py --variants fp32,bf16 --methods data2vec2/vision --repeats 1
      python benchmarks/methods.py --device cuda --threads 0   (a GPU; see gpu_check.sh)
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from data2vec.methods import METHODS, PRETRAINING_METHODS
from data2vec.precision import choose_precision, cpu_bf16_units, cpu_model, matmul_gflops
from data2vec.study.vision_config import IMAGE_STUDY_RECIPES

# every pretraining method of the registry on every modality it trains on (data2vec first: the reference)
RUNS = tuple((name, modality) for modality in ("text", "vision") for name in PRETRAINING_METHODS
             if modality in METHODS[name].modalities)
VARIANTS = ("fp32", "bf16", "fp32+compile", "bf16+compile")
# the image study's recipe of data2vec 2.0 (M = 4 masks, ratio 0.5), as --set values
STUDY_SETS = {("data2vec2", "vision"): [f"{k}={v}" for k, v in IMAGE_STUDY_RECIPES["data2vec2"].overrides.items()]}
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "methods.json"
PROFILE_OUT = DEFAULT_OUT.with_name("methods_profile.json")
# the op families of a profiled update: an op belongs to the first family one of whose prefixes its name starts with
# (an op run inside the optimiser's step is named "Optimizer:<op>" by `op_seconds`)
OP_FAMILIES = (
    ("optimiser step", ("Optimizer",)),
    ("matrix products", ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::_scaled_dot_product")),
    ("convolutions", ("aten::mkldnn_convolution", "aten::convolution_backward", "aten::_convolution")),
    ("copies", ("aten::copy_", "aten::_to_copy", "aten::clone")),  # incl. the bias that addmm copies into its output
    ("dropout masks", ("aten::bernoulli_", "aten::native_dropout")),
    ("GELU", ("aten::gelu",)),
    ("layer norm", ("aten::native_layer_norm",)),
    ("softmax", ("aten::_softmax",)),
)


def pretrain_command(method: str, modality: str, args: argparse.Namespace, out_dir: Path, variant: str,
                     tokenizer: Path | None) -> list[str]:
    """The `data2vec pretrain` arguments of one run (without the interpreter)."""
    precision, _, compiled = variant.partition("+")
    data = args.text_data if modality == "text" else args.vision_data
    cmd = ["pretrain", "--method", method, "--modality", modality, "--preset", args.preset, "--data", data,
           "--steps", str(args.steps), "--batch-size", str(args.batch_size), "--seed", str(args.seed),
           "--out", str(out_dir), "--device", args.device, "--quiet", "--precision", precision,
           "--health-every", "0", "--no-plots"]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    if compiled:
        cmd.append("--compile")
    if modality == "text":
        cmd += ["--seq-len", str(args.seq_len)]
        if tokenizer is not None:
            cmd += ["--tokenizer", str(tokenizer)]
    else:
        cmd += ["--image-size", str(args.image_size)]
    for value in [*STUDY_SETS.get((method, modality), []), *(args.set or [])]:
        cmd += ["--set", value]
    return cmd


def run_one(method: str, modality: str, args: argparse.Namespace, out_dir: Path, tokenizer: Path | None,
            variant: str = "fp32") -> dict:
    """One short `data2vec pretrain` in a subprocess; returns its per-update times and resolved settings."""
    cmd = [sys.executable, "-m", "data2vec"] + pretrain_command(method, modality, args, out_dir, variant, tokenizer)
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{method}/{modality} {variant} failed (exit {done.returncode}):\n{done.stderr[-2000:]}")
    rows = [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    config = json.loads((out_dir / "config.json").read_text())
    return {"step_times_s": [r["step_time"] for r in rows], "config": config}


def conv_backward_flops(grad_out_shape, x_shape, w_shape, _bias, _stride, _padding, _dilation, transposed,
                        _output_padding, groups, output_mask, out_shape=None, **kwargs) -> int:
    """FLOPs of a convolution's backward: each gradient asked for (input, weight) costs what the forward did,
    2 x (output elements) x (input channels per group) x (kernel size) for a plain convolution. torch's own formula
    (torch 2.14) swaps the weight's first two axes for the input gradient, which overcounts grouped convolutions
    (data2vec 2.0's decoder: 16 groups) by up to the number of groups."""
    macs_per_output = math.prod(w_shape[1:])  # (C_in / groups) x kernel
    outputs = math.prod(x_shape if transposed else grad_out_shape)
    forward = 2 * outputs * macs_per_output
    return forward * (int(bool(output_mask[0])) + int(bool(output_mask[1])))


def flops_per_update(method: str, modality: str, args: argparse.Namespace, out_dir: Path,
                     tokenizer: Path | None) -> float:
    """Floating-point operations of one fp32 eager update (the mean over 2), counted in this process."""
    from torch.utils.flop_counter import FlopCounterMode

    from data2vec.cli import main as cli_main

    counted = argparse.Namespace(**{**vars(args), "steps": 2})
    mapping = {torch.ops.aten.convolution_backward: conv_backward_flops}
    with FlopCounterMode(display=False, custom_mapping=mapping) as counter:
        status = cli_main(pretrain_command(method, modality, counted, out_dir, "fp32", tokenizer))
    if status:
        raise RuntimeError(f"counting the work of {method}/{modality} failed (exit {status})")
    return counter.get_total_flops() / 2


def op_seconds(method: str, modality: str, args: argparse.Namespace, out_dir: Path, tokenizer: Path | None,
               variant: str, steps: int) -> dict[str, float]:
    """Self CPU seconds of every op over one in-process `pretrain` run of `steps` updates (torch's profiler); an op
    called inside `optimizer.step()` or `zero_grad()` (torch annotates them "Optimizer.step#AdamW.step", ...) is
    counted as "Optimizer:<op>"."""
    from torch.profiler import ProfilerActivity, profile

    from data2vec.cli import main as cli_main

    run = argparse.Namespace(**{**vars(args), "steps": steps})
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        # no warm-up (a run of one update has no room for one; the learning rate does not change the cost)
        command = pretrain_command(method, modality, run, out_dir, variant, tokenizer) + ["--warmup-steps", "0"]
        status = cli_main(command)
    if status:
        raise RuntimeError(f"profiling {method}/{modality} {variant} failed (exit {status})")
    seconds: dict[str, float] = {}
    for event in prof.events():
        key, parent = event.name, event.cpu_parent
        while parent is not None and not parent.name.startswith("Optimizer."):
            parent = parent.cpu_parent
        key = key if parent is None else f"Optimizer:{key}"
        seconds[key] = seconds.get(key, 0.0) + event.self_cpu_time_total / 1e6
    return seconds


def op_family(op: str) -> str:
    return next((family for family, prefixes in OP_FAMILIES if op.startswith(prefixes)), "other")


def profile_update(method: str, modality: str, args: argparse.Namespace, tmp: Path, tokenizer: Path | None,
                   variant: str) -> dict:
    """Where one update's CPU time goes: (ops of a run of --steps updates - ops of a run of --skip) / (steps - skip),
    so the set-up, the first updates and the final checkpoint cancel; grouped into OP_FAMILIES."""
    name = f"{method}-{modality}-{variant}"
    long = op_seconds(method, modality, args, tmp / f"{name}-long", tokenizer, variant, args.steps)
    short = op_seconds(method, modality, args, tmp / f"{name}-short", tokenizer, variant, args.skip)
    per_op = {op: (s - short.get(op, 0.0)) / (args.steps - args.skip) for op, s in long.items()}
    families = dict.fromkeys([family for family, _ in OP_FAMILIES] + ["other"], 0.0)
    for op, seconds in per_op.items():
        families[op_family(op)] += seconds
    total = sum(families.values())
    top = sorted(per_op.items(), key=lambda item: -item[1])[:12]
    return {"cpu_s_per_update": total, "family_s": families,
            "family_share": {family: seconds / total for family, seconds in families.items()},
            "top_ops_s": dict(top)}


def summarise(times: list[float], batch: int, views_per_sample: int = 1) -> dict:
    """Median seconds per update, samples per second, and masked views per second (data2vec 2.0 trains the
    student on `num_masks` masked copies of each sample; every other method on one)."""
    median = statistics.median(times)
    return {"median_s_per_update": median, "min_s_per_update": min(times), "samples_per_s": batch / median,
            "views_per_sample": views_per_sample, "masked_views_per_s": batch * views_per_sample / median,
            "updates_timed": len(times)}


def machine(args: argparse.Namespace) -> dict:
    """The CPU (or GPU), its bf16 flags, the matrix-product rates per precision, and what auto picks."""
    if args.threads:
        torch.set_num_threads(args.threads)
    info = {"cpu": cpu_model(), "bf16_flags": cpu_bf16_units(), "threads": torch.get_num_threads(),
            "device": args.device, "torch": torch.__version__,
            "gpu": torch.cuda.get_device_name(0) if args.device.startswith("cuda") else None,
            "auto_precision": choose_precision("auto", args.device).name}
    sizes = (512, 1024) if args.device == "cpu" else (1024, 4096)
    info["matmul_gflops"] = {f"{dtype}@{n}": matmul_gflops(getattr(torch, dtype), n=n, min_seconds=args.matmul_seconds,
                                                          device=args.device)
                             for n in sizes for dtype in ("float32", "bfloat16")}
    return info


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="mini", help="encoder preset shared by all methods (default mini)")
    p.add_argument("--batch-size", type=int, default=64, help="samples per update (default 64, the image study's)")
    p.add_argument("--seq-len", type=int, default=128, help="text: tokens per sequence (default 128)")
    p.add_argument("--image-size", type=int, default=32, help="vision: image side (default 32, CIFAR-10's)")
    p.add_argument("--steps", type=int, default=12, help="updates per run (default 12)")
    p.add_argument("--skip", type=int, default=4, help="first updates of each run left out (default 4; compilation "
                   "happens in the first)")
    p.add_argument("--repeats", type=int, default=1, help="rounds over the runs, order rotated (default 1)")
    p.add_argument("--matmul-seconds", type=float, default=0.5,
                   help="how long each matrix-product rate is timed (default 0.5 s; one product at least)")
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"comma-separated, of {', '.join(VARIANTS)}")
    p.add_argument("--methods", default=None, help="comma-separated method/modality pairs (default: all), e.g. "
                   "data2vec2/vision,bert/text")
    p.add_argument("--threads", type=int, default=1, help="torch threads of every run (default 1; 0 = torch's)")
    p.add_argument("--text-data", default="python-docs", help="text corpus (default: the built-in python-docs)")
    p.add_argument("--vision-data", default="digits", help="image data (default: scikit-learn's digits)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--no-flops", action="store_true", help="skip counting the work of an update")
    p.add_argument("--profile", action="store_true", help="instead of timing, profile where an update's CPU time "
                   f"goes, per op family (default --out {PROFILE_OUT.name}; needs --skip >= 1)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="an encoder or method field for every run "
                   "(repeatable), e.g. --set dim=128 --set heads=4 for the image studies' 4 x 128 encoder")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None, help=f"JSON report (default {DEFAULT_OUT})")
    args = p.parse_args(argv)
    args.out = args.out or (PROFILE_OUT if args.profile else DEFAULT_OUT)
    if args.profile and (args.skip < 1 or args.device != "cpu"):
        raise ValueError("--profile subtracts a run of --skip updates of CPU ops: give --skip >= 1 and --device cpu")
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    if args.steps <= args.skip or args.repeats < 1 or args.batch_size < 1:
        raise ValueError("--steps must exceed --skip, and --repeats and --batch-size must be >= 1")
    if not args.variants or any(v not in VARIANTS for v in args.variants):
        raise ValueError(f"--variants: use some of {', '.join(VARIANTS)}")
    runs = RUNS if args.methods is None else tuple(tuple(m.strip().split("/")) for m in args.methods.split(","))
    if any(r not in RUNS for r in runs):
        raise ValueError(f"--methods: use method/modality pairs of {', '.join('/'.join(r) for r in RUNS)}")
    args.runs = runs
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.profile:
        return main_profile(args, argv)
    info = machine(args)
    print(f"{info['cpu']}; bf16 flags: {info['bf16_flags']}; {info['threads']} thread(s); auto picks "
          f"{info['auto_precision']}", flush=True)
    for key, rate in info.get("matmul_gflops", {}).items():
        print(f"  matmul {key}: {rate:.1f} GFLOP/s", flush=True)
    keys = [(m, x, v) for m, x in args.runs for v in args.variants]
    times: dict[tuple, list[float]] = {k: [] for k in keys}
    first: dict[tuple, list[float]] = {k: [] for k in keys}  # update 1 of each run: with --compile, the compilation
    settings: dict[tuple, dict] = {}
    flops: dict[tuple, float | None] = {}
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="methods-bench-") as tmp:
        tokenizer = None
        for round_ in range(args.repeats):
            order = keys[round_ % len(keys):] + keys[:round_ % len(keys)]
            for method, modality, variant in order:
                out_dir = Path(tmp) / f"{method}-{modality}-{variant}-{round_}"
                result = run_one(method, modality, args, out_dir, tokenizer, variant)
                if modality == "text" and tokenizer is None:
                    tokenizer = out_dir / "tokenizer"  # later text runs reuse it (same vocabulary for all)
                times[(method, modality, variant)] += result["step_times_s"][args.skip:]
                first[(method, modality, variant)].append(result["step_times_s"][0])
                settings[(method, modality, variant)] = result["config"]
                print(f"round {round_ + 1}/{args.repeats} {method}/{modality} {variant:13s} median "
                      f"{statistics.median(result['step_times_s'][args.skip:]):.3f} s/update", flush=True)
        for method, modality in args.runs:
            flops[(method, modality)] = None if args.no_flops else flops_per_update(
                method, modality, args, Path(tmp) / f"flops-{method}-{modality}", tokenizer)
    results = report_rows(args, info, times, settings, flops)
    for (method, modality, variant), firsts in first.items():
        results[f"{method}/{modality}/{variant}"]["first_update_s"] = statistics.median(firsts)
    report = {
        "what": "seconds per pretraining update (data, forward, backward, optimiser, EMA) through data2vec pretrain, "
                "per precision and compilation, with the work of an update and the share of the matmul ceiling",
        "command": "python benchmarks/methods.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "preset": args.preset, "batch_size": args.batch_size, "seq_len": args.seq_len, "image_size": args.image_size,
        "steps": args.steps, "skip": args.skip, "repeats": args.repeats, "text_data": args.text_data,
        "vision_data": args.vision_data, "machine": info, "wall_seconds": round(time.time() - started, 1),
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print_table(results)
    print(f"wrote {args.out}")
    return report


def main_profile(args: argparse.Namespace, argv: list[str] | None) -> dict:
    """--profile: per method and variant, the CPU seconds of one update per op family; printed and saved."""
    if args.threads:
        torch.set_num_threads(args.threads)
    results, tokenizer = {}, None
    report = {"what": "self CPU time of the ops of one pretraining update, per op family (torch profiler; a run of "
                      "--steps updates minus a run of --skip)",
              "command": "python benchmarks/methods.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "cpu": cpu_model(), "bf16_flags": cpu_bf16_units(), "threads": torch.get_num_threads(),
              "preset": args.preset, "batch_size": args.batch_size, "seq_len": args.seq_len,
              "image_size": args.image_size, "steps": args.steps, "skip": args.skip, "results": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="methods-profile-") as tmp:
        for method, modality in args.runs:
            for variant in args.variants:
                key = f"{method}/{modality}/{variant}"
                results[key] = profile_update(method, modality, args, Path(tmp), tokenizer, variant)
                if modality == "text" and tokenizer is None:
                    tokenizer = Path(tmp) / f"{method}-{modality}-{variant}-long" / "tokenizer"
                shares = ", ".join(f"{family} {100 * share:.1f} %" for family, share
                                   in results[key]["family_share"].items() if share >= 0.005)
                print(f"{key}: {results[key]['cpu_s_per_update']:.3f} CPU-s per update in ops: {shares}", flush=True)
                args.out.write_text(json.dumps(report, indent=2) + "\n")  # after every run: an interruption keeps them
    print(f"wrote {args.out}")
    return report


def report_rows(args, info: dict, times: dict, settings: dict, flops: dict) -> dict:
    """One row per method/modality/variant: speed, the speed-up over fp32 eager, achieved GFLOP/s, peak share."""
    rates = info.get("matmul_gflops", {})
    results = {}
    for (method, modality, variant), ts in times.items():
        cfg = settings[(method, modality, variant)]
        row = summarise(ts, args.batch_size, (cfg["method_config"] or {}).get("num_masks", 1))
        base = times.get((method, modality, "fp32"))
        row["speedup_over_fp32"] = statistics.median(base) / row["median_s_per_update"] if base else None
        work = flops.get((method, modality))
        row["gflop_per_update"] = work / 1e9 if work else None
        if work:
            row["achieved_gflops"] = work / 1e9 / row["median_s_per_update"]
            dtype = "bfloat16" if variant.startswith("bf16") else "float32"
            ceiling = max((rate for key, rate in rates.items() if key.startswith(dtype + "@")), default=None)
            row["peak_share"] = row["achieved_gflops"] / ceiling if ceiling else None
        row["times_s"] = ts
        results[f"{method}/{modality}/{variant}"] = row
    return results


def print_table(results: dict) -> None:
    print(f"\n{'method/modality/variant':32s} {'s/update':>9s} {'x fp32':>7s} {'GFLOP':>7s} {'GFLOP/s':>8s} "
          f"{'of peak':>8s} {'update 1 s':>10s}")
    for key, r in results.items():
        speedup = f"{r['speedup_over_fp32']:.2f}" if r["speedup_over_fp32"] else "-"
        work = f"{r['gflop_per_update']:.1f}" if r.get("gflop_per_update") else "-"
        achieved = f"{r['achieved_gflops']:.1f}" if r.get("achieved_gflops") else "-"
        share = f"{100 * r['peak_share']:.0f} %" if r.get("peak_share") else "-"
        print(f"{key:32s} {r['median_s_per_update']:9.3f} {speedup:>7s} {work:>7s} {achieved:>8s} {share:>8s} "
              f"{r['first_update_s']:10.1f}")


if __name__ == "__main__":
    main()
