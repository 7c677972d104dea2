"""`data2vec compare` end to end (data2vec/study/): the arms it builds from its recipes, the results files, the
step count fixed by the calibration, resuming, the bad input it refuses, and a pretraining that is interrupted,
diverges or lost its run folder. The shared protocols it is built from (subsets, probes, fine-tuning) are tested in
test_compare_protocols.py, the report and plans in test_compare_report.py.

The end-to-end run (digits, a tiny encoder, a budget of seconds) checks the results files, the step count fixed by
the calibration, that a rerun recomputes nothing and that `--report-only` rebuilds the same table from the files
alone.
"""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np
import pytest

# ---- end to end ------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_the_comparison_builds_dino_crops_from_the_recipe_it_runs(monkeypatch):
    # a recipe override of DINO's crop fields (what `dino_collapse.py --overrides` and --set do) reaches the data
    from data2vec.study import vision as C
    from data2vec.study.budget import Recipe
    from data2vec.study.vision_config import IMAGE_STUDY_RECIPES, CompareConfig

    monkeypatch.setitem(IMAGE_STUDY_RECIPES, "dino", Recipe(overrides={
        **IMAGE_STUDY_RECIPES["dino"].overrides, "n_local": 1, "local_scale": (0.3, 0.5)}))
    cfg = CompareConfig(data="digits", out="unused", runs="unused", dim=32, depth=1, heads=2)
    method, dataset, collate, _, _ = C.build_arm(cfg, "dino", 8, 1, steps=10)
    crops = dataset[0]  # one item: the list of crops
    assert method.cfg.n_local == 1 and len(crops) == 3  # 2 global crops + 1 local
    assert [tuple(c.shape[-2:]) for c in crops] == [(8, 8), (8, 8), (method.cfg.local_size,) * 2]


def test_set_changes_the_image_recipe_the_comparison_builds():
    from data2vec.study import vision as C
    from data2vec.study.budget import recipe_of
    from data2vec.study.vision_config import IMAGE_STUDY_RECIPES, CompareConfig

    sets = {"dino": {"n_local": 1, "teacher_temp": 0.02, "lr": 3e-4}, "data2vec2": {"num_masks": 2}}
    cfg = CompareConfig(data="digits", out="unused", runs="unused", dim=32, depth=4, heads=2, recipe_sets=sets)
    method, dataset, _, optim, _ = C.build_arm(cfg, "dino", 8, 1, steps=10)
    assert (method.cfg.n_local, method.cfg.teacher_temp, optim["lr"]) == (1, 0.02, 3e-4)
    recipe = IMAGE_STUDY_RECIPES["dino"]
    assert method.cfg.momentum_base == recipe.overrides["momentum_base"]  # the rest of the recipe stays
    assert len(dataset[0]) == 3  # 2 global crops + the one local crop the set asks for
    method, _, _, optim, _ = C.build_arm(cfg, "data2vec2", 8, 1, steps=10)
    assert method.cfg.num_masks == 2 and optim["lr"] == IMAGE_STUDY_RECIPES["data2vec2"].lr
    assert recipe_of(CompareConfig(data="digits", out="u", runs="u"), "dino") == IMAGE_STUDY_RECIPES["dino"]


