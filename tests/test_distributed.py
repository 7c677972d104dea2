"""2-process DDP (torchrun, gloo on CPU) against 1 process on the same global batch.

Design of the comparison: the engine seeds every shard's RNG from (seed, step, shard) with
shard = rank * grad_accum + micro, and draws the data order from (seed, epoch). So 2 processes x
batch 4 x grad_accum 1 and 1 process x batch 4 x grad_accum 2 see the same samples, the same random
masks and the same augmentations, and average the same per-shard gradients (DDP all-reduce mean vs
accumulation of loss / 2). The only difference is the order of floating-point additions, hence the
tolerance 1e-6 (relative) on every per-step loss and on the final EMA teacher weights.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from data2vec.checkpoint import load_checkpoint

TESTS = Path(__file__).parent

SCRIPT = """
import sys, torch
from test_engine import TinyMethod, NoisyData, small_cfg
from data2vec.engine import pretrain
accum, out = int(sys.argv[1]), sys.argv[2]
torch.manual_seed(3)
pretrain(TinyMethod(), NoisyData(), small_cfg(steps=6, grad_accum=accum), out)
"""


def _losses(out):
    return [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines()]


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")])
    env["OMP_NUM_THREADS"] = "1"
    return env


@pytest.mark.slow  # two torchrun launches (~10 s)
def test_two_process_gloo_matches_one_process(tmp_path):
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    one = subprocess.run([sys.executable, str(script), "2", str(tmp_path / "one")], env=_env(),
                         capture_output=True, text=True, timeout=300)
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          str(script), "1", str(tmp_path / "two")], env=_env(), capture_output=True, text=True,
                         timeout=300)
    assert two.returncode == 0, two.stderr[-3000:]
    assert _losses(tmp_path / "two") == pytest.approx(_losses(tmp_path / "one"), rel=1e-6)
    summary = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["global_batch"] == 8
    assert len(summary["teacher_checksums"]) == 2
    assert summary["teacher_checksums"][0] == summary["teacher_checksums"][1]  # bitwise-identical teachers
    # the EMA teacher after 6 updates equals the 1-process teacher
    from test_engine import TinyMethod

    a, b = TinyMethod(), TinyMethod()
    load_checkpoint(tmp_path / "one" / "checkpoint", model=a)
    load_checkpoint(tmp_path / "two" / "checkpoint", model=b)
    torch.testing.assert_close(b.teacher.weight, a.teacher.weight, rtol=1e-6, atol=1e-7)
