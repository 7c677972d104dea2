"""Smoke and parity tests of benchmarks/speed.py, v1_vs_v2.py, the study report and demo_select.py at toy size
(no timing is asserted; benchmarks/methods.py has test_benchmarks_methods.py)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

SPEED_PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "speed.py"


def load_script(name: str, path):
    """A benchmark script imported as a module (the scripts are not part of the package)."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up here
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def speed():
    return load_script("bench_speed", SPEED_PATH)


def test_parse_sizes(speed):
    sizes = speed.parse_sizes("4x256:32, 12x768:8")
    assert [(s.depth, s.dim, s.batch, s.heads) for s in sizes] == [(4, 256, 32, 4), (12, 768, 8, 12)]
    assert sizes[0].name == "4x256_b32"
    for bad in ("4x256", "4-256:32", "4x100:8", "0x256:8", "4x256:0"):
        with pytest.raises(ValueError, match="--sizes"):
            speed.parse_sizes(bad)


def test_pad_inputs(speed):
    size = speed.Size(1, 64, 6)
    x, padding_mask, g = speed.make_inputs(size, 10, "pad", "cpu")
    assert x.shape == g.shape == (6, 10, 64) and x.requires_grad
    assert padding_mask.dtype == torch.bool and padding_mask.shape == (6, 10)
    assert not padding_mask[0].any()  # the first sequence is full length
    assert (padding_mask.sum(1) <= 5).all()  # at most half of every sequence is padding
    # padding is a tail: once padded, padded to the end
    assert (padding_mask.int().diff(dim=1) >= 0).all()
    with pytest.raises(ValueError, match="variant"):
        speed.make_inputs(size, 10, "ragged", "cpu")


