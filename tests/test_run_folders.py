"""Run folders that travel, and the exit status of interrupted runs.

A pretraining or fine-tuning run folder that was copied or moved elsewhere resumes there and ends bit-exact with
an uninterrupted run (paths inside a run folder are stored relative to it); a moved run folder still loads as
`--init` and exports with `convert`; a real change of configuration is still refused. A run stopped by SIGTERM /
Ctrl-C saves, says how to continue and exits 143 / 130 (128 + the signal's number), so `pretrain && finetune`
stops there; the same command with --resume then finishes and exits 0.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file
from word_corpus import write_word_corpus

import data2vec.engine.loop
import data2vec.finetune
from data2vec.cli import main


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_word_corpus(tmp_path_factory.mktemp("data") / "corpus.txt", documents=20)


def text_args(corpus, out, *extra, steps=8):
    return ["pretrain", "--method", "data2vec", "--modality", "text", "--preset", "tiny", "--data", str(corpus),
            "--steps", str(steps), "--batch-size", "4", "--seq-len", "32", "--seed", "2", "--out", str(out),
            "--device", "cpu", "--quiet", "--no-plots", "--health-every", "0", *extra]


def vision_args(out, *extra, steps=6):
    return ["pretrain", "--method", "data2vec", "--modality", "vision", "--preset", "tiny", "--data", "digits",
            "--image-size", "8", "--steps", str(steps), "--batch-size", "4", "--warmup-steps", "1", "--seed", "3",
            "--out", str(out), "--device", "cpu", "--quiet", "--no-plots", "--health-every", "0", *extra]


def losses(out):
    return [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines()]


def same_weights(a, b) -> bool:
    """The checkpoints of run folders a and b hold the same tensors, bit for bit."""
    wa, wb = (load_file(str(run / "checkpoint" / "model.safetensors")) for run in (a, b))
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def sigterm_after_update(monkeypatch, update: int) -> None:
    """SIGTERM to this process once update `update` is logged: the loop finishes the next update, saves, stops."""
    real = data2vec.engine.loop.log_step

    def log_then_signal(run, step, *args, **kwargs):
        record = real(run, step, *args, **kwargs)
        if step + 1 == update:
            os.kill(os.getpid(), signal.SIGTERM)
        return record

    monkeypatch.setattr(data2vec.engine.loop, "log_step", log_then_signal)


# ---- pretraining run folders that were copied or moved ---------------------------------------------------------
def test_a_copied_text_run_resumes_to_the_uninterrupted_result(corpus, tmp_path, monkeypatch, capsys):
    assert main(text_args(corpus, tmp_path / "full")) == 0
    with monkeypatch.context() as patch:
        sigterm_after_update(patch, 2)
        assert main(text_args(corpus, tmp_path / "cut")) == 143  # stopped by SIGTERM, checkpoint saved
    assert "--resume" in capsys.readouterr().out and 2 <= len(losses(tmp_path / "cut")) < 8
    config = json.loads((tmp_path / "cut" / "checkpoint" / "config.json").read_text())
    assert config["data"]["tokenizer"] == "tokenizer"  # inside the run folder: stored relative to it
    assert config["data"]["path"] == str(corpus)  # outside it: as given
    shutil.copytree(tmp_path / "cut", tmp_path / "elsewhere" / "copy")
    shutil.copytree(tmp_path / "cut", tmp_path / "copy2")
    shutil.rmtree(tmp_path / "cut")  # nothing may still point at the original folder
    copy = tmp_path / "elsewhere" / "copy"
    assert main(text_args(corpus, copy, "--resume")) == 0
    assert losses(copy) == losses(tmp_path / "full") and same_weights(copy, tmp_path / "full")
    # the copy exports with the tokenizer it carries (convert and --init find it next to the weights)
    assert main(["convert", "--to-hf", str(copy), "--out", str(tmp_path / "hf")]) == 0
    assert (tmp_path / "hf" / "tokenizer.json").read_bytes() == (copy / "tokenizer" / "tokenizer.json").read_bytes()
    # naming the run's own tokenizer (the fix an older message offered) is the same as leaving it out
    assert main(text_args(corpus, tmp_path / "copy2", "--resume", "--tokenizer", str(tmp_path / "copy2" /
                                                                                     "tokenizer"))) == 0
    assert losses(tmp_path / "copy2") == losses(tmp_path / "full")


def test_a_real_change_of_configuration_is_still_refused(corpus, tmp_path, monkeypatch, capsys):
    with monkeypatch.context() as patch:
        sigterm_after_update(patch, 1)
        assert main(text_args(corpus, tmp_path / "cut")) == 143
    shutil.copytree(tmp_path / "cut", tmp_path / "copy")
    other = tmp_path / "other.txt"
    other.write_text(corpus.read_text())
    capsys.readouterr()
    assert main(text_args(other, tmp_path / "copy", "--resume")) == 2  # another corpus
    err = capsys.readouterr().err
    assert "data.path" in err and "fix:" in err and len(err.strip().splitlines()) == 1
    assert main(text_args(corpus, tmp_path / "copy", "--resume", "--seq-len", "16")) == 2  # another block size
    assert "seq_len" in capsys.readouterr().err
    assert main(text_args(corpus, tmp_path / "copy", "--resume", "--tokenizer", str(tmp_path / "cut" /
                                                                                    "tokenizer"))) == 2
    assert "tokenizer" in capsys.readouterr().err  # a tokenizer from elsewhere is not the run's own


def test_a_moved_vision_run_resumes_loads_and_exports(tmp_path, monkeypatch):
    assert main(vision_args(tmp_path / "full")) == 0
    with monkeypatch.context() as patch:
        sigterm_after_update(patch, 2)
        assert main(vision_args(tmp_path / "cut")) == 143
    assert len(losses(tmp_path / "cut")) < 6
    moved = tmp_path / "archive" / "moved"
    moved.parent.mkdir()
    shutil.move(tmp_path / "cut", moved)
    assert main(vision_args(moved, "--resume")) == 0
    assert losses(moved) == losses(tmp_path / "full") and same_weights(moved, tmp_path / "full")
    # the moved run folder serves as --init and exports to the HuggingFace layout
    shutil.move(moved, tmp_path / "moved-again")
    assert main(["probe", "--init", str(tmp_path / "moved-again"), "--data", "digits", "--method", "knn",
                 "--out", str(tmp_path / "probe"), "--device", "cpu"]) == 0
    assert main(["finetune", "--task", "image", "--init", str(tmp_path / "moved-again"), "--data", "digits",
                 "--epochs", "1", "--max-train-examples", "32", "--max-eval-examples", "16", "--out",
                 str(tmp_path / "ft"), "--quiet"]) == 0
    assert main(["convert", "--to-hf", str(tmp_path / "moved-again"), "--out", str(tmp_path / "hf")]) == 0
    assert (tmp_path / "hf" / "config.json").is_file()


def test_a_run_folder_written_before_relative_paths_still_resumes(corpus, tmp_path, monkeypatch):
    """Older run folders recorded the tokenizer trained on --data as `<out>/tokenizer`, --out as given then."""
    assert main(text_args(corpus, tmp_path / "full")) == 0
    with monkeypatch.context() as patch:
        sigterm_after_update(patch, 2)
        assert main(text_args(corpus, tmp_path / "old")) == 143
    for path in (tmp_path / "old" / "config.json", tmp_path / "old" / "checkpoint" / "config.json"):
        config = json.loads(path.read_text())
        config["data"]["tokenizer"] = "runs/old/tokenizer"
        path.write_text(json.dumps(config))
    shutil.move(tmp_path / "old", tmp_path / "renamed")
    assert main(text_args(corpus, tmp_path / "renamed", "--resume")) == 0
    assert losses(tmp_path / "renamed") == losses(tmp_path / "full")


# ---- fine-tuning ---------------------------------------------------------------------------------------------
def finetune_args(out, *extra):
    return ["finetune", "--task", "image", "--data", "digits", "--preset", "tiny", "--epochs", "3", "--batch-size",
            "16", "--lr", "1e-3", "--max-train-examples", "64", "--max-eval-examples", "32", "--seed", "4",
            "--out", str(out), "--quiet", *extra]


@pytest.mark.parametrize("sig, status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_an_interrupted_finetune_exits_128_plus_the_signal_and_a_copy_resumes(tmp_path, monkeypatch, capsys, sig,
                                                                              status):
    assert main(finetune_args(tmp_path / "full")) == 0
    expected = json.loads((tmp_path / "full" / "metrics.json").read_text())
    real, calls = data2vec.finetune.predict, []

    def predict_then_signal(*args, **kwargs):  # the signal arrives while epoch 2 is scored: epoch 1 is saved
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), sig)
        return real(*args, **kwargs)

    # Ctrl-C as a terminal delivers it: a test session started as a background job inherits SIGINT ignored
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with monkeypatch.context() as patch:
            patch.setattr(data2vec.finetune, "predict", predict_then_signal)
            assert main(finetune_args(tmp_path / "cut")) == status
    finally:
        signal.signal(signal.SIGINT, previous)
    err = capsys.readouterr().err
    assert f"interrupted ({sig.name})" in err and "--resume" in err
    shutil.copytree(tmp_path / "cut", tmp_path / "copy")
    shutil.rmtree(tmp_path / "cut")
    assert main(finetune_args(tmp_path / "copy", "--resume")) == 0
    got = json.loads((tmp_path / "copy" / "metrics.json").read_text())
    drop = ("elapsed_s",)
    assert ([{k: v for k, v in r.items() if k not in drop} for r in got["history"]]
            == [{k: v for k, v in r.items() if k not in drop} for r in expected["history"]])
    assert same_weights(tmp_path / "copy", tmp_path / "full")


# ---- the exit status of a signalled pretraining process -------------------------------------------------------
def _stop_with(sig, corpus, out, steps=40, *extra, after=2):
    """Start `data2vec pretrain` in a subprocess, send `sig` once `after` updates are in its metrics.jsonl;
    -> (status, stdout, stderr)."""
    proc = subprocess.Popen([sys.executable, "-m", "data2vec", *text_args(corpus, out, *extra, steps=steps)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    metrics = out / "metrics.jsonl"
    while time.time() < deadline and proc.poll() is None:
        if metrics.is_file() and len(metrics.read_text().splitlines()) >= after:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before the signal was sent"
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=240)
    return proc.returncode, stdout, stderr


@pytest.mark.slow  # two subprocess runs of the CLI, cut by SIGTERM and by SIGINT, then two runs here (~10 s)
def test_a_signalled_pretrain_process_exits_128_plus_the_signal_then_resumes_exactly(corpus, tmp_path):
    steps, out, logged = 40, tmp_path / "cut", 0
    for sig, status, extra in ((signal.SIGTERM, 143, ()), (signal.SIGINT, 130, ("--resume",))):
        code, stdout, stderr = _stop_with(sig, corpus, out, steps, *extra, after=logged + 2)
        assert code == status, stderr[-2000:]
        assert f"stopped by {sig.name}" in stdout and "--resume" in stdout
        assert (out / "checkpoint" / "model.safetensors").is_file()
        assert logged + 2 <= len(losses(out)) < steps, "the run finished before the signal arrived"
        logged = len(losses(out))
        # a shell's `&&` stops after the interrupted run
        assert subprocess.run(["sh", "-c", f"exit {code}"], check=False).returncode == status
    # the same command with --resume (here, in this process) finishes it, where an uninterrupted run ends
    assert main(text_args(corpus, out, "--resume", steps=steps)) == 0
    assert main(text_args(corpus, tmp_path / "full", steps=steps)) == 0
    assert losses(out) == losses(tmp_path / "full")  # exact on the CPU, across both interruptions


def test_a_demo_stopped_by_ctrl_c_exits_130_without_scoring(tmp_path, monkeypatch, capsys):
    real = data2vec.engine.loop.log_step

    def log_then_ctrl_c(run, step, *args, **kwargs):
        record = real(run, step, *args, **kwargs)
        if step == 1:
            os.kill(os.getpid(), signal.SIGINT)  # a first Ctrl-C: the update finishes, the checkpoint is saved
        return record

    monkeypatch.setattr(data2vec.engine.loop, "log_step", log_then_ctrl_c)
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--steps", "6", "--threads", "1", "--baselines", "data2vec",
                 "--out", str(out)]) == 130
    assert "stopped by SIGINT while pretraining data2vec2" in capsys.readouterr().err
    assert not (out / "results.json").exists() and not (out / "pretrain-data2vec").exists()
