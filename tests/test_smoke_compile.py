"""`--compile`, `--bf16` and `--device cuda` through the real `data2vec pretrain` command (docs/design.md
section 9, rule 8).

The flags are off in every other test, so a change that breaks them would go unnoticed: these runs are
few steps of the tiny presets in subprocesses (a compiled graph stays out of the test process), checked
for finished runs, finite losses and, where the numbers can be compared, equality with eager mode.
CPU: torch.compile needs a C compiler (gcc here) and spends ~25 s compiling the tiny text model
(2-core machine, torch 2.x), so the tests are `slow`. GPU: skipped, with the reason, without CUDA.
"""

import json
import math
import os
import subprocess
import sys

import pytest
import torch

NO_DROPOUT = ["--set", "dropout=0.0", "--set", "attn_dropout=0.0"]  # eager and compiled draw dropout differently
# --compile compiles the encoders only (engine.compile_encoders): the masks stay eager, drawn from the seeded RNG


def pretrain(out, *args, timeout=600):
    """Run `python -m data2vec pretrain ... --out OUT --quiet` in a subprocess; (return code, stderr)."""
    cmd = [sys.executable, "-m", "data2vec", "pretrain", *args, "--out", str(out), "--quiet"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    return proc.returncode, proc.stderr


def metrics(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("compile") / "corpus.txt"
    path.write_text("the cat sat on the mat.\nthe dog ran over the hill.\n\n" * 40)
    return path


@pytest.fixture(scope="module")
def text_runs(corpus, tmp_path_factory):
    """The same 2-step text run on CPU without dropout, eager and compiled: {name: (code, stderr, out)}."""
    root = tmp_path_factory.mktemp("runs")
    args = ["--method", "data2vec", "--modality", "text", "--preset", "tiny", "--data", str(corpus), "--steps", "2",
            "--batch-size", "4", "--seq-len", "32", "--seed", "3", "--device", "cpu", *NO_DROPOUT]
    runs = {}
    for name, extra in (("eager", []), ("compiled", ["--compile"])):
        code, err = pretrain(root / name, *args, *extra)
        runs[name] = (code, err, root / name)
    return runs


@pytest.mark.slow  # compiling the tiny model takes ~25 s on 2 CPU cores
def test_compiled_text_run_on_cpu_finishes(text_runs):
    code, err, out = text_runs["compiled"]
    assert code == 0, err[-3000:]
    rows = metrics(out)
    assert [r["step"] for r in rows] == [1, 2]
    assert all(math.isfinite(r["loss"]) for r in rows)
    assert json.loads((out / "summary.json").read_text())["steps_done"] == 2
    assert (out / "checkpoint" / "model.safetensors").is_file()


@pytest.mark.slow  # shares the runs above
def test_compiled_text_losses_equal_eager(text_runs):
    for name in ("eager", "compiled"):
        assert text_runs[name][0] == 0, text_runs[name][1][-3000:]
    eager = [r["loss"] for r in metrics(text_runs["eager"][2])]
    compiled = [r["loss"] for r in metrics(text_runs["compiled"][2])]
    assert compiled == pytest.approx(eager, rel=1e-4)  # same masks and weights; kernels differ in rounding only


@pytest.mark.slow  # a compile attempt of the tiny ViT (~20 s)
def test_compiled_vision_run_on_cpu(tmp_path):
    code, err = pretrain(tmp_path / "run", "--method", "data2vec", "--modality", "vision", "--preset", "tiny",
                         "--data", "digits", "--steps", "2", "--batch-size", "8", "--device", "cpu", "--compile")
    assert code == 0, err[-3000:]
    rows = metrics(tmp_path / "run")
    assert [r["step"] for r in rows] == [1, 2] and all(math.isfinite(r["loss"]) for r in rows)


@pytest.mark.gpu
@pytest.mark.slow  # two CLI runs with a compile each
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA: the bf16 + compile path runs on a GPU only")
def test_gpu_bf16_compile_then_resume(tmp_path):
    out = tmp_path / "run"
    args = ["--method", "data2vec", "--modality", "vision", "--preset", "tiny", "--data", "digits",
            "--batch-size", "8", "--device", "cuda", "--bf16", "--compile", "--save-every", "2"]
    code, err = pretrain(out, *args, "--steps", "4")
    assert code == 0, err[-3000:]
    assert [r["step"] for r in metrics(out)] == [1, 2, 3, 4]
    code, err = pretrain(out, *args, "--steps", "6", "--resume")
    assert code == 0, err[-3000:]
    rows = metrics(out)
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]  # continued from the step-4 checkpoint, none repeated
    assert all(math.isfinite(r["loss"]) for r in rows)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps_done"] == 6 and summary["nonfinite_skipped"] == 0