@pytest.mark.parametrize("variant", ["nopad", "pad"])
def test_same_function_and_gradients(speed, variant):
    """With our weights copied in, BertEncoder and nn.TransformerEncoder compute our Encoder's function."""
    size = speed.Size(2, 64, 3)
    models = speed.build_all(size, "cpu")
    x, padding_mask, g = speed.make_inputs(size, 9, variant, "cpu")
    keep = torch.ones(3, 9, dtype=torch.bool) if padding_mask is None else ~padding_mask
    outputs, input_grads, fc1_grads = {}, {}, {}
    for name, model in models.items():
        x.grad = None
        y = speed.forward_fn(name, model, padding_mask)(x)
        (y * g * keep[..., None]).sum().backward()  # loss over real tokens only
        outputs[name], input_grads[name] = y.detach(), x.grad.clone()
        first = {"ours": lambda m: m.blocks[0].ffn.fc1, "hf": lambda m: m.layer[0].intermediate.dense,
                 "torch": lambda m: m.layers[0].linear1}[name](model)
        fc1_grads[name] = first.weight.grad.clone()
    for other in ("hf", "torch"):
        torch.testing.assert_close(outputs[other][keep], outputs["ours"][keep], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(input_grads[other], input_grads["ours"], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(fc1_grads[other], fc1_grads["ours"], atol=1e-5, rtol=1e-4)
    diffs = speed.max_abs_diff(models, x, padding_mask)
    assert set(diffs) == {"hf", "torch"} and max(diffs.values()) < 1e-5


def test_max_abs_diff_detects_a_mismatch(speed):
    size = speed.Size(1, 64, 2)
    models = speed.build_all(size, "cpu")
    with torch.no_grad():
        models["torch"].layers[0].linear2.bias[0] += 0.5  # one channel: a constant shift would vanish in the LayerNorm
    x, _, _ = speed.make_inputs(size, 5, "nopad", "cpu")
    diffs = speed.max_abs_diff(models, x, None)
    assert diffs["hf"] < 1e-5 and diffs["torch"] > 0.1


def test_time_interleaved_rotates_order(speed):
    calls = []
    steps = {name: (lambda n=name: calls.append(n)) for name in ("a", "b", "c")}
    times = speed.time_interleaved(steps, reps=3, warmup=1, device="cpu")
    assert calls == list("abc") + list("abc") + list("bca") + list("cab")
    assert all(len(ts) == 3 and min(ts) >= 0 for ts in times.values())
    summary = speed.summarise({"ours": [1.0, 3.0, 2.0], "hf": [4.0, 4.0, 4.0], "torch": [2.0, 1.0, 2.0]})
    assert summary["median_s"]["ours"] == 2.0 and summary["ours_over_hf"] == 0.5
    assert summary["ours_over_torch"] == 1.0 and summary["ours_over_torch_min"] == 1.0
    assert summary["ours_over_hf_paired"] == 0.5  # median of 1/4, 3/4, 2/4
    assert summary["ours_over_torch_paired"] == 1.0  # median of 1/2, 3/1, 2/2


def test_main_writes_json(speed, tmp_path):
    out = tmp_path / "speed.json"
    speed.main(["--sizes", "1x64:2", "--tokens", "8", "--reps", "2", "--warmup", "0", "--no-memory",
                "--threads", "1", "--out", str(out)])
    report = json.loads(out.read_text())
    entry = report["results"]["1x64_b2"]
    assert set(entry["variants"]) == {"nopad", "pad"}
    for summary in entry["variants"].values():
        assert set(summary["median_s"]) == {"ours", "hf", "torch"}
        assert summary["ours_over_hf"] > 0 and summary["ours_over_torch"] > 0
        assert len(summary["times_s"]["ours"]) == 2
    # the headline figures at the top of each size are the nopad variant's
    assert entry["headline_variant"] == "nopad"
    assert entry["median_s"] == entry["variants"]["nopad"]["median_s"]
    assert entry["ours_over_hf"] == entry["variants"]["nopad"]["ours_over_hf"]
    assert entry["ours_over_torch"] == entry["variants"]["nopad"]["ours_over_torch"]
    assert report["environment"]["threads"] == 1 and report["environment"]["torch"] == torch.__version__
    with pytest.raises(ValueError, match="--variants"):
        speed.main(["--variants", "nopad,odd", "--out", str(out)])


@pytest.mark.slow  # a subprocess measurement (~3 s)
@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="CPU peak memory is measured via Linux /proc")
def test_peak_memory_subprocess(speed):
    # one step of a 1 x 256 block at B=8, T=64 keeps several (8, 64, 1024) float tensors: well over 1 MiB
    peak = speed.measure_peak_memory("ours", speed.Size(1, 256, 8), 64, "nopad", "cpu", threads=1)
    assert peak > 2**20


# ---- benchmarks/v1_vs_v2.py ----------------------------------------------------------------------------
STUDY_PATH = SPEED_PATH.with_name("v1_vs_v2.py")


@pytest.fixture(scope="module")
def study():
    return load_script("bench_v1_vs_v2", STUDY_PATH)


def test_study_time_to_reach(study):
    curve = [{"seconds": 0.0, "knn": 20.0}, {"seconds": 5.0, "knn": 60.0}, {"seconds": 9.0, "knn": 75.0}]
    assert study.time_to_reach(curve, 60.0) == 5.0 and study.time_to_reach(curve, 70.0) == 9.0
    assert study.time_to_reach(curve, 80.0) is None


@pytest.mark.slow  # two 4-update pretraining runs with probes (~15 s)
def test_study_writes_curves_on_the_validation_split(study, tmp_path):
    report = study.main(["--select", "--seeds", "0", "--v1-steps", "4", "--v2-steps", "4", "--probe-every", "2",
                         "--threads", "1", "--out", str(tmp_path / "study.json")])  # 1: the tests' pinned count
    assert torch.get_num_threads() == 1  # later bitwise comparisons in this process need the same reduction order
    assert report["split"].startswith("validation")
    for run in report["runs"]:
        assert [p["step"] for p in run["curve"]] == [0, 2, 4]
        assert run["curve"][-1]["seconds"] == pytest.approx(run["seconds"]) and run["seconds"] > 0
        assert all(0 <= p[k] <= 100 for p in run["curve"] for k in ("knn", "knn_centred", "linear"))
    v2 = next(r for r in report["runs"] if r["method"] == "data2vec2")
    assert v2["num_masks"] == 4 and v2["overrides"] == {"mask_ratio": 0.5} and v2["lr"] == 2e-3
    assert (tmp_path / "study.png").stat().st_size > 1000


def test_study_report_fills_the_readme_tables_from_the_results_files(tmp_path, capsys):
    """benchmarks/studies/report.py: each README block between the markers becomes the study's table.md;
    --check fails while a block is stale and passes once it is regenerated."""
    report = load_script("study_report", SPEED_PATH.parent / "studies" / "report.py")
    results = tmp_path / "results"
    for seed, score in ((1, 40.0), (2, 44.0)):
        path = results / "toy" / "data2vec" / f"seed{seed}" / "knn@100pct.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps({"arm": "data2vec", "seed": seed, "protocol": "knn@100%", "score": score,
                                    "details": {}}))
    readme, root_readme = tmp_path / "README.md", tmp_path / "ROOT.md"
    readme.write_text("intro\n<!-- table:toy -->\nold numbers\n<!-- /table:toy -->\nafter\n")
    root_readme.write_text("top\n<!-- scores:toy -->\nold\n<!-- /scores:toy -->\nend\n")
    both = (readme, root_readme)
    assert report.main(["--check"], results=results, readmes=both) == 1
    assert report.main([], results=results, readmes=both) == 0
    text = readme.read_text()
    assert "old numbers" not in text and "| data2vec | 42.0 ± 2.0 (2) |" in text and text.endswith("after\n")
    assert (results / "toy" / "table.md").read_text() in text  # the whole table.md
    root = root_readme.read_text()  # only the score table
    assert "| data2vec | 42.0 ± 2.0 (2) |" in root
    two_tables = "| a |\n|---|\n| 1 |\n\nmedian over seeds:\n\n| a |\n|---|\n| 2 |\n"
    assert report.score_table(two_tables) == "| a |\n|---|\n| 1 |\n"  # the first table of table.md only
    assert root.endswith("\n<!-- /scores:toy -->\nend\n") and "\nold\n" not in root
    assert report.main(["--check"], results=results, readmes=both) == 0
    root_readme.write_text(root.replace("42.0", "41.0"))  # a hand edit of a generated number is caught
    assert report.main(["--check"], results=results, readmes=both) == 1


