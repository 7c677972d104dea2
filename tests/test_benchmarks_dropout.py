"""benchmarks/dropout_cpu.py at toy size: the lane mask is dropout (rate p, kept values scaled by 1 / (1 - p),
the gradient through the same mask), and the script writes its report. No timing is asserted."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from test_benchmarks import load_script

PATH = Path(__file__).resolve().parents[1] / "benchmarks" / "dropout_cpu.py"


@pytest.fixture(scope="module")
def bench():
    return load_script("bench_dropout_cpu", PATH)


def test_lane_mask_drops_at_rate_p_and_scales_the_rest(bench):
    torch.manual_seed(0)
    x = torch.full((400, 500), 2.0, requires_grad=True)
    y = bench.lane_dropout(x, 0.1)
    dropped = (y == 0).float().mean().item()
    sd = math.sqrt(0.1 * 0.9 / x.numel())  # binomial spread of the observed rate over 200,000 elements
    assert abs(dropped - 0.1) < 5 * sd
    assert torch.allclose(y[y != 0], torch.tensor(2.0 / 0.9))  # kept values scaled by 1 / (1 - p)
    y.sum().backward()
    assert torch.equal(x.grad == 0, y == 0)  # the gradient goes through the same mask
    # the four lanes of one random word are independent: the rate holds in every lane position
    lanes = (y == 0).flatten()[: x.numel() // 4 * 4].view(-1, 4).float().mean(0)
    assert ((lanes - 0.1).abs() < 5 * math.sqrt(0.1 * 0.9 / (x.numel() / 4))).all()


def test_script_writes_both_dtypes(bench, tmp_path):
    report = bench.main(["--rows", "64", "--cols", "32", "--repeats", "2", "--out", str(tmp_path / "d.json")])
    assert set(report["results"]) == {"float32", "bfloat16"}
    assert set(report["results"]["float32"]["ms"]) == {"F.dropout", "lane mask"}
    assert json.loads((tmp_path / "d.json").read_text())["p"] == 0.1
