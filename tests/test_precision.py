"""`data2vec.precision` (what --precision auto picks and why), the CLI's --precision / --bf16, and bf16 autocast in
fine-tuning. The hardware is replaced by monkeypatched flags and matrix-product rates, so every branch runs on any
machine; no speed is asserted."""

from __future__ import annotations

import argparse

import pytest
import torch

import data2vec.precision as precision
from data2vec.cli.errors import CliError
from data2vec.cli.flags import resolve_precision


def with_cpu(monkeypatch, flags, fp32=80.0, bf16=200.0):
    monkeypatch.setattr(precision, "cpu_flags", lambda: flags)
    rates = {torch.float32: fp32, torch.bfloat16: bf16}
    monkeypatch.setattr(precision, "matmul_gflops", lambda dtype, **_: rates[dtype])


@pytest.mark.parametrize("flags", [{"avx512f", "avx512_bf16"}, {"amx_bf16", "avx2"}])
def test_auto_picks_bf16_on_a_cpu_with_bf16_units(monkeypatch, flags):
    with_cpu(monkeypatch, flags)
    choice = precision.choose_precision("auto", "cpu")
    assert choice.bf16 and "bf16" in choice.reason


def test_auto_keeps_fp32_without_bf16_units_and_bf16_warns_with_the_measured_slowdown(monkeypatch):
    with_cpu(monkeypatch, {"avx2", "fma"}, fp32=84.0, bf16=1.2)
    assert precision.choose_precision("auto", "cpu").name == "fp32"
    asked = precision.choose_precision("bf16", "cpu")
    assert asked.bf16 and "WARNING" in asked.reason and "70x slower" in asked.reason  # 84 / 1.2


def test_unreadable_flags_are_decided_by_a_measurement(monkeypatch):
    with_cpu(monkeypatch, None, fp32=80.0, bf16=200.0)
    assert precision.choose_precision("auto", "cpu").name == "bf16"
    with_cpu(monkeypatch, None, fp32=80.0, bf16=90.0)
    assert precision.choose_precision("auto", "cpu").name == "fp32"


def test_fp32_is_always_fp32_and_a_bad_name_is_refused(monkeypatch):
    with_cpu(monkeypatch, {"avx512_bf16"})
    assert precision.choose_precision("fp32", "cpu").name == "fp32"
    with pytest.raises(ValueError, match="--precision"):
        precision.choose_precision("fp16", "cpu")


def test_bf16_units_read_from_flags():
    assert precision.cpu_bf16_units({"avx512_bf16", "amx_bf16", "avx2"}) == ["avx512_bf16", "amx_bf16"]
    assert precision.cpu_bf16_units(set()) == []


def test_matmul_rate_is_a_positive_measurement():
    assert precision.matmul_gflops(torch.float32, n=64, min_seconds=0.01) > 0


def test_the_autocast_context_follows_the_choice():
    x = torch.randn(4, 4)
    with precision.Precision("bf16", "test").autocast("cpu"):
        assert (x @ x).dtype == torch.bfloat16
    with precision.Precision("fp32", "test").autocast("cpu"):
        assert (x @ x).dtype == torch.float32


def test_resolve_precision_flags(monkeypatch, capsys):
    with_cpu(monkeypatch, {"avx2"})
    args = argparse.Namespace(precision="auto", bf16=False)
    assert resolve_precision(args, "cpu").name == "fp32"
    assert "precision: fp32" in capsys.readouterr().out  # the choice is printed
    assert resolve_precision(argparse.Namespace(precision="auto", bf16=True), "cpu", quiet=True).bf16
    with pytest.raises(CliError, match="contradict"):
        resolve_precision(argparse.Namespace(precision="fp32", bf16=True), "cpu")
    # a resumed run keeps the precision it started with under auto, whatever this machine would pick
    assert resolve_precision(args, "cpu", quiet=True, resumed=True).bf16
    assert resolve_precision(argparse.Namespace(precision="fp32", bf16=False), "cpu", quiet=True,
                             resumed=True).name == "fp32"


def test_finetune_in_bf16_trains_and_reports_float_scores(tmp_path):
    from torch.utils.data import TensorDataset

    from data2vec import build_backbone
    from data2vec.config import get_preset
    from data2vec.finetune import finetune
    from data2vec.finetune_config import FinetuneConfig
    from data2vec.heads import ImageClassificationHead, TaskModel

    class Blobs(TensorDataset):
        def __getitem__(self, i):
            x, y = super().__getitem__(i)
            return {"images": x, "labels": y}

    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 2, (64,), generator=g)
    images = torch.randn(64, 1, 8, 8, generator=g) * 0.3 + (2 * labels.float() - 1).view(-1, 1, 1, 1)
    torch.manual_seed(0)
    cfg_enc = get_preset("vision", "tiny", image_size=8, patch_size=4, in_chans=1, depth=2)
    model = TaskModel(build_backbone(cfg_enc), ImageClassificationHead(cfg_enc.dim, 2))
    cfg = FinetuneConfig.vision_defaults(epochs=3, batch_size=16, lr=3e-3, layer_decay=None, log_every=0, bf16=True)
    summary = finetune(model, Blobs(images, labels), Blobs(images, labels), cfg, tmp_path,
                       lambda out, y: {"accuracy": 100.0 * float((out.argmax(-1) == y).mean())}, quiet=True)
    assert summary["best"]["accuracy"] > 80.0  # separable blobs: bf16 autocast still learns them
    assert all(p.dtype == torch.float32 for p in model.parameters())  # the weights stay float32
