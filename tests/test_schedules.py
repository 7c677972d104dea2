"""Schedules against tables of values worked out by hand (not by the code under test)."""

import math

import pytest
import torch

from data2vec.schedules import LRSchedule, tri_stage, warmup_cosine


def test_warmup_cosine_table():
    # base 1.0, 4 warm-up steps, 12 total: warm-up 0.25..1.0, then cos from 1 (step 4) over 8 steps to 0
    table = {0: 0.25, 1: 0.5, 2: 0.75, 3: 1.0, 4: 1.0, 6: (1 + math.sqrt(0.5)) / 2, 8: 0.5,
             10: (1 - math.sqrt(0.5)) / 2, 12: 0.0, 20: 0.0}
    for step, want in table.items():
        assert warmup_cosine(step, 12, 4, 1.0) == pytest.approx(want, abs=1e-12), step


def test_warmup_cosine_final_lr_and_no_warmup():
    assert warmup_cosine(0, 10, 0, 2.0, final_lr=1.0) == pytest.approx(2.0)
    assert warmup_cosine(5, 10, 0, 2.0, final_lr=1.0) == pytest.approx(1.5)
    assert warmup_cosine(10, 10, 0, 2.0, final_lr=1.0) == pytest.approx(1.0)


def test_tri_stage_table():
    # 100 steps: warm-up 10 (0.01 -> 1), hold 40, decay 50 with exp(-ln(100) t / 50), then 0.01
    kw = dict(total_steps=100, warmup_frac=0.1, hold_frac=0.4, decay_frac=0.5, base_lr=1.0)
    table = {0: 0.01, 5: 0.505, 10: 1.0, 49: 1.0, 50: 1.0, 75: 0.1, 99: 100 ** (-49 / 50), 100: 0.01, 150: 0.01}
    for step, want in table.items():
        assert tri_stage(step, **kw) == pytest.approx(want, rel=1e-9), step


def test_tri_stage_rejects_fractions_over_one():
    with pytest.raises(ValueError, match="sum to at most 1"):
        tri_stage(0, 100, 0.5, 0.5, 0.5, 1.0)


def test_lr_schedule_applies_lr_scale_per_group():
    a, b = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.AdamW([{"params": [a], "lr_scale": 0.5}, {"params": [b]}], lr=1.0)
    sched = LRSchedule.build("cosine", total_steps=12, base_lr=1.0, warmup_steps=4)
    assert sched.apply(opt, 1) == pytest.approx(0.5)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.25, 0.5])
    assert sched.state_dict()["kind"] == "cosine"
    tri = LRSchedule.build("tri_stage", total_steps=100, base_lr=1.0)
    assert tri(75) == pytest.approx(0.1)
    with pytest.raises(ValueError, match="unknown schedule"):
        LRSchedule.build("linear", total_steps=10, base_lr=1.0)
