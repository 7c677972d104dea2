"""The equal-budget comparison's report and plans (data2vec/study/report.py, protocols.py): seeds aggregated into
mean +- std, the text medians, the time-to-match and collapse lines, the supervised floor's epochs and the line
that names a floor planned with the older rule. Split from test_compare.py (subsets, probes, fine-tuning, the
end-to-end runs)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

# ---- the report ------------------------------------------------------------------------------------------------


def _write(path, payload):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload))


def test_report_aggregates_seeds_and_formats_every_arm(tmp_path):
    from data2vec.study.report import write_report

    scores = {("random", "knn@100%"): [30.0, 32.0, 31.0], ("data2vec", "knn@100%"): [40.0, 44.0, 45.0],
              ("data2vec", "finetune@1%"): [20.0, 26.0, 23.0]}
    for (arm, protocol), runs in scores.items():
        for seed, score in enumerate(runs, start=1):
            _write(tmp_path / arm / f"seed{seed}" / f"{protocol.replace('%', 'pct')}.json",
                   {"arm": arm, "seed": seed, "protocol": protocol, "score": score, "details": {}})
    summary = write_report(tmp_path)
    rows = {(r["arm"], r["protocol"]): r for r in summary["rows"]}
    for key, runs in scores.items():
        assert rows[key]["mean"] == pytest.approx(np.mean(runs))
        assert rows[key]["std"] == pytest.approx(np.std(runs))
        assert rows[key]["runs"] == runs
    md = (tmp_path / "table.md").read_text()
    assert "| random init (same encoder) | 31.0 ± 0.8 (3) | — |" in md
    assert f"| data2vec | {np.mean([40, 44, 45]):.1f} ± {np.std([40, 44, 45]):.1f} (3) |" in md
    assert (tmp_path / "plots" / "accuracy.png").is_file()


def test_report_names_a_supervised_floor_planned_with_the_older_epochs_rule(tmp_path):
    from data2vec.study.report import write_report

    for protocol in ("finetune@1%", "finetune@10%"):
        _write(tmp_path / "supervised" / "seed1" / f"{protocol.replace('%', 'pct')}.json",
               {"arm": "supervised", "seed": 1, "protocol": protocol, "score": 40.0, "details": {}})
    _write(tmp_path / "calibration.json", {
        "supervised-finetune@1%": {"epochs": 16, "epoch_seconds_from": "the fine-tuning's updates alone"},
        "supervised-finetune@10%": {"epochs": 9}})  # written before the rule was corrected: no epoch_seconds_from
    write_report(tmp_path, plots=False)
    line = next(x for x in (tmp_path / "table.md").read_text().splitlines() if x.startswith("supervised floor"))
    assert "(finetune@10%)" in line and "older rule" in line and "1%" not in line
    assert not (tmp_path / "plots").exists()  # plots=False draws nothing
    _write(tmp_path / "calibration.json", {f"supervised-{p}": {"epoch_seconds_from": "the fine-tuning's updates alone"}
                                           for p in ("finetune@1%", "finetune@10%")})
    write_report(tmp_path, plots=False)
    assert "older rule" not in (tmp_path / "table.md").read_text()


def test_text_report_adds_medians_and_labels_the_best_epoch_on_dev_apart(tmp_path):
    from data2vec.study.report import write_report

    _write(tmp_path / "config.json", {"modality": "text"})
    scores, on_dev = [70.0, 74.0, 71.0], [72.0, 76.0, 75.0]  # the selected epoch's dev score, the best epoch's
    for seed, (score, best) in enumerate(zip(scores, on_dev, strict=True), start=1):
        _write(tmp_path / "bert" / f"seed{seed}" / "sst2.json", {
            "arm": "bert", "seed": seed, "protocol": "sst2", "score": score,
            "details": {"best_on_dev": best, "validation_best": score + 10}})
    _write(tmp_path / "majority" / "seed0" / "sst2.json",
           {"arm": "majority", "seed": 0, "protocol": "sst2", "score": 50.9, "details": {"best_on_dev": None}})
    write_report(tmp_path)
    md = (tmp_path / "table.md").read_text()
    main, rest = md.split("median over seeds")
    assert "| BERT-MLM | 71.7 ± 1.7 (3) |" in main  # the reported score: the epoch chosen on validation
    medians, optimistic = rest.split("optimistic, NOT the reported score")
    medians, validation = medians.split("validation split carved from the training data")
    assert "| BERT-MLM | 71.0 (3) |" in medians and "| majority class (STS-B: mean score) | 50.9 (1) |" in medians
    assert "| BERT-MLM | 81.7 ± 1.7 (3) |" in validation and "majority" not in validation
    assert f"| BERT-MLM | {np.mean(on_dev):.1f} ± {np.std(on_dev):.1f} (3) |" in optimistic
    assert "majority" not in optimistic  # a floor that has no epochs has no best epoch
    _write(tmp_path / "config.json", {"modality": "vision"})
    write_report(tmp_path)
    assert "median over seeds" not in (tmp_path / "table.md").read_text()  # the image tables stay as they were


def test_time_to_match_smooths_both_curves_and_reads_the_first_window():
    from data2vec.study.report import time_to_match

    def curve(values, dt):
        return [{"step": i, "seconds": dt * (i + 1), "knn": v} for i, v in enumerate(values)]

    v1 = {"arm": "data2vec", "seed": 1, "knn_curve": curve([10, 20, 30, 31, 32, 33], 10.0)}  # 60 s; target 32
    # v2 (passes at t = 2, 4, ..., 14 s) passes 32 once at t = 4 (a lucky pass: no 3-pass mean around it reaches
    # 32), then for good: the first window of 3 with mean >= 32 is (28, 34, 36) at t = 8, 10, 12 -> reached at
    # 12 s = 1/5 of v1's 60 s
    v2 = {"arm": "data2vec2", "seed": 1, "knn_curve": curve([10, 35, 15, 28, 34, 36, 40], 2.0)}
    never = {"arm": "data2vec2", "seed": 2, "knn_curve": curve([5, 6, 7], 1.0)}
    v1b = {"arm": "data2vec", "seed": 2, "knn_curve": curve([50, 50, 50], 1.0)}
    lonely = {"arm": "data2vec", "seed": 3, "knn_curve": curve([1, 2, 3], 1.0)}  # no data2vec2 run for seed 3
    matches = time_to_match([v1, v2, never, v1b, lonely])
    assert [m["seed"] for m in matches] == [1, 2]
    first, second = matches
    assert first["target_knn"] == pytest.approx(32.0) and first["reference_seconds"] == pytest.approx(60.0)
    assert first["challenger_seconds"] == pytest.approx(12.0)  # the window (28, 34, 36) ends at the 6th pass
    assert first["fraction"] == pytest.approx(12.0 / 60.0)
    assert second["challenger_seconds"] is None and second["fraction"] is None


def test_uniform_collapse_warns_only_when_the_teacher_ends_at_log_k():
    from data2vec.study.vision import uniform_collapse

    log_k = math.log(256)
    rising = [{"teacher_entropy": 4.0 + i * (log_k - 4.0) / 89} for i in range(90)]  # reaches log K at the end
    stuck = rising + [{"teacher_entropy": log_k - 1e-4}] * 10  # the last 10 % within 0.01 % of log K
    learned = [{"teacher_entropy": log_k}] * 90 + [{"teacher_entropy": 0.9 * log_k}] * 10  # uniform, then out
    assert "uniform collapse" in uniform_collapse(stuck, 256) and f"{log_k:.3f}" in uniform_collapse(stuck, 256)
    assert uniform_collapse(learned, 256) is None  # the tail's mean (0.9 log K) is outside the 1 % tolerance
    assert uniform_collapse([{"loss": 1.0}] * 5, 256) is None  # data2vec logs no teacher entropy
    assert uniform_collapse(stuck, 1024) is None  # log 1024 = 6.93: an entropy of log 256 is far from uniform


def test_supervised_budget_is_fixed_once_from_the_lowest_seed_and_stored(tmp_path):
    from data2vec.study.records import result_path, write_json
    from data2vec.study.vision_config import CompareConfig
    from data2vec.study.vision_protocols import supervised_budget

    cfg = CompareConfig(data="digits", out=str(tmp_path / "out"), runs=str(tmp_path / "runs"), budget_minutes=2,
                        seeds=(1, 2, 3))

    def random_result(seed, cpu_seconds, train_cpu_seconds=None):  # a random-init record: 4 epochs in cpu_seconds
        path = result_path(cfg, "random", seed, "finetune@1%")
        path.parent.mkdir(parents=True, exist_ok=True)
        timed = {} if train_cpu_seconds is None else {"train_cpu_seconds": train_cpu_seconds,
                                                      "train_seconds": 2 * train_cpu_seconds}
        write_json(path, {"details": {"cpu_seconds": cpu_seconds, "seconds": 2 * cpu_seconds, "epochs": 4, **timed}})

    random_result(2, 60.0, 48.0)  # seed 2 measured under load: each epoch's updates 12 s
    random_result(1, 40.0, 32.0)  # seed 1 at rest: each epoch's updates 8 s (the other 8 s: evaluation, test)
    plan = supervised_budget(cfg, "finetune@1%", 2)
    # by hand: the 4 fine-tuning epochs + 120 s of pretraining / 8 s per epoch = 4 + 15 = 19 epochs, from seed 1
    # (not seed 2's 4 + 10); the floor's updates cost 120 + 32 s
    assert plan["epochs"] == 19 and plan["budget_seconds"] == 152.0 and plan["clock"] == "cpu"
    assert plan["from"] == "random seed 1 finetune@1%" and plan["epoch_seconds"] == 8.0
    random_result(1, 80.0, 64.0)  # a later change of the source is not read again: the stored plan holds every seed
    assert supervised_budget(cfg, "finetune@1%", 3) == plan
    stored = json.loads((tmp_path / "out" / "calibration.json").read_text())
    assert stored["supervised-finetune@1%"] == plan

    # a record written before the updates were timed alone: the whole run per epoch, (120 + 40) / 10 = 16 epochs
    cfg.out = str(tmp_path / "older")
    random_result(1, 40.0)
    older = supervised_budget(cfg, "finetune@1%", 1)
    assert older["epochs"] == 16 and older["budget_seconds"] == 160.0 and "older record" in older["epoch_seconds_from"]
