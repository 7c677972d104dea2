"""benchmarks/blas_threads.py at toy size: both settings are timed on the same work, the "one thread" setting
really runs the pools at one thread, and the report names the pools it found. No timing is asserted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_benchmarks import load_script

PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "blas_threads.py"


@pytest.mark.slow  # five rounds of scikit-learn fits (~3 s)
def test_script_times_both_settings_and_the_one_thread_setting_pins_every_pool(tmp_path, monkeypatch):
    from threadpoolctl import threadpool_info

    bench = load_script("bench_blas_threads", PATH)
    seen = []
    real = bench.time_settings

    def recording(work, settings, reps):
        with settings["one thread"]():
            seen.append({p["num_threads"] for p in threadpool_info()})
        return real(work, settings, reps)

    monkeypatch.setattr(bench, "time_settings", recording)
    out = tmp_path / "blas.json"
    report = bench.main(["--busy", "0", "--reps", "1", "--subsets", "1", "--per-class", "3", "--out", str(out)])
    assert seen == [{1}]
    assert json.loads(out.read_text()) == report and report["default_pools"]
    (row,) = report["rows"]
    assert row["busy_processes"] == 0 and set(row["runs"]) == {"default pools", "one thread"}
    assert all(len(t["cpu_s"]) == len(t["wall_s"]) == 1 for t in row["runs"].values())