def test_study_report_rebuilds_a_budget_curve_and_its_readme_block(tmp_path):
    """A curve folder (curve.json naming its points): its curve.md fills the block `<!-- table:NAME -->`, rebuilt
    from the points' results files alone; --check catches a stale block."""
    report = load_script("study_report", SPEED_PATH.parent / "studies" / "report.py")
    results = tmp_path / "results"
    curve = results / "toy-curve"
    points = {"4": "budget-4min", "15": "budget-15min"}
    curve.mkdir(parents=True)
    (curve / "curve.json").write_text(json.dumps({"points": points, "precision": "fp32"}))
    for minutes, score in ((4, 30.0), (15, 36.0)):
        point = curve / f"budget-{minutes}min"
        path = point / "data2vec2" / "seed1" / "knn@100pct.json"
        path.parent.mkdir(parents=True)
        (point / "config.json").write_text(json.dumps({"budget_minutes": minutes}))
        path.write_text(json.dumps({"arm": "data2vec2", "seed": 1, "protocol": "knn@100%", "score": score,
                                    "details": {}}))
    readme = tmp_path / "README.md"
    readme.write_text("<!-- table:toy-curve -->\nold\n<!-- /table:toy-curve -->\n")
    assert report.main(["--check"], results=results, readmes=(readme,)) == 1
    assert report.main([], results=results, readmes=(readme,)) == 0
    text = readme.read_text()
    assert (curve / "curve.md").read_text() in text and "\nold\n" not in text
    row = next(line for line in text.splitlines() if line.startswith("| data2vec 2.0"))
    assert row.index("30.0") < row.index("36.0")  # the budgets as columns, in increasing order
    assert (curve / "plots" / "curve-knn@100pct.png").is_file()
    assert report.main(["--check"], results=results, readmes=(readme,)) == 0


