"""`--compile`, `--bf16` and `--device cuda` through the real `data2vec pretrain` command (docs/design.md
section 9, rule 8).

The flags are off in every other test, so a change that breaks them would go unnoticed: these runs are
few steps of the tiny presets, the compiled ones in subprocesses (a compiled graph stays out of the test process; the
eager run they are compared with runs here, beside them), without plots, checked for finished runs, finite losses
and, where the numbers can be compared, equality with eager mode.
CPU: torch.compile needs a C compiler (gcc here); the three runs cost about 100 CPU-seconds with a cold
compilation cache (a fresh machine: g++ builds some 30 kernels per graph) and about 30 with the cache an earlier
run left in /tmp/torchinductor_<user> (2-core machine, torch 2.14), so the tests are `slow`. GPU: skipped, with the
reason, without CUDA.
"""

import json
import math
import os
import subprocess
import sys

import pytest
import torch

NO_DROPOUT = ["--set", "dropout=0.0", "--set", "attn_dropout=0.0"]  # eager and compiled draw dropout differently
# --compile compiles the encoders' blocks only (engine.setup.compile_encoders): the masks stay eager, drawn from the
# seeded RNG


def pretrain_args(out, *args):
    return ["pretrain", *args, "--out", str(out), "--quiet", "--no-plots"]


def command(out, *args):
    return [sys.executable, "-m", "data2vec", *pretrain_args(out, *args)]


def pretrain(out, *args, timeout=600):
    """Run `python -m data2vec pretrain ... --out OUT --quiet` in a subprocess; (return code, stderr)."""
    proc = subprocess.run(command(out, *args), capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, OMP_NUM_THREADS="1"))
    return proc.returncode, proc.stderr


def pretrain_together(runs: dict, in_process: dict, timeout=600) -> dict:
    """{name: (out, args)} of `runs` as concurrent subprocesses (one thread each: compiling is single-threaded, so
    the runs share the cores instead of queueing), while the eager runs of `in_process` run here (nothing compiled
    enters this process; one process start fewer); {name: (return code, stderr, out)}."""
    from data2vec.cli import main

    env = dict(os.environ, OMP_NUM_THREADS="1")
    procs = {name: (subprocess.Popen(command(out, *args), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                     text=True, env=env), out) for name, (out, args) in runs.items()}
    done = {name: (main(pretrain_args(out, *args)), "", out) for name, (out, args) in in_process.items()}
    for name, (proc, out) in procs.items():
        _, err = proc.communicate(timeout=timeout)
        done[name] = (proc.returncode, err, out)
    return done


def metrics(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("compile") / "corpus.txt"
    path.write_text("the cat sat on the mat.\nthe dog ran over the hill.\n\n" * 40)
    return path


@pytest.fixture(scope="module")
def cpu_runs(corpus, tmp_path_factory):
    """The same 2-step text run on CPU without dropout, eager and compiled, and a compiled 2-step vision run, side
    by side: {name: (code, stderr, out)}."""
    root = tmp_path_factory.mktemp("runs")
    text = ["--method", "data2vec", "--modality", "text", "--preset", "tiny", "--data", str(corpus), "--steps", "2",
            "--batch-size", "4", "--seq-len", "32", "--seed", "3", "--device", "cpu", "--precision", "fp32",
            *NO_DROPOUT]  # fp32: the comparison below is at float32 rounding
    vision = ["--method", "data2vec", "--modality", "vision", "--preset", "tiny", "--data", "digits", "--steps", "2",
              "--batch-size", "8", "--device", "cpu", "--compile"]
    return pretrain_together({"compiled": (root / "compiled", [*text, "--compile"]),
                              "vision": (root / "vision", vision)},
                             in_process={"eager": (root / "eager", text)})


@pytest.mark.slow  # compiling the tiny model's blocks: tens of seconds on a CPU
def test_compiled_text_run_on_cpu_finishes(cpu_runs):
    code, err, out = cpu_runs["compiled"]
    assert code == 0, err[-3000:]
    rows = metrics(out)
    assert [r["step"] for r in rows] == [1, 2]
    assert all(math.isfinite(r["loss"]) for r in rows)
    assert json.loads((out / "summary.json").read_text())["steps_done"] == 2
    assert (out / "checkpoint" / "model.safetensors").is_file()


@pytest.mark.slow  # shares the runs above
def test_compiled_text_losses_equal_eager(cpu_runs):
    for name in ("eager", "compiled"):
        assert cpu_runs[name][0] == 0, cpu_runs[name][1][-3000:]
    eager = [r["loss"] for r in metrics(cpu_runs["eager"][2])]
    compiled = [r["loss"] for r in metrics(cpu_runs["compiled"][2])]
    assert compiled == pytest.approx(eager, rel=1e-4)  # same masks and weights; kernels differ in rounding only


@pytest.mark.slow  # the tiny ViT's blocks compiled, run beside the text runs
def test_compiled_vision_run_on_cpu(cpu_runs):
    code, err, out = cpu_runs["vision"]
    assert code == 0, err[-3000:]
    rows = metrics(out)
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
