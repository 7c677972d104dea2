"""`data2vec demo --quick`: the whole pipeline runs on scikit-learn's digits and writes its table, JSON and plots."""

from __future__ import annotations

import json

import pytest


@pytest.mark.slow  # the whole demo pipeline with both baselines (~15 s): one run serves every check
def test_demo_quick_writes_table_json_and_plots_with_data2vec_and_dino_baselines(tmp_path, capsys):
    from data2vec.cli import main

    out = tmp_path / "demo"
    argv = ["demo", "--quick", "--steps", "6", "--threads", "1", "--baselines", "data2vec,dino", "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "random init" in printed and "data2vec2" in printed and "raw pixels" in printed
    results = json.loads((out / "results.json").read_text())
    assert results["quick"] is True and results["config"]["method"] == "data2vec2"  # the default
    rows = results["results"]
    assert set(rows) == {"random init (no training)", "data2vec", "raw pixels (reference)", "data2vec2", "dino"}
    for row in rows.values():
        for protocol in ("linear", "knn"):
            for cell in row[protocol].values():
                assert len(cell["runs"]) == results["config"]["label_seeds"]
                assert 0.0 <= cell["mean"] <= 100.0
    # the printed table is the one in results.txt, and its numbers are the JSON's means
    table = (out / "results.txt").read_text()
    assert table.strip() in printed
    mean = rows["data2vec2"]["linear"]["5"]["mean"]
    assert f"{mean:5.1f}" in table
    for plot in ("pretrain_loss.png", "accuracy_vs_labels.png"):
        assert (out / "plots" / plot).stat().st_size > 1000
    # engine.pretrain wrote one run folder per method (metrics + checkpoint)
    for name in ("data2vec2", "data2vec", "dino"):
        assert (out / f"pretrain-{name}" / "metrics.jsonl").is_file()
        assert (out / f"pretrain-{name}" / "checkpoint" / "model.safetensors").is_file()
    config = json.loads((out / "pretrain-data2vec2" / "config.json").read_text())
    assert config["method_config"]["num_masks"] == 2 and config["pretrain"]["lr"] == 2e-3  # the demo's v2 recipe
    assert config["method_config"]["encoder"]["position"] == "sincos"
    # the same command again is refused in one line and changes nothing (--overwrite: test_cli_run_folders.py)
    files = {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "already holds" in err[0] and "fix:" in err[0] and "--overwrite" in err[0], err
    assert "--resume" not in err[0]  # nothing to continue: a demo is not resumed
    assert {p: p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()} == files


def test_demo_rejects_bad_options(capsys):
    from data2vec.cli import main

    assert main(["demo", "--baselines", "simclr"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "simclr" in err[0] and "fix" in err[0]


def test_demo_rejects_a_baseline_equal_to_the_method_and_an_unknown_method(capsys):
    from data2vec.cli import main

    assert main(["demo", "--method", "data2vec", "--baselines", "data2vec"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "already the --method" in err[0] and "'data2vec2'" in err[0]
    with pytest.raises(SystemExit):  # argparse's choices: usage and the valid names on stderr
        main(["demo", "--method", "dino"])
    assert "invalid choice: 'dino'" in capsys.readouterr().err
