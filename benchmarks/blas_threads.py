"""The probes' thread pools: the demo's few-label linear probe and k-NN (`probe.few_label_eval`) with numpy's and
scipy's BLAS / OpenMP pools at their default size (one thread per core) against one thread, on an idle machine and
with busy processes on the other cores (a background study, the test suite's other worker). It is the measurement
behind `devices.set_threads`, which `--threads` calls: torch.set_num_threads alone leaves those pools at their
default.

Protocol: the 8x8 digits' raw pixels (64 features, 10 classes; no download), `per_class` labelled images per class
drawn `--subsets` times, the linear probe (C by 3-fold CV over 6 values) and k-NN fitted on each and scored on the
test images; torch at one thread throughout. The two settings alternate (threadpoolctl switches the pools inside
this process) for `--reps` repetitions after one warm-up each; per setting the median CPU seconds of this process
(all its threads) and the median wall-clock seconds. `--busy` lists how many spinning processes run beside it
(0 = idle). Run it without OMP_NUM_THREADS / OPENBLAS_NUM_THREADS in the environment: the default pools are the
point.

Run:  python benchmarks/blas_threads.py                       (busy 0 and 1, 7 repetitions)
      python benchmarks/blas_threads.py --busy 0 --reps 3 --out /tmp/blas.json
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import time
from pathlib import Path

DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "blas_threads.json"


def spin() -> None:
    """A busy core: what another process of a shared machine does."""
    while True:
        pass


def digits_pixels():
    """(train pixels, train labels, test pixels, test labels) of scikit-learn's 8x8 digits, the demo's split."""
    import numpy as np

    from tasks.vision import load_digits_dataset

    out = []
    for split in ("train", "test"):
        ds = load_digits_dataset(split)
        out += [np.asarray(ds.images, dtype=np.float32).reshape(len(ds.labels), -1), np.asarray(ds.labels)]
    return out


def time_settings(work, settings: dict, reps: int) -> dict[str, dict[str, list[float]]]:
    """{setting: {"cpu_s": [...], "wall_s": [...]}} of `work()` run under each setting's context, alternating."""
    names = list(settings)
    for name in names:  # warm-up: libraries loaded, pools started
        with settings[name]():
            work()
    times = {name: {"cpu_s": [], "wall_s": []} for name in names}
    for rep in range(reps):
        for name in (names if rep % 2 == 0 else names[::-1]):
            with settings[name]():
                cpu, wall = time.process_time(), time.perf_counter()
                work()
                times[name]["cpu_s"].append(time.process_time() - cpu)
                times[name]["wall_s"].append(time.perf_counter() - wall)
    return times


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--busy", default="0,1", help="spinning processes beside the measurement, one run per value")
    p.add_argument("--per-class", type=int, default=20, help="labelled images per class (the demo: 10 and 50)")
    p.add_argument("--subsets", type=int, default=2, help="label subsets drawn per repetition")
    p.add_argument("--reps", type=int, default=7)
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = p.parse_args(argv)
    import contextlib

    import torch
    from threadpoolctl import threadpool_info, threadpool_limits

    from data2vec.precision import cpu_model
    from data2vec.probe import few_label_eval

    torch.set_num_threads(1)
    train_x, train_y, test_x, test_y = digits_pixels()

    def work():
        few_label_eval(train_x, train_y, test_x, test_y, per_class=args.per_class, seeds=range(args.subsets))

    work()  # loads scipy's and scikit-learn's libraries, so the pools below are all of them
    pools = [{"library": os.path.basename(p["filepath"]), "api": p["internal_api"], "threads": p["num_threads"]}
             for p in threadpool_info()]
    settings = {"default pools": contextlib.nullcontext, "one thread": lambda: threadpool_limits(limits=1)}
    rows = []
    for busy in (int(x) for x in args.busy.split(",")):
        spinners = [multiprocessing.Process(target=spin, daemon=True) for _ in range(busy)]
        for proc in spinners:
            proc.start()
        try:
            times = time_settings(work, settings, args.reps)
        finally:
            for proc in spinners:
                proc.terminate()
                proc.join()
        med = {name: {k: statistics.median(v) for k, v in t.items()} for name, t in times.items()}
        row = {"busy_processes": busy, "median": med, "runs": times,
               "default_over_one": {k: med["default pools"][k] / med["one thread"][k] for k in ("cpu_s", "wall_s")}}
        rows.append(row)
        d, one, ratio = med["default pools"], med["one thread"], row["default_over_one"]
        print(f"busy {busy}: default pools {d['cpu_s']:.2f} CPU-s {d['wall_s']:.2f} s wall; one thread "
              f"{one['cpu_s']:.2f} CPU-s {one['wall_s']:.2f} s wall; default / one: CPU {ratio['cpu_s']:.2f}x, wall "
              f"{ratio['wall_s']:.2f}x", flush=True)
    report = {"what": "probe.few_label_eval on the digits' raw pixels: numpy's/scipy's pools at their default vs 1",
              "command": "python benchmarks/blas_threads.py " + " ".join(argv or []), "cpu": cpu_model(),
              "cores": os.cpu_count(), "torch_threads": 1, "default_pools": pools, "per_class": args.per_class,
              "subsets": args.subsets, "reps": args.reps, "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    main()
