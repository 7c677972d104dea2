"""The pretraining loop on a tiny method defined here (a linear student, an EMA teacher, random masks).

Checks: optimiser groups, per-step metrics, plots, resume equality, SIGTERM, non-finite handling.
"""

import copy
import json
import math
import os
import signal
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from data2vec.backbone import build_backbone
from data2vec.checkpoint import load_checkpoint
from data2vec.config import get_preset
from data2vec.engine import PretrainConfig, TrainingAborted, pretrain
from data2vec.optim import build_optimizer, param_groups


@dataclass
class TinyConfig:
    dim: int = 6
    tau: float = 0.9


class TinyMethod(nn.Module):
    """Student Linear -> head; target = EMA teacher(x) summed; 30% of inputs masked with the global RNG."""

    def __init__(self, cfg: TinyConfig | None = None, nan_at: set | None = None, sigterm_at: int | None = None):
        super().__init__()
        self.cfg = cfg = cfg if cfg is not None else TinyConfig()
        self.backbone = nn.Linear(cfg.dim, cfg.dim)
        self.head = nn.Linear(cfg.dim, 1)
        self.teacher = copy.deepcopy(self.backbone).requires_grad_(False)
        self.nan_at, self.sigterm_at, self.calls = nan_at or set(), sigterm_at, 0

    def forward(self, batch):
        self.calls += 1
        x = batch["x"]  # (B, D)
        mask = torch.rand(x.shape) < 0.3  # True = masked
        with torch.no_grad():
            target = self.teacher(x).sum(-1, keepdim=True) + batch["y"]  # (B, 1)
        pred = self.head(torch.relu(self.backbone(x.masked_fill(mask, 0.0))))  # (B, 1)
        loss = (pred - target).square().mean()
        if self.calls in self.nan_at:
            loss = loss * float("nan")
        if self.sigterm_at is not None and self.calls == self.sigterm_at:
            os.kill(os.getpid(), signal.SIGTERM)
        return loss, {"loss": loss.item(), "target_std": target.std().item(), "pred_std": pred.std().item()}

    @torch.no_grad()
    def step_hook(self, step, total_steps):
        for t, s in zip(self.teacher.parameters(), self.backbone.parameters(), strict=True):
            t.mul_(self.cfg.tau).add_(s, alpha=1 - self.cfg.tau)  # teacher = tau teacher + (1 - tau) student
        return {"tau": self.cfg.tau}


class NoisyData(torch.utils.data.Dataset):
    """Fixed inputs plus a random 'augmentation' drawn from the global RNG in __getitem__."""

    def __init__(self, n=40, dim=6):
        g = torch.Generator().manual_seed(0)
        self.x, self.y = torch.randn(n, dim, generator=g), torch.randn(n, 1, generator=g)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"x": self.x[i] + 0.05 * torch.randn(self.x.shape[1]), "y": self.y[i]}


def small_cfg(**kw):
    base = dict(steps=8, batch_size=4, lr=1e-2, warmup_steps=2, device="cpu", quiet=True, seed=3, plots=False)
    base.update(kw)
    return PretrainConfig(**base)


def losses(out_dir):
    return [json.loads(line)["loss"] for line in (out_dir / "metrics.jsonl").read_text().splitlines()]


def run(tmp_path, name, cfg, resume=False, **method_kw):
    torch.manual_seed(cfg.seed)
    method = TinyMethod(**method_kw)
    return method, pretrain(method, NoisyData(), cfg, tmp_path / name, resume=resume)


# ---- optimiser groups --------------------------------------------------------------------------
def test_param_groups_no_decay_on_1d_tokens_positions():
    model = build_backbone(get_preset("vision", "tiny", use_mask_token=True))
    names = {id(p): n for n, p in model.named_parameters()}
    groups = param_groups(model, 0.05)
    no_decay = {names[id(p)] for g in groups if g["weight_decay"] == 0.0 for p in g["params"]}
    decay = {names[id(p)] for g in groups if g["weight_decay"] == 0.05 for p in g["params"]}
    # independent rule: 1-D tensors, cls/mask tokens and the relative position table are not decayed
    expected_no_decay = {n for n, p in model.named_parameters() if p.ndim <= 1 or n in
                         ("embed.cls_token", "embed.mask_token", "rel_pos.table")}
    assert no_decay == expected_no_decay
    assert decay == {n for n, _ in model.named_parameters()} - expected_no_decay
    assert "encoder.blocks.0.attn.qkv.weight" in decay and "embed.proj.weight" in decay
    text = build_backbone(get_preset("text", "tiny"))
    tnames = {id(p): n for n, p in text.named_parameters()}
    text_no_decay = {tnames[id(p)] for g in param_groups(text, 0.01) if g["weight_decay"] == 0 for p in g["params"]}
    assert "embed.positions.weight" in text_no_decay and "embed.tokens.weight" not in text_no_decay


