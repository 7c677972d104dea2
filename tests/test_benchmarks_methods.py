"""benchmarks/methods.py at toy size: its summaries, its command lines, its work count (grouped convolutions by
hand), its per-variant timing and its profile of an update. No timing is asserted."""

from __future__ import annotations

import json

import pytest
import torch
from test_benchmarks import SPEED_PATH, load_script

METHODS_PATH = SPEED_PATH.with_name("methods.py")


@pytest.fixture(scope="module")
def methods():
    return load_script("bench_methods", METHODS_PATH)


def test_methods_summarise_and_bad_arguments(methods):
    s = methods.summarise([0.5, 0.25, 1.0], batch=8)
    assert s["median_s_per_update"] == 0.5 and s["min_s_per_update"] == 0.25
    assert s["samples_per_s"] == 16.0 and s["updates_timed"] == 3
    assert s["masked_views_per_s"] == 16.0  # one view per sample by default
    assert methods.summarise([0.5], batch=8, views_per_sample=4)["masked_views_per_s"] == 64.0  # data2vec 2.0
    # the runs come from the method registry: every pretraining method on each of its modalities
    assert ("data2vec2", "vision") in methods.RUNS and ("data2vec2", "text") in methods.RUNS
    assert ("bert", "vision") not in methods.RUNS and not any(m == "supervised" for m, _ in methods.RUNS)
    with pytest.raises(ValueError, match="--steps must exceed --skip"):
        methods.main(["--steps", "3", "--skip", "3"])


@pytest.mark.slow  # times one method in two precisions and counts its work (~15 s)
def test_methods_times_every_update_per_variant(methods, tmp_path):
    report = methods.main(["--preset", "tiny", "--batch-size", "4", "--steps", "3", "--skip", "1", "--image-size",
                           "8", "--methods", "data2vec/vision", "--variants", "fp32,bf16", "--matmul-seconds", "0.05",
                           "--out", str(tmp_path / "m.json")])
    assert set(report["machine"]["matmul_gflops"]) == {"float32@512", "bfloat16@512", "float32@1024",
                                                       "bfloat16@1024"}
    assert report["machine"]["auto_precision"] in ("fp32", "bf16")
    fp32, bf16 = report["results"]["data2vec/vision/fp32"], report["results"]["data2vec/vision/bf16"]
    assert fp32["updates_timed"] == 2 and fp32["speedup_over_fp32"] == 1.0
    assert bf16["speedup_over_fp32"] == pytest.approx(fp32["median_s_per_update"] / bf16["median_s_per_update"])
    assert fp32["gflop_per_update"] > 0 and fp32["achieved_gflops"] > 0 and fp32["peak_share"] > 0
    assert fp32["first_update_s"] > 0 and fp32["first_update_s"] not in fp32["times_s"]  # update 1 is not timed
    assert json.loads((tmp_path / "m.json").read_text())["results"].keys() == report["results"].keys()


def test_methods_counts_grouped_convolution_backward_by_hand(methods):
    """The work of a grouped convolution's backward: each gradient costs what the forward did, counted by hand."""
    from torch.utils.flop_counter import FlopCounterMode

    conv = torch.nn.Conv2d(64, 32, 3, padding=1, groups=16)  # 4 input channels per group
    x = torch.randn(8, 64, 5, 5, requires_grad=True)
    with FlopCounterMode(display=False, custom_mapping={torch.ops.aten.convolution_backward:
                                                        methods.conv_backward_flops}) as counter:
        conv(x).sum().backward()
    forward = 2 * (8 * 32 * 5 * 5) * (4 * 3 * 3)  # 2 x outputs x (inputs per group x kernel)
    counts = {str(k): v for k, v in counter.get_flop_counts()["Global"].items()}
    assert counts["aten.convolution"] == forward
    assert counts["aten.convolution_backward"] == 2 * forward  # input and weight gradients


