"""The engine's representation-health pass (data2vec/engine/health.py `health_pass`, data2vec/diagnostics.py):
health/* keys in metrics.jsonl and plots/health.png from real tiny runs, losses unchanged bit for bit with
the pass on, the same probe statistics after a resume, the online k-NN on labelled images, the pass kept eager under
`--compile`, and the guard stopping layer-norm text targets (measured statistics and a real tiny run) but not
instance-norm ones."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from word_corpus import write_word_corpus

from data2vec.cli import main
from data2vec.diagnostics import (
    CollapseError,
    backbone_features,
    effective_rank,
    health_statistics,
    mean_pooled,
    token_anisotropy,
)
from data2vec.engine import PretrainConfig
from data2vec.engine.health import health_guard

WORDS = ("the cat sat on a mat while dogs ran over hills and birds sang in green trees near old rivers under a "
         "bright sky as children played with kites").split()
HEALTH_KEYS = ("health/anisotropy", "health/effective_rank", "health/rank_fraction", "health/pooled_effective_rank",
               "health/feature_std", "health/seconds")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_word_corpus(tmp_path_factory.mktemp("data") / "corpus.txt", documents=60, words=WORDS)


def text_args(corpus, out, steps, *extra, plots=False):
    return ["pretrain", "--method", "data2vec", "--modality", "text", "--preset", "tiny", "--data", str(corpus),
            "--steps", str(steps), "--batch-size", "4", "--seq-len", "32", "--seed", "2", "--out", str(out),
            "--device", "cpu", "--quiet", *([] if plots else ["--no-plots"]), *extra]


def vision_args(method, out, steps, *extra, plots=False):
    return ["pretrain", "--method", method, "--modality", "vision", "--preset", "tiny", "--data", "digits",
            "--steps", str(steps), "--batch-size", "4", "--warmup-steps", "1", "--seed", "2", "--out", str(out),
            "--device", "cpu", "--quiet", *([] if plots else ["--no-plots"]), *extra]


def records(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def health_values(recs):
    """step -> the health/* values of that record, without the pass's duration."""
    return {r["step"]: {k: v for k, v in r.items() if k.startswith("health/") and k != "health/seconds"}
            for r in recs if "health/anisotropy" in r}


# ---- the pass in real runs ---------------------------------------------------------------------------------


def test_text_run_logs_health_on_its_schedule_and_plots_it(corpus, tmp_path):
    out = tmp_path / "run"
    assert main(text_args(corpus, out, 5, "--health-every", "2", "--health-probe-size", "8", plots=True)) == 0
    recs = records(out)
    on = [r["step"] for r in recs if "health/anisotropy" in r]
    assert on == [1, 2, 4, 5]  # after update 1, every 2, after the last
    for r in recs:
        assert all(k in r for k in HEALTH_KEYS) == (r["step"] in on)
        assert "health/knn_acc" not in r  # text: no labels
    first = recs[0]
    assert -0.1 < first["health/anisotropy"] < 1 and 1 <= first["health/effective_rank"] <= 64
    assert first["health/rank_fraction"] == pytest.approx(first["health/effective_rank"] / 64)  # tiny: D = 64
    assert (out / "plots" / "health.png").is_file() and (out / "plots" / "loss.png").is_file()


@pytest.mark.parametrize("method", ["data2vec", "dino"])  # dino: multi-crop batches, the first global crop
def test_vision_run_logs_an_online_knn_accuracy(method, tmp_path):
    out = tmp_path / method
    assert main(vision_args(method, out, 2, "--health-every", "1", "--health-knn", "40", plots=True)) == 0
    recs = records(out)
    assert all(k in r for r in recs for k in (*HEALTH_KEYS, "health/knn_acc"))
    accuracies = [r["health/knn_acc"] for r in recs]
    assert all(0 <= a <= 100 for a in accuracies)
    assert all(round(a * 10 / 100) == a * 10 / 100 for a in accuracies)  # 10 queries: multiples of 10%
    assert (out / "plots" / "health.png").is_file()


@pytest.mark.slow  # four tiny CLI runs (~6 s)
def test_the_health_pass_leaves_the_losses_unchanged_bit_for_bit(corpus, tmp_path):
    for name, make in (("text", lambda out, *x: text_args(corpus, out, 6, *x)),
                       ("dino", lambda out, *x: vision_args("dino", out, 4, *x))):
        assert main(make(tmp_path / f"{name}_on", "--health-every", "1", "--health-knn", "40")) == 0
        assert main(make(tmp_path / f"{name}_off", "--health-every", "0")) == 0
        on, off = records(tmp_path / f"{name}_on"), records(tmp_path / f"{name}_off")
        assert [r["loss"] for r in on] == [r["loss"] for r in off]  # exact equality on CPU
        assert [r["grad_norm"] for r in on] == [r["grad_norm"] for r in off]
        assert all("health/anisotropy" in r for r in on) and not any("health/anisotropy" in r for r in off)


@pytest.mark.slow  # three tiny CLI runs (~4 s)
def test_a_resumed_run_uses_the_same_probe_batch(corpus, tmp_path, monkeypatch):
    import data2vec.engine.loop as engine

    extra = ("--health-every", "2", "--save-every", "3")
    assert main(text_args(corpus, tmp_path / "full", 6, *extra)) == 0
    original = engine.maybe_save

    def save_then_crash(run, step):  # the run dies right after its periodic checkpoint of update 3
        original(run, step)
        if step + 1 == 3:
            raise RuntimeError("killed")

    monkeypatch.setattr(engine, "maybe_save", save_then_crash)
    cut = tmp_path / "cut"
    with pytest.raises(RuntimeError, match="killed"):
        main(text_args(corpus, cut, 6, *extra))
    monkeypatch.setattr(engine, "maybe_save", original)
    assert main(text_args(corpus, cut, 6, *extra, "--resume")) == 0
    assert [r["loss"] for r in records(cut)] == [r["loss"] for r in records(tmp_path / "full")]
    full, resumed = health_values(records(tmp_path / "full")), health_values(records(cut))
    assert sorted(resumed) == [1, 2, 4, 6] and full == resumed  # 4 and 6 computed after the resume


def test_health_flags_are_checked(corpus, tmp_path, capsys):
    for flag, value in (("--health-max-anisotropy", "1.5"), ("--health-every", "-1"), ("--health-probe-size", "1")):
        assert main(text_args(corpus, tmp_path / "bad", 2, flag, value)) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and flag in err[0]


# ---- what the pass computes ---------------------------------------------------------------------------------


def test_mean_pooled_averages_the_real_tokens_only():
    x = torch.randn(3, 5, 4, dtype=torch.float64)
    pad = torch.tensor([[False] * 5, [False, False, True, True, True], [False, True, True, True, True]])
    expected = torch.stack([x[b, [t for t in range(5) if not pad[b, t]]].mean(0) for b in range(3)])  # a loop
    assert torch.allclose(mean_pooled(x, pad), expected)
    assert torch.allclose(mean_pooled(x), x.mean(1))


def test_backbone_features_read_text_images_and_crops():
    calls = []

    def text_backbone(ids, padding_mask):
        calls.append(("text", ids.shape, padding_mask))
        return torch.ones(*ids.shape, 3)

    ids, pad = torch.zeros(2, 4, dtype=torch.long), torch.zeros(2, 4, dtype=torch.bool)
    tokens, mask = backbone_features(text_backbone, {"input_ids": ids, "padding_mask": pad})
    assert tokens.shape == (2, 4, 3) and mask is pad

    def vision_backbone(images):
        calls.append(("vision", images))
        cls = torch.full((images.shape[0], 1, 3), 7.0)
        return torch.cat([cls, torch.zeros(images.shape[0], 4, 3)], dim=1)  # (B, 1 + N, D), CLS first

    first, second = torch.randn(2, 1, 8, 8), torch.randn(2, 1, 8, 8)
    tokens, mask = backbone_features(vision_backbone, {"crops": [first, second, torch.randn(2, 1, 4, 4)]})
    assert tokens.shape == (2, 4, 3) and (tokens == 0).all() and mask is None  # CLS (7) dropped
    assert calls[-1][1] is first  # DINO: the first global crop
    tokens, _ = backbone_features(vision_backbone, {"images": second})
    assert calls[-1][1] is second and tokens.shape == (2, 4, 3)
    with pytest.raises(ValueError, match="'input_ids', 'images', 'crops' or 'waveform'"):
        backbone_features(vision_backbone, {"x": second})


def test_health_statistics_are_those_of_the_real_tokens():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 6, 8, generator=g, dtype=torch.float64) + 1.0
    pad = torch.zeros(4, 6, dtype=torch.bool)
    pad[1, 3:] = True
    x[pad] = 1e3  # padding must not count
    rows = np.array([x[b, t].numpy() for b in range(4) for t in range(6) if not pad[b, t]])
    stats = health_statistics(x, pad)
    s = np.linalg.svd(rows, compute_uv=False)
    p = s / s.sum() + 1e-7
    assert stats["effective_rank"] == pytest.approx(float(np.exp(-(p * np.log(p)).sum())))
    assert stats["rank_fraction"] == pytest.approx(stats["effective_rank"] / 8)  # min(N = 21, D = 8)
    assert stats["anisotropy"] == pytest.approx(token_anisotropy(torch.from_numpy(rows)))
    assert stats["pooled_effective_rank"] == pytest.approx(effective_rank(mean_pooled(x, pad)))
    assert stats["feature_std"] == pytest.approx(float(np.sqrt(rows.var(axis=0) + 1e-6).mean()), rel=1e-5)


# ---- the guard's defaults on measured statistics -----------------------------------------------------------

# Measured (docs/health.md): data2vec text, 300 updates, batch 16, seq-len 64, lr warm-up 30, health every 10:
# the mean cosine of the probe tokens after updates 1, 10, 20, ..., 300 (rounded), instance-norm targets (the
# default) and layer-norm targets (--set layer_norm=layer), for the tiny and the mini preset.
MEASURED = {
    ("tiny", "instance"): [0.33, 0.34, 0.43, 0.71, 0.89, 0.91, 0.81, 0.61, 0.46, 0.4, 0.39, 0.34, 0.3, 0.27, 0.25, 0.24,
                           0.21, 0.2, 0.19, 0.18, 0.17, 0.17, 0.16, 0.16, 0.15, 0.15, 0.15, 0.15, 0.15, 0.15, 0.15],
    ("tiny", "layer"): [0.33, 0.34, 0.43, 0.71, 0.93, 0.98, 0.98, 0.99, 0.98, 0.98, 0.98, 0.98, 0.98, 0.98, 0.98, 0.98]
    + [0.97] * 15,
    ("mini", "instance"): [0.37, 0.6, 0.98, 0.99, 0.77, 0.77, 0.65, 0.58, 0.52, 0.44, 0.4, 0.39, 0.34, 0.34, 0.3, 0.29,
                           0.27, 0.26, 0.23, 0.22, 0.21, 0.2, 0.19, 0.18, 0.18, 0.16, 0.15, 0.15, 0.15, 0.14, 0.14],
    ("mini", "layer"): [0.37, 0.6, 0.99, 1.0, 0.99, 0.94, 0.94, 0.94, 0.91, 0.9, 0.87, 0.86, 0.83, 0.82, 0.79, 0.77,
                        0.76, 0.75, 0.73, 0.72, 0.7, 0.7, 0.7, 0.68, 0.69, 0.67, 0.68, 0.67, 0.67, 0.67, 0.67],
}


def feed(guard, curve, every):
    """The measured curve's values at the health steps of `every` (after update 1, every N, after 300)."""
    for i, value in enumerate(curve):
        step = 1 if i == 0 else i * 10
        if step == 1 or step % every == 0 or step == 300:
            guard.check(step, {"anisotropy": value, "rank_fraction": 0.5})


@pytest.mark.parametrize("preset", ["tiny", "mini"])
@pytest.mark.parametrize("every", [10, 50, 100])
def test_the_default_guard_flags_layer_norm_text_targets_but_not_instance_norm(preset, every):
    cfg = PretrainConfig(steps=300, warmup_steps=30, health_every=every)
    feed(health_guard(cfg, "data2vec"), MEASURED[preset, "instance"], every)  # the lr-peak transient passes
    with pytest.raises(CollapseError) as error:
        feed(health_guard(cfg, "data2vec"), MEASURED[preset, "layer"], every)
    message = str(error.value)
    assert "anisotropy=0." in message and f"(max {cfg.health_max_anisotropy:g})" in message
    assert "layer_norm=instance" in message and "--health-max-anisotropy" in message


def test_the_guard_would_stop_the_instance_transient_without_its_warm_up():
    """The warm-up is what lets a healthy run through: counted from update 0 the transient would stop it."""
    cfg = PretrainConfig(steps=300, warmup_steps=30, health_every=10, health_warmup_steps=0)
    with pytest.raises(CollapseError, match="collapsed at update 30"):
        feed(health_guard(cfg, "data2vec"), MEASURED["mini", "instance"], 10)


@pytest.mark.slow  # two tiny CLI runs of 150 updates (~12 s)
def test_a_real_layer_norm_text_run_is_stopped_and_an_instance_norm_run_is_not(corpus, tmp_path, capsys):
    extra = ("--batch-size", "8", "--health-every", "10")  # a later flag overrides text_args' batch size
    assert main(text_args(corpus, tmp_path / "instance", 150, *extra)) == 0
    healthy = health_values(records(tmp_path / "instance"))
    assert sorted(healthy)[-1] == 150 and max(v["health/anisotropy"] for s, v in healthy.items() if s >= 80) < 0.6
    layer = text_args(corpus, tmp_path / "layer", 150, *extra, "--set", "layer_norm=layer")
    capsys.readouterr()
    assert main(layer) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "anisotropy=0.9" in err[0] and "(max 0.6)" in err[0] and "layer_norm=instance" in err[0]
    recs = records(tmp_path / "layer")
    assert recs[-1]["step"] < 150 and recs[-1]["health/anisotropy"] > 0.6  # stopped on a health step
    assert f"checkpoint of update {recs[-1]['step']} saved" in err[0]
    assert (tmp_path / "layer" / "checkpoint" / "model.safetensors").is_file()


def test_the_anisotropy_threshold_is_for_text_probes_only():
    """A random data2vec 2.0 ViT measures 0.74 on digits: an image run is never stopped on anisotropy."""
    cfg = PretrainConfig(steps=300, warmup_steps=30, health_every=10)
    vision = health_guard(cfg, "data2vec2", text=False)
    for step in range(150, 300, 10):
        vision.check(step, {"anisotropy": 0.74, "rank_fraction": 0.5})
    assert vision.steps_below == 0


@pytest.mark.slow  # dynamo traces the tiny blocks (with an eager backend: no kernels are built)
def test_under_compile_the_health_pass_runs_eager(corpus, tmp_path, monkeypatch):
    """The pass feeds a probe batch of another size in eval mode: compiled, it would add graphs (one with a
    dynamic batch dimension, which the teacher's calls could then pick up). Only training's two graphs are traced:
    the student's with gradients and the teacher's without."""
    import functools

    import data2vec.engine.setup as setup

    graphs = []

    def counting_backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    monkeypatch.setattr(setup, "compile_blocks", functools.partial(setup.compile_blocks, backend=counting_backend))
    torch._dynamo.reset()
    out = tmp_path / "run"
    flags = ("--health-every", "1", "--warmup-steps", "0", "--compile", "--precision", "fp32")
    assert main(text_args(corpus, out, 1, *flags)) == 0
    torch._dynamo.reset()  # the traced graphs leave this worker with the test
    assert sorted(health_values(records(out))) == [1]
    assert len(graphs) == 2