def test_layer_decay_scales():
    model = build_backbone(get_preset("vision", "tiny", use_mask_token=True))  # depth 2
    head = nn.Linear(64, 3)
    wrapper = nn.ModuleDict({"backbone": model, "head": head})
    groups = param_groups(wrapper, 0.05, layer_decay=0.5, base_lr=1.0)
    scale = {}
    for g in groups:
        for p in g["params"]:
            scale[id(p)] = g["lr_scale"]
            assert g["lr"] == pytest.approx(g["lr_scale"])
    named = dict(wrapper.named_parameters())
    # depth 2: embeddings 0.5^3, block 0 0.5^2, block 1 0.5^1, head and shared relative bias 1
    assert scale[id(named["backbone.embed.proj.weight"])] == pytest.approx(0.125)
    assert scale[id(named["backbone.embed.cls_token"])] == pytest.approx(0.125)
    assert scale[id(named["backbone.encoder.blocks.0.ffn.fc1.weight"])] == pytest.approx(0.25)
    assert scale[id(named["backbone.encoder.blocks.1.norm1.bias"])] == pytest.approx(0.5)
    assert scale[id(named["head.weight"])] == pytest.approx(1.0)
    assert scale[id(named["backbone.rel_pos.table"])] == pytest.approx(1.0)


def test_build_optimizer_skips_frozen_teacher():
    method = TinyMethod()
    opt = build_optimizer(method, lr=1e-3, weight_decay=0.01)
    in_opt = {id(p) for g in opt.param_groups for p in g["params"]}
    assert all(id(p) not in in_opt for p in method.teacher.parameters())
    assert all(id(p) in in_opt for p in method.backbone.parameters())
    assert opt.defaults["betas"] == (0.9, 0.98) and opt.defaults["eps"] == 1e-6


# ---- the loop ------------------------------------------------------------------------------------
def test_metrics_config_plots_summary(tmp_path):
    cfg = small_cfg(plots=True, save_every=4)
    method, summary = run(tmp_path, "run", cfg)
    out = tmp_path / "run"
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, 9))
    for key in ("loss", "lr", "tau", "target_std", "pred_std", "throughput", "grad_norm", "nonfinite_skipped"):
        assert all(math.isfinite(r[key]) for r in records), key
    assert records[0]["lr"] == pytest.approx(0.005) and records[1]["lr"] == pytest.approx(0.01)
    assert records[-1]["loss"] < records[0]["loss"]
    config = json.loads((out / "config.json").read_text())
    assert config["pretrain"]["steps"] == 8 and config["method_config"] == {"dim": 6, "tau": 0.9}
    for name in ("loss", "lr", "tau", "std"):
        assert (out / "plots" / f"{name}.png").stat().st_size > 1000
    assert summary["steps_done"] == 8 and summary["nonfinite_skipped"] == 0
    # the saved checkpoint holds the final weights, including the EMA teacher
    fresh = TinyMethod()
    assert load_checkpoint(out / "checkpoint", model=fresh)["step"] == 8
    assert torch.equal(fresh.teacher.weight, method.teacher.weight)


def test_resume_gives_identical_losses(tmp_path):
    _, _ = run(tmp_path, "full", small_cfg())
    run(tmp_path, "half", small_cfg(steps=8, save_every=4), sigterm_at=5)  # stops after update 5
    assert len(losses(tmp_path / "half")) == 5
    # resume with a fresh model built from a different seed: everything must come from the checkpoint
    torch.manual_seed(1234)
    pretrain(TinyMethod(), NoisyData(), small_cfg(), tmp_path / "half", resume=True)
    assert losses(tmp_path / "half") == losses(tmp_path / "full")  # exact equality on CPU
    # resuming a finished run does nothing and still reports the last update
    summary = pretrain(TinyMethod(), NoisyData(), small_cfg(), tmp_path / "half", resume=True)
    assert losses(tmp_path / "half") == losses(tmp_path / "full")
    assert summary["steps_done"] == 8 and summary["final_loss"] == losses(tmp_path / "full")[-1]


def test_sigterm_saves_a_loadable_checkpoint(tmp_path):
    _, summary = run(tmp_path, "run", small_cfg(), sigterm_at=3)
    assert summary["stopped_by"] == "SIGTERM" and summary["steps_done"] == 3
    info = load_checkpoint(tmp_path / "run" / "checkpoint", model=TinyMethod())
    assert info["step"] == 3 and info["extra"]["reason"] == "signal"
    assert info["extra"]["data_position"] == {"epoch": 0, "index_in_epoch": 12}