def test_study_report_sets_each_recipe_trial_beside_the_studys_seed_1_run(tmp_path):
    """A `NAME-tuning` folder's table: each trial's validation scores and the difference from the study's seed-1
    run of the same method; a trial still running shows dashes; the reported score (GLUE dev, the image test split)
    is never shown; an image probe counts the features it chose (the best on validation)."""
    report = load_script("study_report", SPEED_PATH.parent / "studies" / "report.py")
    results = tmp_path / "results"

    def record(folder, arm, protocol, reported, details, seed=1):
        path = results / folder / arm / f"seed{seed}" / f"{protocol.replace('%', 'pct')}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"arm": arm, "seed": seed, "protocol": protocol, "score": reported,
                                    "details": details}))

    def pretrained(folder, arm, **curves):
        path = results / folder / arm / "seed1" / "pretrain.json"
        path.write_text(json.dumps({"arm": arm, "seed": 1, "protocol": "pretrain", "steps": 4, "batch_size": 2,
                                    "samples_seen": 8, "calibration": {"s_per_update": 1.0}, "train_seconds": 4.0,
                                    **curves}))

    def trial(folder, sets):
        (results / folder).mkdir(parents=True)
        (results / folder / "config.json").write_text(json.dumps({"recipe_sets": sets}))

    record("text", "data2vec", "sst2", 11.0, {"validation_best": 80.0})
    record("text", "data2vec", "sst2", 12.0, {"validation_best": 90.0}, seed=2)  # another seed is not the reference
    record("text", "data2vec", "stsb", 13.0, {"validation_best": 40.0})
    record("text", "data2vec", "cola", 13.5, {"validation_best": 9.0})  # no trial scores it: no column
    pretrained("text", "data2vec", health_curve=[{"seconds": 1.0, "anisotropy": 0.5},
                                                 {"seconds": 4.0, "anisotropy": 0.25}])
    trial("text-tuning/data2vec-lr-1e-3", {"data2vec": {"lr": 0.001}})
    trial("text-tuning/data2vec-tau", {"data2vec": {"tau_end": 0.99}})
    record("text-tuning/data2vec-lr-1e-3", "data2vec", "sst2", 14.0, {"validation_best": 82.5})
    record("text-tuning/data2vec-lr-1e-3", "data2vec", "stsb", 15.0, {"validation_best": 37.0})
    record("text-tuning/data2vec-lr-1e-3", "data2vec", "sst2-linear", 16.0, {"validation_accuracy": 60.0})

    record("mnist", "dino", "knn@100%", 17.0, {"validation_scores": {"block1/cls": 48.0, "final/mean": 44.0}})
    pretrained("mnist", "dino", knn_curve=[{"seconds": 4.0, "knn": 35.5}], warning="the teacher ended at ...")
    trial("mnist-tuning/dino-nolocal", {"dino": {"n_local": 0}})
    record("mnist-tuning/dino-nolocal", "dino", "knn@100%", 18.0, {"validation_scores": {"final/mean": 70.5}})
    pretrained("mnist-tuning/dino-nolocal", "dino", knn_curve=[{"seconds": 4.0, "knn": 60.0}])

    readme = tmp_path / "README.md"
    readme.write_text("<!-- table:text-tuning -->\nold\n<!-- /table:text-tuning -->\n"
                      "<!-- table:mnist-tuning -->\nold\n<!-- /table:mnist-tuning -->\n")
    assert report.main([], results=results, readmes=(readme,)) == 0
    rows = readme.read_text().splitlines()
    assert rows[1].startswith("| run (seed 1) | change from the study's recipe | sst2 | sst2-linear | stsb | end")
    assert rows[3] == "| data2vec: the study's run | — | 80.0 | — | 40.0 | anisotropy 0.25 |"  # the last pass
    assert rows[4] == "| data2vec-lr-1e-3 | `data2vec.lr=0.001` | 82.5 (+2.5) | 60.0 | 37.0 (-3.0) | — |"
    assert rows[5] == "| data2vec-tau | `data2vec.tau_end=0.99` | — | — | — | — |"
    assert rows[-3] == "| dino: the study's run | — | 48.0 | online k-NN 35.5 (collapse warning) |"
    assert rows[-2] == "| dino-nolocal | `dino.n_local=0` | 70.5 (+22.5) | online k-NN 60.0 |"
    assert not any(reported in readme.read_text() for reported in ("11.0", "13.0", "14.0", "15.0", "17.0", "18.0"))
    assert report.main(["--check"], results=results, readmes=(readme,)) == 0


@pytest.mark.slow  # two pretraining runs and the demo's probes (~6 s)
def test_demo_select_scores_each_candidate_on_the_validation_split_only(tmp_path, monkeypatch):
    """benchmarks/demo_select.py: each (updates, batch, M) pretrains through the demo's code and is scored with the
    demo's protocol on 20 % of the training pool; the test digits are never read (poisoned here with NaN)."""
    import data2vec.study.digits as digits

    real = digits.digits_tensors

    def poisoned_test_split():
        train_x, train_y, test_x, test_y = real()
        return train_x, train_y, torch.full_like(test_x, float("nan")), test_y

    monkeypatch.setattr(digits, "digits_tensors", poisoned_test_split)
    select = load_script("bench_demo_select", SPEED_PATH.parent / "demo_select.py")
    report = select.main(["--candidates", "4:16:2,4:16:3", "--label-seeds", "1", "--out", str(tmp_path / "s.json")])
    assert torch.get_num_threads() == 1
    assert [(r["steps"], r["batch_size"], r["num_masks"]) for r in report["results"]] == [(4, 16, 2), (4, 16, 3)]
    for row in report["results"]:
        assert row["masked_views"] == 4 * 16 * row["num_masks"] and row["cpu_seconds"] > 0
        assert set(row["validation"]) == {"linear@10", "linear@50", "knn@10", "knn@50"}
        for cell in row["validation"].values():
            assert len(cell["subsets"]) == 1 and 0 <= cell["mean"] <= 100  # finite: no NaN test image was scored
    assert report["fit_images"] + report["validation_images"] == 1438 and report["validation_images"] == 1438 // 5
    assert json.loads((tmp_path / "s.json").read_text())["results"] == report["results"]
