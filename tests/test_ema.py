"""EMA teacher and schedules against formulas and tables written here (docs/design.md section 4, EMA)."""

import math

import pytest
import torch
from torch import nn

from data2vec import build_backbone, get_preset
from data2vec.ema import EMATeacher, cosine_momentum, ema_update_, linear_tau


class WithBuffer(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 3)
        self.bn = nn.BatchNorm1d(3)  # running stats (float buffers) + num_batches_tracked (long buffer)
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))


def randomised(student, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in student.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
        for b in student.buffers():
            b.copy_(torch.randint(0, 5, b.shape, generator=g).to(b.dtype))
    return student


def test_one_ema_step_equals_the_formula_and_buffers_are_copied():
    torch.manual_seed(0)
    teacher, student = WithBuffer(), WithBuffer()
    student = randomised(student, 1)
    before = {n: p.clone() for n, p in teacher.named_parameters()}
    tau = 0.9
    ema_update_(teacher, student, tau)
    for name, p in teacher.named_parameters():
        expected = tau * before[name] + (1 - tau) * dict(student.named_parameters())[name]
        torch.testing.assert_close(p, expected, rtol=1e-6, atol=1e-7)
        assert p.grad is None
    for (name, b), (_, s) in zip(teacher.named_buffers(), student.named_buffers(), strict=True):
        assert torch.equal(b, s), name


def test_ema_update_runs_without_autograd_and_rejects_bad_tau():
    teacher, student = nn.Linear(3, 3), nn.Linear(3, 3)
    ema_update_(teacher, student, 0.5)
    assert teacher.weight.grad_fn is None
    with pytest.raises(ValueError, match="tau"):
        ema_update_(teacher, student, 1.5)
    with pytest.raises(ValueError, match="different parameters"):
        ema_update_(nn.Linear(3, 3), nn.Sequential(nn.Linear(3, 3)), 0.5)


@pytest.mark.parametrize("step,expected", [
    (0, 0.999), (75_000, 0.999225), (150_000, 0.99945), (299_999, 0.9999 - 0.0009 / 300_000),
    (300_000, 0.9999), (1_000_000, 0.9999),
])
def test_linear_tau_table(step, expected):
    assert linear_tau(step, 0.999, 0.9999, 300_000) == pytest.approx(expected, abs=1e-12)


def test_linear_tau_constant_without_ramp():
    assert linear_tau(0, 0.5, 0.9998, 0) == 0.9998
    assert linear_tau(123, 0.5, 0.9998, 0) == 0.9998


@pytest.mark.parametrize("step,expected", [
    (0, 0.996), (250, 1.0 - 0.004 * (math.cos(math.pi / 4) + 1) / 2), (500, 0.998), (1000, 1.0), (2000, 1.0),
])
def test_cosine_momentum_table(step, expected):
    assert cosine_momentum(step, 1000) == pytest.approx(expected, abs=1e-12)


def text_student():
    return build_backbone(get_preset("text", "tiny", vocab_size=50, max_positions=20))


def test_teacher_is_fp32_eval_and_without_gradients():
    student = text_student()
    teacher = EMATeacher(student, scope="blocks")
    assert all(not p.requires_grad for p in teacher.parameters())
    assert all(p.dtype == torch.float32 for p in teacher.parameters())
    teacher.train()
    assert not teacher.module.training and all(not m.training for m in teacher.module.modules())
    ids = torch.randint(4, 50, (2, 8))
    out = teacher(ids)
    assert not out.requires_grad
    # dropout is off in the teacher: two calls agree, and equal the student in eval mode
    torch.testing.assert_close(out, teacher(ids))
    student.eval()
    torch.testing.assert_close(out, student(ids))


def test_teacher_follows_the_run_precision():
    """Outside autocast the teacher computes in fp32; inside a bf16 autocast region its products run in bf16 (the
    release's `ema_same_dtype`) and its output stays close to the fp32 one; its weights stay fp32 either way."""
    student = text_student()
    teacher = EMATeacher(student, scope="blocks")
    ids = torch.randint(4, 50, (2, 8))
    ref = teacher(ids)
    assert ref.dtype == torch.float32
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = teacher(ids)
    assert all(p.dtype == torch.float32 for p in teacher.parameters())
    assert not torch.equal(out.float(), ref)  # bf16 products: not bit-equal
    assert (out.float() - ref).abs().max() < 0.05 * ref.abs().max()


def test_shared_embeddings_follow_the_student_and_blocks_move_by_the_formula():
    torch.manual_seed(0)
    student = text_student()
    teacher = EMATeacher(student, scope="blocks")
    opt = torch.optim.SGD(student.parameters(), lr=0.5)
    tau = 0.8
    for _ in range(3):
        before = {n: p.clone() for n, p in teacher.module.named_parameters()}
        ids = torch.randint(4, 50, (4, 10))
        loss = student(ids).pow(2).mean() + student(ids)[:, 0].sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        teacher.update(student, tau)
        s_params = dict(student.named_parameters())
        for name, p in teacher.module.named_parameters():
            if name.startswith("encoder.blocks."):
                torch.testing.assert_close(p, tau * before[name] + (1 - tau) * s_params[name], rtol=1e-6, atol=1e-7)
            else:  # token / position embeddings, embedding LN: identical to the student's
                assert name.startswith("embed."), name
                assert torch.equal(p, s_params[name]), name
    moved = [n for n, p in teacher.module.named_parameters() if n.startswith("encoder.blocks.")
             and not torch.equal(p, dict(student.named_parameters())[n])]
    assert moved, "the averaged blocks should lag behind the student"
    assert all(p.grad is None for p in teacher.parameters())


def test_encoder_scope_averages_everything_including_embeddings():
    torch.manual_seed(0)
    student = build_backbone(get_preset("vision", "tiny"))
    teacher = EMATeacher(student, scope="encoder")
    before = {n: p.clone() for n, p in teacher.module.named_parameters()}
    with torch.no_grad():
        for p in student.parameters():
            p.add_(torch.randn_like(p))
    teacher.update(student, 0.99)
    s_params = dict(student.named_parameters())
    for name, p in teacher.module.named_parameters():
        torch.testing.assert_close(p, 0.99 * before[name] + 0.01 * s_params[name], rtol=1e-6, atol=1e-7)


def test_teacher_rejects_unknown_scope():
    with pytest.raises(ValueError, match="scope"):
        EMATeacher(nn.Linear(2, 2), scope="all")
    with pytest.raises(ValueError, match="blocks"):
        EMATeacher(nn.Linear(2, 2), scope="blocks")