def test_fresh_run_refuses_existing_run_folder(tmp_path):
    run(tmp_path, "run", small_cfg(steps=3, warmup_steps=1))
    with pytest.raises(ValueError, match="already holds a run.*--resume"):
        run(tmp_path, "run", small_cfg(steps=3, warmup_steps=1))
    with pytest.raises(ValueError, match="different configuration.*lr"):
        run(tmp_path, "run", small_cfg(steps=4, warmup_steps=1, lr=0.5), resume=True)


def test_nonfinite_loss_is_skipped_then_stops(tmp_path):
    method, summary = run(tmp_path, "skip", small_cfg(), nan_at={2, 3})
    records = [json.loads(line) for line in (tmp_path / "skip" / "metrics.jsonl").read_text().splitlines()]
    assert [r["loss"] is None for r in records[:4]] == [False, True, True, False]
    assert summary["nonfinite_skipped"] == 2 and all(torch.isfinite(p).all() for p in method.parameters())
    with pytest.raises(TrainingAborted, match=r"non-finite.*3 updates in a row.*lower --lr"):
        run(tmp_path, "stop", small_cfg(max_nonfinite=3), nan_at={2, 3, 4})
    assert load_checkpoint(tmp_path / "stop" / "checkpoint", model=TinyMethod())["step"] == 4


def test_bad_settings_are_explained(tmp_path):
    with pytest.raises(ValueError, match="warm-up steps do not fit"):
        small_cfg(steps=4, warmup_steps=4).validate()
    with pytest.raises(ValueError, match="fewer than one global batch"):
        run(tmp_path, "big", small_cfg(batch_size=64))


def test_bf16_autocast_runs(tmp_path):
    _, summary = run(tmp_path, "bf16", small_cfg(steps=3, warmup_steps=1, bf16=True))
    assert math.isfinite(summary["final_loss"])


# ---- representation health (the pass itself: tests/test_health.py) -----------------------------------------


def test_health_is_off_with_a_notice_for_batches_it_cannot_read(tmp_path, capsys):
    cfg = small_cfg(quiet=False, health_every=2)  # TinyMethod's batches are {"x", "y"}: no tokens or images
    pretrain(TinyMethod(), NoisyData(), cfg, tmp_path / "run")
    assert "representation health off" in capsys.readouterr().out
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 8 and not any("health/" in line for line in lines)


def test_bad_health_settings_are_explained():
    for fields, name in (({"health_every": -1}, "health_every"), ({"health_max_anisotropy": 1.5}, "anisotropy"),
                         ({"health_min_effective_rank": -0.1}, "effective_rank"),
                         ({"health_probe_size": 1}, "health_probe_size"), ({"health_patience": 0}, "patience")):
        with pytest.raises(ValueError, match=name):
            small_cfg(**fields).validate()
    assert small_cfg(steps=100, warmup_steps=10).resolved_health_warmup == 50  # default: 5x the lr warm-up
    assert small_cfg(health_warmup_steps=0).resolved_health_warmup == 0


def test_preserved_rng_restores_every_generator():
    import random

    import numpy as np

    from data2vec.checkpoint import preserved_rng

    torch.manual_seed(0), np.random.seed(0), random.seed(0)
    expected = (torch.rand(3), np.random.rand(3), random.random())
    torch.manual_seed(0), np.random.seed(0), random.seed(0)
    with preserved_rng():
        torch.rand(100), np.random.rand(100), random.random()  # draws that must not count
    got = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(got[0], expected[0]) and np.array_equal(got[1], expected[1]) and got[2] == expected[2]


@pytest.mark.parametrize("method_name", ["data2vec", "data2vec2"])
def test_compile_encoders_compiles_every_block_of_student_and_teacher_and_nothing_else(method_name):
    """Regional compilation: each Transformer block of both encoders gets its compiled call, the embeddings and
    heads stay eager, and the state-dict keys (what checkpoints hold) do not change. Nothing is run here: the
    compiled path itself runs in tests/test_smoke_compile.py."""
    from data2vec.engine.setup import compile_encoders
    from data2vec.transformer import Block
    from data2vec.v1 import Data2Vec, Data2VecConfig
    from data2vec.v2 import Data2Vec2, Data2Vec2Config

    method = Data2Vec(Data2VecConfig.preset("text", "tiny")) if method_name == "data2vec" else \
        Data2Vec2(Data2Vec2Config.preset("vision", "tiny"))
    keys = list(method.state_dict())
    compile_encoders(method)
    compiled = {name for name, m in method.named_modules() if getattr(m, "_compiled_call_impl", None) is not None}
    blocks = {name for name, m in method.named_modules() if isinstance(m, Block)}
    depth = method.backbone.encoder.cfg.depth
    assert compiled == blocks and len(blocks) == 2 * depth  # the student's and the teacher's blocks
    assert {n.split(".")[0] for n in blocks} == {"backbone", "teacher"}
    assert list(method.state_dict()) == keys
