"""The commands' --out folders: a second launch never replaces a finished result unasked (exit 2, one line naming
the fix; `--overwrite` replaces it), and a launch that fails before training leaves the file system as it was.

Every command runs at its smallest settings on data written here (or scikit-learn's bundled digits)."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch
from PIL import Image

from data2vec.cli import main

WORDS = "the a cat dog sat ran on under mat tree red big small quickly".split()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    rng = random.Random(0)
    path = tmp_path_factory.mktemp("data") / "corpus.txt"
    lines = [" ".join(rng.choice(WORDS) for _ in range(10)) + "." for _ in range(120)]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def own_checkpoint(tmp_path_factory):
    """A tiny vision encoder in our format (what `convert --to-hf` reads)."""
    from data2vec.backbone import build_backbone
    from data2vec.config import vision_preset
    from data2vec.hub import save_backbone

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("ours")
    save_backbone(folder, build_backbone(vision_preset("tiny", image_size=8, patch_size=2, in_chans=1)))
    return folder


@pytest.fixture(autouse=True)
def no_plots(monkeypatch):
    """The engine's plots (about 3 s of matplotlib per pretraining launch) are not what these tests check."""
    import data2vec.engine.state

    monkeypatch.setattr(data2vec.engine.state, "write_plots", lambda *args, **kwargs: None)


def pretrain_args(corpus, out, *extra):
    return ["pretrain", "--method", "data2vec", "--modality", "text", "--preset", "tiny", "--data", str(corpus),
            "--steps", "2", "--batch-size", "4", "--seq-len", "32", "--health-every", "0", "--device", "cpu",
            "--out", str(out), "--quiet", *extra]


# one tiny, complete launch per command: (name, argv builder(out, data))
COMMANDS = {
    "pretrain": lambda out, d: pretrain_args(d["corpus"], out),
    "finetune": lambda out, d: ["finetune", "--task", "image", "--data", "digits", "--preset", "tiny", "--epochs", "1",
                                "--batch-size", "8", "--max-train-examples", "16", "--max-eval-examples", "8",
                                "--out", str(out), "--quiet"],
    "probe": lambda out, d: ["probe", "--data", "digits", "--preset", "tiny", "--method", "knn", "--k", "1",
                             "--max-train-examples", "20", "--max-eval-examples", "10", "--out", str(out)],
    "convert": lambda out, d: ["convert", "--to-hf", str(d["ours"]), "--out", str(out)],
}


def snapshot(folder):
    """{relative path: bytes} of every file under `folder`."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# the demo's claim on --out: a stand-in below (its real run is refused a second time in test_demo.py)
@pytest.mark.parametrize("command", list(COMMANDS))
def test_a_second_launch_into_a_finished_out_is_refused_until_overwrite(command, corpus, own_checkpoint, tmp_path,
                                                                         capsys):
    argv = COMMANDS[command](tmp_path / "out", {"corpus": corpus, "ours": own_checkpoint})
    assert main(argv) == 0
    capsys.readouterr()
    first = snapshot(tmp_path / "out")
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "already holds" in err[0] and "fix:" in err[0] and "--overwrite" in err[0], err
    assert ("--resume" in err[0]) == (command in ("pretrain", "finetune"))  # offered only where it continues a run
    assert snapshot(tmp_path / "out") == first  # not a byte changed
    assert main(argv + ["--overwrite"]) == 0


def test_overwrite_deletes_the_old_result_but_not_the_users_files(corpus, tmp_path):
    out = tmp_path / "run"
    assert main(pretrain_args(corpus, out)) == 0
    (out / "notes.txt").write_text("mine")
    (out / "checkpoint.old").mkdir()  # a leftover of an interrupted save: part of the old result
    assert main(pretrain_args(corpus, out, "--overwrite")) == 0
    assert (out / "notes.txt").read_text() == "mine" and not (out / "checkpoint.old").exists()
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2  # the new run's updates only
    assert main(pretrain_args(corpus, out, "--overwrite", "--resume")) == 2  # contradictory: refused


def test_demo_refuses_a_finished_demo_folder_until_overwrite(monkeypatch, tmp_path, capsys):
    """The demo's claim on --out, with a stand-in for its minutes of work that writes what the demo writes."""
    import data2vec.cli.demo as demo

    def stand_in(args, cfg, out, t0):
        (out / "pretrain-data2vec2" / "checkpoint").mkdir(parents=True)
        (out / "results.json").write_text(json.dumps({"launch": len(launches)}))
        launches.append(out)
        return 0

    launches = []
    monkeypatch.setattr(demo, "_demo", stand_in)
    argv = ["demo", "--quick", "--out", str(tmp_path / "demo")]
    assert main(argv) == 0
    capsys.readouterr()
    first = snapshot(tmp_path / "demo")
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "already holds a demo result" in err[0] and "fix:" in err[0] and "--overwrite" in err[0]
    assert snapshot(tmp_path / "demo") == first and len(launches) == 1
    assert main(argv + ["--overwrite"]) == 0  # the old result was deleted first: the stand-in could recreate it
    assert json.loads((tmp_path / "demo" / "results.json").read_text()) == {"launch": 1}


