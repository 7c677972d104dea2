"""`data2vec pretrain` end to end on data written here: text and vision runs, a kill before the first checkpoint,
clear one-line errors for bad input, and a 2-process torchrun job of the real command that equals the 1-process run
(a SIGTERM'd single process resuming exactly is in test_run_folders.py)."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file
from word_corpus import write_word_corpus

from data2vec.cli import main


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_word_corpus(tmp_path_factory.mktemp("data") / "corpus.txt", documents=30)


def text_args(corpus, out, steps=6, *extra, plots=False):
    return ["pretrain", "--method", "data2vec", "--modality", "text", "--preset", "tiny", "--data", str(corpus),
            "--steps", str(steps), "--batch-size", "4", "--seq-len", "32", "--seed", "2", "--out", str(out),
            "--device", "cpu", "--quiet", *([] if plots else ["--no-plots"]), *extra]


def losses(out):
    return [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow  # a full CLI text run (~2 s)
def test_text_run_writes_the_run_folder(corpus, tmp_path):
    assert main(text_args(corpus, tmp_path / "run", plots=True)) == 0
    out = tmp_path / "run"
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5, 6]
    assert all(k in records[0] for k in ("loss", "lr", "tau", "target_std", "pred_std", "throughput"))
    config = json.loads((out / "config.json").read_text())
    assert config["method"] == "data2vec" and config["data"]["kind"] == "text"
    assert config["method_config"]["encoder"]["vocab_size"] == config["data"]["vocab_size"]
    assert (out / "tokenizer" / "tokenizer.json").is_file() and (out / "plots" / "loss.png").is_file()
    assert (out / "checkpoint" / "model.safetensors").is_file()
    # a run given --tokenizer carries a copy too, with the same ids, so `finetune --init` finds it
    from tasks.text.tokenizer import load_tokenizer

    assert main(text_args(corpus, tmp_path / "given", 2, "--tokenizer", str(out / "tokenizer"))) == 0
    copied = load_tokenizer(tmp_path / "given" / "tokenizer")
    assert not (tmp_path / "given" / "plots").exists()  # --no-plots
    original = load_tokenizer(out / "tokenizer")
    sentence = "the cat sat on a mat"
    assert copied.encode(sentence) == original.encode(sentence) and copied.vocab_size == original.vocab_size


def test_bad_input_gives_one_clear_line(corpus, tmp_path, capsys):
    assert main(text_args(tmp_path / "missing.txt", tmp_path / "a")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not found" in err[0] and "fix:" in err[0]
    assert main(text_args(corpus, tmp_path / "b", 3)) == 0
    (tmp_path / "b" / "checkpoint" / "model.safetensors").write_bytes(b"\x00garbage" * 10)
    assert main(text_args(corpus, tmp_path / "b", 3, "--resume")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "model.safetensors is corrupt" in err[0] and "Traceback" not in err[0]
    assert main(text_args(corpus, tmp_path / "b", 3)) == 2  # a fresh run must not overwrite a run
    assert "--resume" in capsys.readouterr().err
    assert main(text_args(corpus, tmp_path / "d", 3, "--warmup-steps", "5")) == 2
    assert "warm-up" in capsys.readouterr().err
    assert main(["pretrain", "--method", "dino", "--modality", "text", "--data", str(corpus), "--out",
                 str(tmp_path / "e")]) == 2
    assert "vision-only" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main(["pretrain", "--method", "mae", "--data", str(corpus), "--out", str(tmp_path / "f")])
    assert exit_info.value.code == 2


@pytest.mark.parametrize("method", ["data2vec", "dino"])
def test_vision_digits_runs(method, tmp_path):
    out = tmp_path / method
    args = ["pretrain", "--method", method, "--modality", "vision", "--preset", "tiny", "--data", "digits",
            "--steps", "2", "--batch-size", "4", "--warmup-steps", "1", "--out", str(out), "--device", "cpu", "--quiet",
            "--no-plots"]
    assert main(args) == 0
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2] and all(r["loss"] is not None for r in records)
    assert json.loads((out / "config.json").read_text())["data"]["channels"] == 1


def test_dino_crop_settings_given_with_set_reach_the_data(tmp_path):
    # the multi-crop pipeline is built from the config the method runs with, not from the preset: a --set of the
    # crop fields changes the crops the data loader makes (it was silently ignored before)
    out = tmp_path / "dino"
    args = ["pretrain", "--method", "dino", "--modality", "vision", "--preset", "tiny", "--data", "digits",
            "--steps", "2", "--batch-size", "4", "--warmup-steps", "1", "--out", str(out), "--device", "cpu",
            "--quiet", "--no-plots", "--set", "n_local=1", "--set", "local_scale=[0.3,0.5]", "--set",
            "global_scale=[0.7,1.0]"]
    seen = []
    from baselines.multicrop import MultiCropTransform

    real_call = MultiCropTransform.__call__

    def spy(self, image):
        crops = real_call(self, image)
        seen.append((len(crops), tuple(self.local_scale), tuple(self.global_scale)))
        return crops

    MultiCropTransform.__call__ = spy
    try:
        assert main(args) == 0
    finally:
        MultiCropTransform.__call__ = real_call
    assert seen and set(seen) == {(3, (0.3, 0.5), (0.7, 1.0))}  # 2 global + 1 local crop, the scales as set


# ---- one command line for every launch: --resume starts afresh when there is no checkpoint yet ----------


def _children(pid: int) -> list[int]:
    """The pids whose parent is `pid` (read from /proc: no extra dependency)."""
    out = []
    for stat in os.listdir("/proc"):
        if stat.isdigit():
            try:
                fields = open(f"/proc/{stat}/stat").read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                out.append(int(stat))
    return out


def _wait_for(predicate, proc, timeout=240):
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None and not predicate():
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before the moment the test waited for"


def _lines(path):
    return len(path.read_text().splitlines()) if path.is_file() else 0


def test_resume_without_a_checkpoint_starts_a_new_run(corpus, tmp_path, capsys):
    assert main(text_args(corpus, tmp_path / "plain", 3)) == 0
    assert main(text_args(corpus, tmp_path / "first", 3, "--resume")) == 0  # the first launch of a job script
    assert "holds no checkpoint yet; starting a new run" in capsys.readouterr().out
    assert losses(tmp_path / "first") == losses(tmp_path / "plain")
    assert main(text_args(corpus, tmp_path / "first", 3, "--resume")) == 0  # a relaunch of a finished run: a no-op
    assert losses(tmp_path / "first") == losses(tmp_path / "plain")


@pytest.mark.slow  # a subprocess run, killed (~5 s)
def test_a_kill_before_the_first_checkpoint_then_the_same_command(corpus, tmp_path, capsys):
    steps = 30
    assert main(text_args(corpus, tmp_path / "full", steps)) == 0
    out = tmp_path / "killed"
    args = text_args(corpus, out, steps, "--resume")
    proc = subprocess.Popen([sys.executable, "-m", "data2vec", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    _wait_for(lambda: _lines(out / "metrics.jsonl") >= 2, proc)
    proc.kill()  # SIGKILL: no handler runs, no checkpoint is written
    proc.communicate(timeout=60)
    assert not (out / "checkpoint").exists() and 2 <= _lines(out / "metrics.jsonl") < steps
    capsys.readouterr()
    assert main(args) == 0  # the same command line again (here, in this process)
    assert "starting a new run" in capsys.readouterr().out
    assert losses(out) == losses(tmp_path / "full")


@pytest.mark.slow  # a torchrun job of 2 processes, four launches of the workers in all (~30 s)
def test_torchrun_job_survives_a_scheduler_sigterm_a_worker_sigterm_and_a_worker_kill_and_ends_exact(corpus, tmp_path):
    """One 2-process job meets the three ways a launch ends early, then ends where an uninterrupted run ends:
    a scheduler's SIGTERM to torchrun (forwarded to the workers, which save; the job exits non-zero, no relaunch);
    then, relaunched, a SIGTERM to one worker alone (both save and exit 143; torchrun relaunches them) and a SIGKILL
    to one worker (no save; torchrun relaunches from the last checkpoint). Each relaunch resumes exactly.

    The uninterrupted reference is one process with --grad-accum 2, so the test also proves that 2-process DDP
    (gloo on CPU) is the 1-process run: the engine seeds every shard's RNG from (seed, step, shard) with
    shard = rank * grad_accum + micro and draws the data order from (seed, epoch), so 2 processes x batch 4 and
    1 process x batch 4 x 2 accumulated see the same samples, the same masks and the same dropout, and average the
    same per-shard gradients (DDP's all-reduce mean vs the accumulation of loss / 2). Only the order of the
    floating-point additions may differ, hence rel 1e-6 on every per-step loss and on the final student and EMA
    teacher weights (they came out bit-identical on this machine)."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    steps = 24

    def torchrun(out):
        return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                # a short --dist-timeout: a relaunch that could not connect would fail fast (it did, before every
                # attempt got its own store keys: distributed.attempt_store), and the assertion below names it
                "--max-restarts", "3", "-m", "data2vec",
                *text_args(corpus, out, steps, "--resume", "--save-every", "4", "--dist-timeout", "30")]

    def start(out):
        return subprocess.Popen(torchrun(out), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def workers(proc, other_than=()):
        """torchrun's worker pids, once two that are not in `other_than` (an earlier launch's) are running."""
        _wait_for(lambda: len(set(_children(proc.pid)) - set(other_than)) >= 2, proc)
        return sorted(set(_children(proc.pid)) - set(other_than))

    assert main(text_args(corpus, tmp_path / "full", steps, "--grad-accum", "2")) == 0  # the reference, here
    assert json.loads((tmp_path / "full" / "summary.json").read_text())["global_batch"] == 8
    assert len(losses(tmp_path / "full")) == steps
    out = tmp_path / "job"
    # a scheduler's SIGTERM to torchrun
    proc = start(out)
    _wait_for(lambda: _lines(out / "metrics.jsonl") >= 2, proc)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode != 0 and "stopped by SIGTERM" in stdout, stderr[-3000:]
    assert 2 <= len(losses(out)) < steps and (out / "checkpoint" / "model.safetensors").is_file()
    # the same command again: a SIGTERM to one worker, then a SIGKILL to one worker of the relaunch
    proc = start(out)
    first = workers(proc)
    done = _lines(out / "metrics.jsonl")
    _wait_for(lambda: _lines(out / "metrics.jsonl") >= done + 2, proc)
    os.kill(first[-1], signal.SIGTERM)
    second = workers(proc, other_than=first)
    done = _lines(out / "metrics.jsonl")
    _wait_for(lambda: _lines(out / "metrics.jsonl") >= done + 2, proc)
    os.kill(second[-1], signal.SIGKILL)  # one worker dies: torchrun stops the other and relaunches both
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr[-3000:]
    assert "connectFullMesh failed" not in stderr, "a relaunch could not connect to the others"
    assert "stopped by SIGTERM" in stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["global_batch"] == 8 and summary["steps_done"] == steps
    assert summary["teacher_checksums"][0] == summary["teacher_checksums"][1]  # bitwise-identical teachers
    assert losses(out) == pytest.approx(losses(tmp_path / "full"), rel=1e-6)  # every relaunch resumed exactly
    job, reference = (load_file(d / "checkpoint" / "model.safetensors") for d in (out, tmp_path / "full"))
    assert job.keys() == reference.keys() and any(k.startswith("teacher.") for k in job)
    for key in job:  # the student and the EMA teacher
        torch.testing.assert_close(job[key], reference[key], rtol=1e-6, atol=1e-7, msg=key)
