"""Cost of one pretraining update of every method (data2vec, data2vec 2.0, BERT, DINO) on the same encoder.

What it measures: each (method, modality) pair runs `data2vec pretrain` for `--steps` updates in a fresh
subprocess on the same preset, batch size and seed, with real data (text: `--text-data`, default the
built-in `python-docs` corpus; vision: `--vision-data`, default scikit-learn's `digits`). The engine logs
`step_time` for every update: loading the batch, forward, backward, clipping, the optimiser step and the
method's step hook (the EMA teacher update). The first `--skip` updates (allocator and thread-pool
warm-up) are dropped; the median of the rest over all `--repeats` rounds is reported as seconds per update
and samples per second, with the ratio to data2vec on the same modality.

What the methods do per update (why their costs differ), at equal encoder and batch:
- data2vec: a student pass on the masked input + a teacher pass (no gradient) on the full input with its
  layer outputs kept, a regression head, and an EMA update of the teacher's weights.
- data2vec 2.0: one teacher pass on the full input, a student pass on the visible tokens only (20 % of the
  patches / 52 % of the tokens) of `num_masks` masked copies of each sample, a conv decoder, an EMA update.
- BERT: one pass on the masked input and a vocabulary-sized decoder; no teacher.
- DINO: the teacher sees the 2 global crops, the student the 2 global + `n_local` local crops (smaller
  images, fewer tokens), both with a projection head of `out_dim` prototypes, and an EMA update.

Not measured: tokenizer training and token caching for text (done once before the first update; the text
runs after the first reuse its tokenizer), process start-up, checkpoints (`--save-every 0`, the final one
comes after the last timed update). Rounds rotate the order of the runs so that slow phases of a shared
machine do not all fall on one method.

Run:  python benchmarks/methods.py                        (mini preset, batch 32, 25 updates x 2 rounds)
      python benchmarks/methods.py --preset tiny --steps 15 --repeats 1 --out /tmp/methods.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from data2vec.methods import METHODS, PRETRAINING_METHODS

# every pretraining method of the registry on every modality it trains on (data2vec first: the reference)
RUNS = tuple((name, modality) for modality in ("text", "vision") for name in PRETRAINING_METHODS
             if modality in METHODS[name].modalities)
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "methods.json"


def run_one(method: str, modality: str, args: argparse.Namespace, out_dir: Path, tokenizer: Path | None) -> dict:
    """One short `data2vec pretrain` in a subprocess; returns its per-update times and resolved settings."""
    data = args.text_data if modality == "text" else args.vision_data
    cmd = [sys.executable, "-m", "data2vec", "pretrain", "--method", method, "--modality", modality,
           "--preset", args.preset, "--data", data, "--steps", str(args.steps), "--batch-size", str(args.batch_size),
           "--seed", str(args.seed), "--out", str(out_dir), "--device", args.device, "--quiet"]
    if modality == "text":
        cmd += ["--seq-len", str(args.seq_len)]
        if tokenizer is not None:
            cmd += ["--tokenizer", str(tokenizer)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{method}/{modality} failed (exit {done.returncode}):\n{done.stderr[-2000:]}")
    rows = [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]
    config = json.loads((out_dir / "config.json").read_text())
    return {"step_times_s": [r["step_time"] for r in rows], "config": config}


def summarise(times: list[float], batch: int, views_per_sample: int = 1) -> dict:
    """Median seconds per update, samples per second, and masked views per second (data2vec 2.0 trains the
    student on `num_masks` masked copies of each sample; every other method on one)."""
    median = statistics.median(times)
    return {"median_s_per_update": median, "min_s_per_update": min(times), "samples_per_s": batch / median,
            "views_per_sample": views_per_sample, "masked_views_per_s": batch * views_per_sample / median,
            "updates_timed": len(times)}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="mini", help="encoder preset shared by all methods (default mini)")
    p.add_argument("--batch-size", type=int, default=32, help="samples (sequences or images) per update (default 32)")
    p.add_argument("--seq-len", type=int, default=128, help="text: tokens per sequence (default 128)")
    p.add_argument("--steps", type=int, default=25, help="updates per run (default 25)")
    p.add_argument("--skip", type=int, default=5, help="first updates of each run left out of the timing (default 5)")
    p.add_argument("--repeats", type=int, default=2, help="rounds over the runs, order rotated (default 2)")
    p.add_argument("--text-data", default="python-docs", help="text corpus (default: the built-in python-docs)")
    p.add_argument("--vision-data", default="digits", help="image data (default: scikit-learn's digits)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON report (default {DEFAULT_OUT})")
    args = p.parse_args(argv)
    if args.steps <= args.skip or args.repeats < 1 or args.batch_size < 1:
        raise ValueError("--steps must exceed --skip, and --repeats and --batch-size must be >= 1")

    times: dict[str, list[float]] = {f"{m}/{x}": [] for m, x in RUNS}
    settings: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="methods-bench-") as tmp:
        tokenizer = None
        for round_ in range(args.repeats):
            order = RUNS[round_ % len(RUNS):] + RUNS[:round_ % len(RUNS)]
            for method, modality in order:
                key = f"{method}/{modality}"
                out_dir = Path(tmp) / f"{method}-{modality}-{round_}"
                result = run_one(method, modality, args, out_dir, tokenizer)
                if modality == "text" and tokenizer is None:
                    tokenizer = out_dir / "tokenizer"  # later text runs reuse it (same vocabulary for both)
                times[key] += result["step_times_s"][args.skip:]
                cfg = result["config"]
                settings[key] = {"method_config": cfg["method_config"], "lr": cfg["pretrain"]["lr"],
                                 "global_batch": cfg["global_batch"]}
                print(f"round {round_ + 1}/{args.repeats} {key:16s} median "
                      f"{statistics.median(result['step_times_s'][args.skip:]):.3f} s/update", flush=True)

    results = {key: summarise(ts, args.batch_size, (settings[key]["method_config"] or {}).get("num_masks", 1))
               for key, ts in times.items()}
    for key, entry in results.items():
        base = results[f"data2vec/{key.split('/')[1]}"]["median_s_per_update"]
        entry["over_data2vec_same_modality"] = entry["median_s_per_update"] / base
        entry["times_s"] = times[key]
        entry["settings"] = settings[key]
    report = {
        "what": "seconds per pretraining update (data, forward, backward, optimiser, EMA) through data2vec pretrain",
        "command": "python benchmarks/methods.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "preset": args.preset, "batch_size": args.batch_size, "seq_len": args.seq_len, "steps": args.steps,
        "skip": args.skip, "repeats": args.repeats, "text_data": args.text_data, "vision_data": args.vision_data,
        "environment": {"python": platform.python_version(), "torch": torch.__version__, "device": args.device,
                        "cores_available": (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
                                            else os.cpu_count())},
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\n{'method/modality':18s} {'s/update':>9s} {'samples/s':>10s} {'views/s':>9s} {'vs data2vec':>12s}")
    for key, entry in results.items():
        print(f"{key:18s} {entry['median_s_per_update']:9.3f} {entry['samples_per_s']:10.1f} "
              f"{entry['masked_views_per_s']:9.1f} {entry['over_data2vec_same_modality']:12.2f}")
    print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    main()