def test_methods_command_carries_precision_and_compile(methods, tmp_path):
    args = methods.parse_args(["--methods", "data2vec2/vision"])
    cmd = methods.pretrain_command("data2vec2", "vision", args, tmp_path, "bf16+compile", None)
    assert cmd[cmd.index("--precision") + 1] == "bf16" and "--compile" in cmd
    assert ["--set", "num_masks=4"] == cmd[cmd.index("--set"):cmd.index("--set") + 2]  # the image study's recipe
    cmd = methods.pretrain_command("data2vec2", "vision", args, tmp_path, "fp32", None)
    assert cmd[cmd.index("--precision") + 1] == "fp32" and "--compile" not in cmd
    # --set reaches every run, after the study's recipe (so it can override it)
    args = methods.parse_args(["--methods", "data2vec2/vision", "--set", "dim=128", "--set", "num_masks=2"])
    cmd = methods.pretrain_command("data2vec2", "vision", args, tmp_path, "fp32", None)
    sets = [value for flag, value in zip(cmd, cmd[1:], strict=False) if flag == "--set"]
    assert sets[-2:] == ["dim=128", "num_masks=2"] and sets.index("num_masks=4") < sets.index("num_masks=2")
    with pytest.raises(ValueError, match="--variants"):
        methods.parse_args(["--variants", "fp16"])
    with pytest.raises(ValueError, match="--methods"):
        methods.parse_args(["--methods", "bert/vision"])


def test_methods_profile_subtracts_the_short_run_and_groups_ops_into_families(methods, monkeypatch, tmp_path):
    """(ops of --steps updates - ops of --skip updates) / (steps - skip), by hand, on made-up op times."""
    assert methods.op_family("aten::addmm") == methods.op_family("aten::_scaled_dot_product_flash_attention")
    assert methods.op_family("aten::addmm") == "matrix products"
    assert methods.op_family("aten::bernoulli_") == "dropout masks"
    assert methods.op_family("Optimizer:aten::addcdiv_") == methods.op_family("Optimizer.step#AdamW.step")
    assert methods.op_family("Optimizer:aten::mm") == "optimiser step"
    assert methods.op_family("aten::convolution_backward") == "convolutions"
    assert methods.op_family("aten::mul") == "other" and methods.op_family("aten::mm") != methods.op_family("aten::mul")
    runs = {5: {"aten::mm": 10.0, "aten::mul": 4.0, "aten::bernoulli_": 1.0, "set-up": 3.0},
            1: {"aten::mm": 2.0, "aten::mul": 1.0, "set-up": 3.0}}
    monkeypatch.setattr(methods, "op_seconds", lambda *a: runs[a[-1]])
    args = methods.parse_args(["--profile", "--steps", "5", "--skip", "1", "--methods", "data2vec/vision"])
    got = methods.profile_update("data2vec", "vision", args, tmp_path, None, "fp32")
    assert got["family_s"]["matrix products"] == 2.0  # (10 - 2) / 4
    assert got["family_s"]["other"] == 0.75 and got["family_s"]["dropout masks"] == 0.25  # set-up cancels
    assert got["cpu_s_per_update"] == 3.0 and sum(got["family_share"].values()) == pytest.approx(1.0)
    assert args.out.name == "methods_profile.json"
    with pytest.raises(ValueError, match="--skip >= 1"):
        methods.parse_args(["--profile", "--skip", "0"])
    with pytest.raises(ValueError, match="--device cpu"):
        methods.parse_args(["--profile", "--device", "cuda"])


@pytest.mark.slow  # two in-process runs under torch's profiler (~5 s)
def test_methods_profile_writes_each_update_family_share(methods, tmp_path):
    out = tmp_path / "p.json"
    report = methods.main(["--profile", "--preset", "tiny", "--batch-size", "4", "--steps", "3", "--skip", "1",
                           "--image-size", "8", "--methods", "data2vec/vision", "--variants", "fp32",
                           "--out", str(out)])
    row = report["results"]["data2vec/vision/fp32"]
    assert set(row["family_s"]) == {name for name, _ in methods.OP_FAMILIES} | {"other"}
    assert row["cpu_s_per_update"] == pytest.approx(sum(row["family_s"].values()))
    # the costliest ops, largest first (at this toy size their values are noise, so no op is named here)
    assert len(row["top_ops_s"]) == 12
    assert list(row["top_ops_s"].values()) == sorted(row["top_ops_s"].values(), reverse=True)
    assert json.loads(out.read_text())["results"].keys() == report["results"].keys()