@pytest.mark.slow  # an end-to-end study on digits (~14 s)
def test_compare_runs_every_arm_writes_results_and_resumes(tmp_path):
    from data2vec.study.pipeline import run_comparison
    from data2vec.study.records import result_path
    from data2vec.study.vision_config import CompareConfig
    from data2vec.study.vision_protocols import image_protocols as protocols

    cfg = CompareConfig(data="digits", out=str(tmp_path / "out"), runs=str(tmp_path / "runs"), methods=("data2vec",),
                        budget_minutes=0.02, seeds=(1,), dim=32, depth=2, heads=2, calibration_steps=2,
                        finetune_epochs={0.01: 2, 0.1: 1}, finetune_min_updates=2, frozen_fraction=0.1, val_max=100,
                        command="test")
    summary = run_comparison(cfg)
    files = {}
    for arm in cfg.arms:
        for protocol in protocols(cfg, arm):
            path = result_path(cfg, arm, 1, protocol)
            rec = json.loads(path.read_text())
            assert rec["arm"] == arm and rec["protocol"] == protocol and 0 <= rec["score"] <= 100
            assert rec["command"] == "test" and rec["git_commit"] and rec["machine"]["torch"]
            files[path] = path.stat().st_mtime_ns
    calib = json.loads((tmp_path / "out" / "calibration.json").read_text())["data2vec"]
    pre = json.loads(result_path(cfg, "data2vec", 1, "pretrain").read_text())
    assert pre["steps"] == calib["steps"] == max(10, int(cfg.budget_s // calib["s_per_update"]))
    lines = (tmp_path / "runs" / "data2vec-seed1" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == pre["steps"]  # the run took exactly the calibrated number of updates
    records = [json.loads(line) for line in lines]
    assert calib["clock"] == pre["clock"] == "cpu" and all(r["step_cpu_time"] > 0 for r in records)
    assert pre["train_seconds"] == pytest.approx(sum(r["step_cpu_time"] for r in records))  # the budget's clock
    knn = [r["health/knn_acc"] for r in records if "health/knn_acc" in r]
    assert knn and [c["knn"] for c in pre["knn_curve"]] == knn  # the online k-NN curve of the health pass
    sup = json.loads(result_path(cfg, "supervised", 1, "finetune@10%").read_text())
    ref = json.loads(result_path(cfg, "random", 1, "finetune@10%").read_text())
    assert sup["details"]["budget_clock"] == "cpu"
    train = ref["details"]["train_cpu_seconds"]  # the fine-tuning's updates alone: less than the whole run
    assert 0 < train < ref["details"]["cpu_seconds"]
    assert sup["details"]["budget_seconds"] == pytest.approx(cfg.budget_s + train)
    plan = json.loads((tmp_path / "out" / "calibration.json").read_text())["supervised-finetune@10%"]
    epochs = ref["details"]["epochs"]
    assert sup["details"]["epochs"] == plan["epochs"] == epochs + int(cfg.budget_s / (train / epochs))
    assert {(r["arm"], r["protocol"]) for r in summary["rows"]} == {
        (arm, p) for arm in cfg.arms for p in protocols(cfg, arm)}
    table = (tmp_path / "out" / "table.md").read_text()

    run_comparison(cfg)  # a rerun finds every result and recomputes nothing
    assert all(path.stat().st_mtime_ns == mtime for path, mtime in files.items())
    config = json.loads((tmp_path / "out" / "config.json").read_text())
    assert config["machines"] == [config["machine"]]  # launched twice, on one machine
    os.remove(tmp_path / "out" / "table.md")
    from data2vec.cli import main

    assert main(["compare", "--report-only", "--out", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "table.md").read_text() == table


def test_config_json_lists_every_machine_that_launched_the_study(tmp_path):
    from data2vec.study.records import config_with_machines

    path, amd, intel = tmp_path / "config.json", {"cpu_model": "AMD EPYC"}, {"cpu_model": "Intel Xeon"}
    path.write_text(json.dumps({"seeds": [1], "machine": amd}))  # written before "machines" was recorded
    resumed = config_with_machines(path, {"seeds": [1], "machine": intel})
    assert resumed == {"seeds": [1], "machine": intel, "machines": [amd, intel]}
    path.write_text(json.dumps(resumed))
    assert config_with_machines(path, {"seeds": [1], "machine": amd})["machines"] == [amd, intel]  # no repeats
    assert config_with_machines(tmp_path / "new.json", {"machine": amd})["machines"] == [amd]


@pytest.mark.parametrize("argv, message", [
    (["--data", "digits", "--methods", "bert"], "not an image pretraining method"),
    (["--data", "digits", "--methods", "nope"], "unknown method"),
    (["--data", "digits", "--dim", "30", "--heads", "4"], "does not divide"),
    (["--data", "/no/such/folder"], "no such file or folder"),
    (["--report-only", "--out", "/no/such/results"], "does not exist"),
    (["--data", "digits", "--budget-minutes", "0"], "must be > 0"),
    (["--data", "digits", "--finetune-lr-grid", "1e-3,fast"], "not comma-separated numbers"),
    (["--data", "digits", "--finetune-lr-grid", "1e-3,0"], "every lr must be > 0"),
    (["--data", "digits", "--methods", "dino", "--set", "dino.no_such_field=1"], "no_such_field"),
    (["--data", "digits", "--methods", "dino", "--set", "data2vec.lr=1e-3"], "not among --methods"),
    (["--data", "digits", "--methods", "dino", "--set", "dino.lr=-1"], "lr must be a number > 0"),
])
def test_compare_bad_input_is_one_clear_line(argv, message, capsys):
    from data2vec.cli import main

    assert main(["compare", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err



def test_compare_refuses_to_mix_studies_with_other_settings(tmp_path):
    from data2vec.study.errors import StudyError as CliError
    from data2vec.study.records import check_same_study
    from data2vec.study.vision_config import CompareConfig

    out = tmp_path / "out"
    out.mkdir()
    first = CompareConfig(data="digits", out=str(out), runs=str(tmp_path / "runs"))
    before_grid = {k: v for k, v in dataclasses.asdict(first).items() if k != "finetune_lr_grid"}  # older config
    (out / "config.json").write_text(json.dumps({**before_grid, "machine": {}}))
    check_same_study(CompareConfig(data="digits", out=str(out), runs="x", seeds=(1, 2, 3, 4, 5)))  # more seeds: fine
    with pytest.raises(CliError, match="budget_minutes=15.0"):
        check_same_study(CompareConfig(data="digits", out=str(out), runs="x", budget_minutes=5))
    with pytest.raises(CliError, match="finetune_lr_grid"):  # a study from before the grid had one lr
        check_same_study(CompareConfig(data="digits", out=str(out), runs="x", finetune_lr_grid=(1e-3, 3e-3)))
    with pytest.raises(CliError, match="recipe_sets"):  # a tuning run (--set) never joins the study's table
        check_same_study(CompareConfig(data="digits", out=str(out), runs="x", recipe_sets={"dino": {"n_local": 0}}))


def test_an_interrupted_pretraining_is_not_scored(tmp_path, monkeypatch):
    """SIGTERM / Ctrl-C inside pretraining: the engine saves a checkpoint and returns; compare must stop there
    (no pretrain.json, no evaluation of a half-trained encoder) and say how to continue."""
    import data2vec.engine
    from data2vec.study.errors import StudyError as CliError
    from data2vec.study.records import result_path
    from data2vec.study.vision import data_image_size, pretrain_arm
    from data2vec.study.vision_config import CompareConfig
    from data2vec.study.vision_protocols import load_eval_data

    cfg = CompareConfig(data="digits", out=str(tmp_path / "out"), runs=str(tmp_path / "runs"), methods=("data2vec",),
                        budget_minutes=0.01, seeds=(1,), dim=32, depth=2, heads=2, calibration_steps=1)
    data = load_eval_data(cfg, data_image_size(cfg))
    real = data2vec.engine.pretrain
    calls = []

    def interrupted(method, dataset, pcfg, out_dir, **kwargs):
        calls.append(pcfg.steps)
        summary = real(method, dataset, pcfg, out_dir, **kwargs)
        return summary if len(calls) == 1 else {**summary, "stopped_by": "SIGTERM", "steps_done": 1}  # 1 = calibration

    monkeypatch.setattr(data2vec.engine, "pretrain", interrupted)
    with pytest.raises(CliError, match="stopped by SIGTERM .* rerun the same command") as stopped:
        pretrain_arm(cfg, "data2vec", 1, data)
    assert stopped.value.exit_code == 143  # `data2vec compare` exits 128 + SIGTERM
    assert not result_path(cfg, "data2vec", 1, "pretrain").exists()


def test_online_knn_probe_mixes_the_classes_of_a_class_ordered_folder(tmp_path):
    """An image folder lists its images class by class; the health pass's k-NN bank (3/4) and queries (1/4) must
    both hold every class (before the fix the queries held only the last classes and CIFAR-10 scored 0-3 %)."""
    from PIL import Image

    from data2vec.study.data import health_knn_probe

    for c in range(4):
        (tmp_path / f"class{c}").mkdir()
        for i in range(25):
            Image.fromarray(np.full((8, 8, 3), 50 * c, dtype=np.uint8)).save(tmp_path / f"class{c}" / f"{i}.png")
    probe = health_knn_probe(str(tmp_path), 8, n=64, seed=0)
    assert set(probe.train_labels.tolist()) == {0, 1, 2, 3} and set(probe.test_labels.tolist()) == {0, 1, 2, 3}


def test_a_diverged_pretraining_is_recorded_as_failed_and_the_comparison_goes_on(tmp_path, monkeypatch):
    import data2vec.engine
    from data2vec.study.records import result_path
    from data2vec.study.report import write_report
    from data2vec.study.vision import data_image_size, pretrain_arm
    from data2vec.study.vision_config import CompareConfig
    from data2vec.study.vision_protocols import load_eval_data

    cfg = CompareConfig(data="digits", out=str(tmp_path / "out"), runs=str(tmp_path / "runs"), methods=("data2vec",),
                        budget_minutes=0.01, seeds=(1,), dim=32, depth=2, heads=2, calibration_steps=1)
    data = load_eval_data(cfg, data_image_size(cfg))
    real = data2vec.engine.pretrain
    calls = []

    def diverging(method, dataset, pcfg, out_dir, **kwargs):
        calls.append(pcfg.steps)
        if len(calls) == 1:
            return real(method, dataset, pcfg, out_dir, **kwargs)  # the calibration
        raise data2vec.engine.TrainingAborted("the loss was non-finite for 5 updates in a row")

    monkeypatch.setattr(data2vec.engine, "pretrain", diverging)
    assert pretrain_arm(cfg, "data2vec", 1, data) is None
    failed = json.loads(result_path(cfg, "data2vec", 1, "pretrain-failed").read_text())
    assert "non-finite" in failed["reason"] and not result_path(cfg, "data2vec", 1, "pretrain").exists()
    assert pretrain_arm(cfg, "data2vec", 1, data) is None and len(calls) == 2  # skipped, not retried
    summary = write_report(cfg.out)
    assert summary["failed"][0]["arm"] == "data2vec"
    assert "pretraining failed" in (tmp_path / "out" / "table.md").read_text()


@pytest.mark.slow  # pretrains an arm twice (~3 s)
def test_a_finished_pretraining_whose_run_folder_is_gone_is_pretrained_again(tmp_path):
    """A fresh clone of a study in progress has its pretrain.json but not its run folder: a rerun pretrains the arm
    again from its seed (instead of refusing), keeps the earlier record under 'previous', and says whether the new
    run ended at the same loss; on one machine it does."""
    import shutil

    from data2vec.study.records import PREVIOUS_RECORD, result_path
    from data2vec.study.vision import data_image_size, pretrain_arm
    from data2vec.study.vision_config import CompareConfig
    from data2vec.study.vision_protocols import load_eval_data

    cfg = CompareConfig(data="digits", out=str(tmp_path / "out"), runs=str(tmp_path / "runs"), methods=("data2vec",),
                        budget_minutes=0.01, seeds=(1,), dim=32, depth=2, heads=2, calibration_steps=1)
    data = load_eval_data(cfg, data_image_size(cfg))
    assert pretrain_arm(cfg, "data2vec", 1, data) is not None
    summary = result_path(cfg, "data2vec", 1, "pretrain")
    first = json.loads(summary.read_text())
    assert "previous" not in first
    shutil.rmtree(tmp_path / "runs" / "data2vec-seed1")
    assert pretrain_arm(cfg, "data2vec", 1, data) is not None  # every evaluation is still to do: pretrained again
    again = json.loads(summary.read_text())
    assert again["previous"]["final_loss"] == first["final_loss"]
    assert again["previous"]["written"] == first["written"]
    assert again["repeats_previous"] is True and again["final_loss"] == pytest.approx(first["final_loss"], abs=0)
    assert (tmp_path / "runs" / "data2vec-seed1" / PREVIOUS_RECORD).is_file()  # the retired record, outside results


@pytest.mark.slow  # fine-tuning per lr of a grid (~4 s)
def test_finetune_lr_grid_reports_the_lr_chosen_on_validation(tmp_path):
    """--finetune-lr-grid: one fine-tuning run per lr (each in its own run folder); the reported score is the run
    whose selection-split accuracy is best, and every lr's validation score is stored beside it."""
    from data2vec.backbone import build_backbone
    from data2vec.checkpoint import set_seed
    from data2vec.config import get_preset
    from data2vec.study.records import result_path
    from data2vec.study.vision import data_image_size
    from data2vec.study.vision import image_encoder_overrides as encoder_overrides
    from data2vec.study.vision_config import CompareConfig
    from data2vec.study.vision_protocols import evaluate_finetune, load_eval_data

    cfg = CompareConfig(data="digits", out=str(tmp_path / "out"), runs=str(tmp_path / "runs"), methods=("data2vec",),
                        seeds=(1,), dim=32, depth=2, heads=2, finetune_fractions=(0.1,), finetune_epochs={0.1: 40},
                        finetune_min_updates=2, finetune_lr_grid=(1e-6, 3e-3))
    size = data_image_size(cfg)
    data = load_eval_data(cfg, size)
    set_seed(1)
    backbone = build_backbone(get_preset("vision", cfg.preset, **encoder_overrides(cfg, size, data.in_chans)))
    evaluate_finetune(cfg, "random", 1, backbone, data)
    details = json.loads(result_path(cfg, "random", 1, "finetune@10%").read_text())["details"]
    scores = {float(lr): a for lr, a in details["lr_validation_scores"].items()}
    assert set(scores) == {1e-6, 3e-3}
    chosen = max(scores, key=scores.get)
    assert chosen == 3e-3 and scores[3e-3] > scores[1e-6]  # lr 1e-6 leaves the head where it started
    assert details["recipe"] == {"lr": chosen, "layer_decay": cfg.layer_decay}
    assert details["validation_best"] == scores[chosen] == max(h["accuracy"] for h in details["history"])
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == [
        "finetune-random-seed1-10pct-lr0.003", "finetune-random-seed1-10pct-lr1e-06"]
