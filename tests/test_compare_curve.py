"""`data2vec compare --budget-minutes A,B,...`: the budget curve (data2vec/study/curve.py, curve_report.py).

The end-to-end run (digits, --quick, two budgets of seconds) checks the layout (one study folder per budget), that
every point's update count follows from the one calibration (steps = budget / seconds per update, recomputed
here), that the budget-free floors are computed once and shared (marked), that the curve table and plots exist and
that --report-only rebuilds the same curve. The unit tests check the reuse of a finished study as a point, the
refusal of a second precision and of a study made with other settings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from data2vec.cli import main
from data2vec.study import curve


@pytest.mark.slow  # two quick studies on digits with one method (~40 s)
def test_quick_curve_end_to_end(tmp_path, monkeypatch):
    from data2vec.study import vision

    loads = []
    real_load = vision.load
    monkeypatch.setattr(vision, "load", lambda cfg: loads.append(cfg.out) or real_load(cfg))
    out = tmp_path / "curve"
    argv = ["compare", "--quick", "--methods", "data2vec2", "--budget-minutes", "0.02,0.01", "--out", str(out),
            "--threads", "1", "--precision", "fp32"]
    assert main(argv) == 0
    assert len(loads) == 1  # the images are read once, for both points
    points = json.loads((out / "curve.json").read_text())["points"]
    assert points == {"0.01": "budget-0.01min", "0.02": "budget-0.02min"}
    calib = json.loads((out / "calibration.json").read_text())
    assert set(calib) == {"data2vec2"}
    for key, folder in points.items():
        point = json.loads((out / folder / "calibration.json").read_text())
        for name, entry in calib.items():
            assert point[name]["s_per_update"] == entry["s_per_update"]  # one measurement for every point
            assert point[name]["steps"] == max(10, int(60 * float(key) // entry["s_per_update"]))
        assert (out / folder / "data2vec2" / "seed1" / "pretrain.json").is_file()
    # the floors that do not depend on the budget ran once: the second point's copies say where they come from
    first, second = (out / "budget-0.02min"), (out / "budget-0.01min")
    for arm in ("random", "pixels"):
        for path in (second / arm / "seed1").glob("*.json"):
            record = json.loads(path.read_text())
            assert record["shared_from"] == str(Path("..") / first.name / arm / "seed1" / path.name)  # from the point
            original = json.loads((first / arm / "seed1" / path.name).read_text())
            assert record["score"] == original["score"]
        assert not any("shared_from" in json.loads(p.read_text()) for p in (first / arm / "seed1").glob("*.json"))
    summary = json.loads((out / "curve_summary.json").read_text())
    assert summary["points"] == [0.01, 0.02] and summary["precision"] == "fp32"
    row = next(r for r in summary["rows"] if r["arm"] == "data2vec2" and r["protocol"] == "knn@100%")
    assert set(row["by_budget"]) == {"0.01", "0.02"}
    table = (out / "curve.txt").read_text()
    assert "knn@100%" in table and "0.01 min" in table and "samples seen" in table
    assert (out / "plots" / "curve-knn@100pct.png").is_file()
    assert all(any((out / folder / "plots").glob("*.png")) for folder in points.values())  # drawn once, at the end
    before = (out / "curve.md").read_text()
    (out / "curve.md").unlink()
    assert main(["compare", "--report-only", "--out", str(out)]) == 0
    assert (out / "curve.md").read_text() == before


def test_a_finished_study_is_reused_as_a_point_and_lends_its_calibration(tmp_path):
    import dataclasses

    from data2vec.study.vision_config import CompareConfig

    cfg = CompareConfig(data="digits", out=str(tmp_path / "curve"), runs="runs/curve", budget_minutes=60.0,
                        precision="fp32")
    study = tmp_path / "study15"
    study.mkdir()
    stored = {name: getattr(cfg, name) for name in cfg.study_fields if name != "precision"}  # made before --precision
    (study / "config.json").write_text(json.dumps({**stored, "budget_minutes": 15.0, "runs": "runs/old"}))
    (study / "calibration.json").write_text(json.dumps({"data2vec2": {"s_per_update": 1.2, "steps": 750,
                                                                      "budget_minutes": 15.0, "clock": "cpu"}}))
    registered = curve.register_points(cfg, [60.0], [str(study)])
    assert registered["points"] == {"15": "../study15", "60": "budget-60min"}
    calib = json.loads((tmp_path / "curve" / "calibration.json").read_text())
    assert calib["data2vec2"]["s_per_update"] == 1.2 and "steps" not in calib["data2vec2"]
    with pytest.raises(Exception, match="one precision per curve"):
        curve.register_points(dataclasses.replace(cfg, precision="bf16"), [60.0], [])
    # a study made with another encoder is not a point of this curve: one line that names the setting
    (study / "config.json").write_text(json.dumps({**stored, "budget_minutes": 15.0, "dim": 64}))
    with pytest.raises(Exception, match=r"--reuse .*study15 cannot be a point of this curve: .* dim=64"):
        curve.register_points(cfg, [60.0], [str(study)])


def test_a_floor_far_below_the_curves_is_named_not_drawn_and_a_near_one_is_drawn(tmp_path, monkeypatch):
    from matplotlib.figure import Figure
    from matplotlib.image import imread

    from data2vec.study import curve_report

    saved = []
    real_savefig = Figure.savefig
    monkeypatch.setattr(Figure, "savefig", lambda fig, *a, **k: saved.append(fig) or real_savefig(fig, *a, **k))

    def row(mean, std=0.0):
        return {"mean": mean, "std": std, "runs": 1, "seeds": [1]}

    data = {"rows": {("majority", "sst2"): {20.0: row(50.9), 160.0: row(50.9)},
                     ("random", "sst2"): {20.0: row(79.8), 160.0: row(79.8)},
                     ("bert", "sst2"): {20.0: row(79.5, 0.3), 160.0: row(78.0)}},
            "budget": {"bert": {20.0: {"samples_seen": 23_000}, 160.0: {"samples_seen": 190_000}}}}
    arms = ["majority", "random", "bert"]
    assert curve_report.curve_extent(data, "sst2", arms) == pytest.approx([78.0, 79.8])
    low, high = curve_report.floor_window(data, "sst2", arms)  # the curves' span, at least 5 points, each side
    assert (low, high) == pytest.approx((73.0, 84.8))
    assert not low <= 50.9 <= high and low <= 79.8 <= high
    assert curve_report.padded([78.0, 79.8, 79.8]) == pytest.approx((77.91, 79.89))  # 5 % of the span each side
    assert curve_report.padded([79.0, 79.5]) == pytest.approx((78.95, 79.55))  # 5 % of 1 point, at least
    assert curve_report.floor_window({"rows": {("random", "sst2"): {20.0: row(79.8)}}}, "sst2", ["random"]) is None
    path = curve_report.plot_protocol(tmp_path, data, "sst2")
    assert imread(path).shape[:2] == (380, 1000)
    minutes = saved[0].axes[0]
    labels = [t.get_text() for t in minutes.get_legend().get_texts()]
    assert labels[0] == "majority class (STS-B: mean score): 50.9, off the axis"
    assert labels[1] == "random init (same encoder)"
    assert minutes.get_ylim() == pytest.approx((77.91, 79.89))  # the curves and the random-init line only
    assert [t.get_text() for t in minutes.get_xticklabels()] == ["20", "160"]  # the budgets, as numbers