def test_demo_quick_writes_to_its_own_default_folder(monkeypatch, tmp_path):
    """`demo --quick` without --out never touches runs/demo (the full demo's results and checkpoint)."""
    import data2vec.cli.demo as demo

    seen = []
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(demo, "_demo", lambda args, cfg, out, t0: seen.append(out) or 0)
    assert main(["demo", "--quick"]) == 0 and main(["demo"]) == 0
    assert [str(p) for p in seen] == ["runs/demo-quick", "runs/demo"]


def test_compare_keeps_a_finished_study_of_other_settings(tmp_path, capsys):
    """compare continues the same study in its --out (finished results are reused) and refuses another study
    there: the finished results are not touched."""
    out = tmp_path / "study"
    (out / "data2vec" / "seed1").mkdir(parents=True)
    (out / "config.json").write_text(json.dumps({"data": "digits", "budget_minutes": 15.0}))
    (out / "data2vec" / "seed1" / "linear@1%.json").write_text('{"score": 50.0}')
    before = snapshot(out)
    assert main(["compare", "--data", "digits", "--budget-minutes", "5", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "budget_minutes" in err[0] and "fix:" in err[0]
    assert snapshot(out) == before


# ---- no debris: a launch that fails before training leaves the file system as it was --------------------------


def _image_folder(root, broken: int):
    """Two classes of four 8 x 8 images; the last `broken` images of the first class are not PNGs (all four: the
    first image, which the data check reads, is broken; three: the engine's first batch meets them)."""
    for label in ("a", "b"):
        (root / label).mkdir(parents=True)
        for i in range(4):
            pixels = np.random.default_rng(i).integers(0, 255, (8, 8, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / label / f"{i}.png")
            if label == "a" and i >= 4 - broken:
                (root / label / f"{i}.png").write_bytes(b"this is not a png")
    return root


def vision_pretrain(data, out):
    return ["pretrain", "--method", "data2vec", "--modality", "vision", "--preset", "tiny", "--data", str(data),
            "--steps", "2", "--batch-size", "4", "--image-size", "8", "--health-every", "0", "--out", str(out),
            "--quiet"]


FAILURES = {  # name -> argv builder(tmp_path, out): each launch fails before its first update
    "pretrain: a bad path": lambda t, out: pretrain_args(t / "missing.txt", out),
    "pretrain: an empty text corpus": lambda t, out: pretrain_args(_write(t / "empty.txt", ""), out),
    "pretrain: a text file as image data": lambda t, out: vision_pretrain(_write(t / "README.md", "# hi\n"), out),
    "pretrain: a broken first image": lambda t, out: vision_pretrain(_image_folder(t / "imgs", broken=4), out),
    "pretrain: broken images in the first batch": lambda t, out: vision_pretrain(_image_folder(t / "imgs", broken=3),
                                                                                 out),
    "finetune: a bad path": lambda t, out: ["finetune", "--task", "image", "--data", str(t / "nope"), "--preset",
                                            "tiny", "--out", str(out)],
    "finetune: a text file as image data": lambda t, out: ["finetune", "--task", "image", "--data",
                                                           str(_write(t / "README.md", "# hi\n")), "--out", str(out)],
    "probe: a bad path": lambda t, out: ["probe", "--data", str(t / "nope"), "--out", str(out)],
    "convert: a folder that is no checkpoint": lambda t, out: ["convert", "--from-hf", str(_write(t / "hf" /
                                                               "config.json", "{}").parent), "--out", str(out)],
}


def _write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.mark.parametrize("case", list(FAILURES))
@pytest.mark.parametrize("out_exists", [False, True], ids=["new-out", "existing-out"])
def test_a_launch_that_fails_before_training_leaves_no_debris(case, out_exists, tmp_path, capsys):
    out = tmp_path / "runs" / "run"  # `runs/` does not exist either: the launch creates both
    argv = FAILURES[case](tmp_path, out)
    if out_exists:
        _write(out / "notes.txt", "the user's own file")
    before = snapshot(tmp_path)
    folders = sorted(p for p in tmp_path.rglob("*") if p.is_dir())
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "fix:" in err[0], err
    assert snapshot(tmp_path) == before
    assert sorted(p for p in tmp_path.rglob("*") if p.is_dir()) == folders


def test_demo_failing_before_pretraining_leaves_no_folder(monkeypatch, tmp_path):
    import data2vec.cli.demo as demo

    def no_digits():
        raise OSError("cannot read the digits; fix: reinstall scikit-learn")

    monkeypatch.setattr(demo, "digits_tensors", no_digits)
    with pytest.raises(OSError, match="cannot read the digits"):  # not a refusal: main lets it through
        main(["demo", "--quick", "--out", str(tmp_path / "runs" / "demo")])
    assert list(tmp_path.iterdir()) == []


def test_a_failure_after_training_started_keeps_the_run_folder(corpus, tmp_path, monkeypatch):
    """What a run that trained wrote explains its failure (and --resume continues a checkpoint): it is kept."""
    import data2vec.engine.state

    def plots_then_fail(*args, **kwargs):  # the run's end, after every update was logged
        raise ValueError("disk full; fix: free some space")

    monkeypatch.setattr(data2vec.engine.state, "write_plots", plots_then_fail)
    assert main(pretrain_args(corpus, tmp_path / "run")) == 2
    assert len((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) == 2
