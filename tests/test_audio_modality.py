"""The speech plug-in (modalities/audio.py) and its masks (span_masks.py): seeded statistics of the span masks
against a numpy writing of fairseq's algorithm, the recipes against the released values, the teacher as the
Transformer part only, targets that padding never reaches, ALiBi and the visible-only student against written-out
references, and tiny data2vec v1 / 2.0 runs on synthetic waveforms whose loss falls."""

import math

import numpy as np
import pytest
import torch
from reference import assert_close_scaled, instance_norm

from data2vec import modalities
from data2vec.audio_embedding import alibi_bias, alibi_slopes
from data2vec.span_masks import span_time_mask
from data2vec.v1 import Data2Vec, Data2VecConfig
from data2vec.v2 import Data2Vec2, Data2Vec2Config


def tones(B, S, seed):
    """Sums of three sinusoids (100-1000 Hz at 16 kHz) plus a little noise: (B, S)."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(S) / 16000
    freqs = 100 + 900 * torch.rand(B, 3, 1, generator=g)
    return torch.sin(2 * math.pi * freqs * t).sum(1) + 0.1 * torch.randn(B, S, generator=g)


def numpy_spans(n, p, span, rng):
    """fairseq compute_mask_indices for one row (static spans, no overlap prevention), written with numpy."""
    num = max(1, int(p * n / span + rng.random()))
    min_len = span if n - span > num else n - num - 1
    starts = rng.choice(n - min_len, num, replace=False)
    idx = np.asarray([s + o for s in starts for o in range(span)])
    return np.unique(idx[idx < n])


# --------------------------------------------------------------------------------------------------
# span masks
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("p,span", [(0.65, 10), (0.5, 5)])
def test_span_masks_match_fairseq_statistics(p, span):
    """Per-row masked fraction and per-frame coverage over 2000 seeded rows vs the numpy reference."""
    T, rows = 120, 2000
    g = torch.Generator().manual_seed(0)
    ours = span_time_mask(rows, T, p, span, same_count=False, generator=g).double()  # (rows, T)
    rng = np.random.default_rng(0)
    ref = np.zeros((rows, T))
    for r in range(rows):
        ref[r, numpy_spans(T, p, span, rng)] = 1
    ours_frac, ref_frac = ours.mean(1).numpy(), ref.mean(1)
    se = math.sqrt(ours_frac.var() / rows + ref_frac.var() / rows)
    assert abs(ours_frac.mean() - ref_frac.mean()) < 4 * se
    coverage_se = np.sqrt(0.25 / rows * 2)  # binomial per frame, two samples
    assert np.abs(ours.mean(0).numpy() - ref.mean(0)).max() < 4.5 * coverage_se
    assert ours[:, T - 1].sum() == 0  # starts stop at n - L - 1: the last frame is never masked (fairseq)
    if (p, span) == (0.65, 10):
        assert 0.45 < ours_frac.mean() < 0.52  # about 49 % of the frames (overlapping spans)


def test_span_masks_are_whole_spans_and_count_spans_as_fairseq():
    g = torch.Generator().manual_seed(1)
    mask = span_time_mask(500, 100, 0.65, 10, same_count=False, generator=g)
    for row in mask:  # every maximal masked run is a union of whole spans: at least 10 frames long
        runs = np.diff(np.flatnonzero(np.diff(np.r_[0, row.int().numpy(), 0])))[::2]
        assert runs.min() >= 10
    # with span 1 the count is exactly int(p n + u): its mean is p n, its values floor and ceil
    single = span_time_mask(4000, 50, 0.31, 1, same_count=False, generator=torch.Generator().manual_seed(2))
    counts = single.sum(1).double()  # p n = 15.5
    assert set(counts.tolist()) == {15.0, 16.0} and abs(counts.mean() - 15.5) < 4 * counts.std() / math.sqrt(4000)


def test_span_masks_same_count_and_never_padding():
    g = torch.Generator().manual_seed(3)
    real = torch.tensor([80, 60, 45, 80])
    padding = torch.arange(80)[None, :] >= real[:, None]
    for _ in range(50):
        mask = span_time_mask(4, 80, 0.65, 10, padding_mask=padding, generator=g)
        assert not (mask & padding).any()
        assert len(set(mask.sum(1).tolist())) == 1  # require_same_masks: one count for every row
    free = span_time_mask(4, 80, 0.65, 10, padding_mask=padding, same_count=False, generator=g)
    assert not (free & padding).any()
    a = span_time_mask(4, 80, 0.5, 5, generator=torch.Generator().manual_seed(9))
    assert torch.equal(a, span_time_mask(4, 80, 0.5, 5, generator=torch.Generator().manual_seed(9)))  # seeded


# --------------------------------------------------------------------------------------------------
# recipes
# --------------------------------------------------------------------------------------------------


def test_recipes_are_the_released_values():
    v1 = Data2VecConfig.preset("audio", "base")
    assert (v1.mask_prob, v1.span_length, v1.top_k, v1.target) == (0.65, 10, 8, "ffn")
    assert (v1.layer_norm, v1.final_norm, v1.loss_beta, v1.loss_reduction) == ("instance", "none", 0.0, "sum")
    assert v1.loss_scale == pytest.approx(1 / math.sqrt(768))
    assert (v1.tau_start, v1.tau_end, v1.tau_ramp_steps, v1.ema_scope) == (0.999, 0.9999, 30_000, "blocks")
    assert v1.encoder.use_mask_token and not v1.encoder.alibi and v1.encoder.dim == 768
    v2 = Data2Vec2Config.preset("audio", "base")
    assert (v2.num_masks, v2.mask_ratio, v2.mask_block, v2.top_k, v2.prenet_depth) == (8, 0.5, 5, 8, 0)
    assert (v2.layer_norm, v2.final_norm, v2.loss_scale, v2.cls_loss) == ("instance", "none", None, 0.0)
    assert (v2.decoder_dim, v2.decoder_layers, v2.decoder_kernel, v2.decoder_groups) == (384, 4, 7, 16)
    assert v2.decoder_residual and v2.decoder_dropout == 0.1 and v2.mask_noise_std == 0.01
    assert (v2.tau_start, v2.tau_end, v2.tau_ramp_steps, v2.ema_scope) == (0.999, 0.99999, 75_000, "encoder")
    assert v2.encoder.alibi and not v2.encoder.use_mask_token
    for name in ("tiny", "mini", "small"):
        Data2VecConfig.preset("audio", name), Data2Vec2Config.preset("audio", name)
    with pytest.raises(ValueError, match="cls_loss"):
        Data2Vec2Config.preset("audio", "tiny", cls_loss=0.01)


# --------------------------------------------------------------------------------------------------
# data2vec v1
# --------------------------------------------------------------------------------------------------


def test_v1_loss_against_a_written_out_reference():
    torch.manual_seed(4)
    model = Data2Vec(Data2VecConfig.preset("audio", "tiny", dropout=0.0, attn_dropout=0.0)).eval()
    batch = {"waveform": tones(3, 8000, 5), "lengths": torch.tensor([8000, 6000, 5000])}
    student_input, mask = model.make_masks(batch, torch.Generator().manual_seed(6))
    with torch.no_grad():
        loss, _, _ = model.forward_loss(model.forward_student(student_input, mask, batch),
                                         model.forward_teacher(batch), mask)
        # reference: teacher FFN outputs -> instance norm over the real frames -> mean of the top K
        _, ffn = model.teacher.module(batch["waveform"], batch["lengths"], return_layers="ffn")
        T = ffn[0].shape[1]
        real = torch.tensor([24, 18, 15])  # floor((n - 400) / 320) + 1 frames
        padding = torch.arange(T)[None, :] >= real[:, None]
        y = sum(instance_norm(f, padding) for f in ffn[-model.cfg.top_k:]) / model.cfg.top_k
        pred = model.head(model.backbone(batch["waveform"], batch["lengths"], mask=mask))
        d = pred[mask] - y[mask]
        expected = (d * d).sum(dim=1).mean() / math.sqrt(model.cfg.encoder.dim)
    assert not (mask & padding).any()
    assert_close_scaled(loss, expected)


def test_v1_teacher_is_the_transformer_part_only():
    torch.manual_seed(7)
    model = Data2Vec(Data2VecConfig.preset("audio", "tiny"))
    with torch.no_grad():
        for p in model.backbone.parameters():
            p.add_(torch.randn_like(p) * 0.1)  # the student moves away from the teacher
    before = {k: v.clone() for k, v in model.teacher.module.state_dict().items()}
    student = model.backbone.state_dict()
    model.step_hook(0, 1000)
    tau = model.tau
    after = model.teacher.module.state_dict()
    for key, value in after.items():
        if ".blocks." in key:  # averaged: tau t + (1 - tau) s
            assert_close_scaled(value, tau * before[key] + (1 - tau) * student[key])
        else:  # feature encoder, projection, mask embedding, positional conv, encoder LN: the student's
            assert torch.equal(value, student[key]), key


def test_v1_targets_of_an_utterance_do_not_depend_on_its_padding():
    torch.manual_seed(8)
    model = Data2Vec(Data2VecConfig.preset("audio", "tiny"))
    short, long = tones(1, 5000, 9), tones(1, 9000, 10)
    batch = {"waveform": torch.cat([torch.nn.functional.pad(short, (0, 4000)), long]),
             "lengths": torch.tensor([5000, 9000])}
    alone = model.forward_teacher({"waveform": short})  # (1, 15, D)
    padded = model.forward_teacher(batch)  # (2, 28, D)
    assert_close_scaled(padded[:1, :alone.shape[1]], alone)
    assert (padded[0, alone.shape[1]:] == 0).all()  # padded frames: zero targets, never in the loss


# --------------------------------------------------------------------------------------------------
# data2vec 2.0: ALiBi and the visible-only student
# --------------------------------------------------------------------------------------------------


def test_alibi_slopes_and_bias_against_the_paper():
    assert_close_scaled(alibi_slopes(8), torch.tensor([2.0 ** -(i + 1) for i in range(8)]))
    twelve = [2.0 ** (-(i + 1)) for i in range(8)] + [2.0 ** (-(2 * i + 1) / 2) for i in range(4)]  # 8 + odd of 16
    assert_close_scaled(alibi_slopes(12), torch.tensor(twelve))
    positions = torch.tensor([[0, 3, 4, 9]])
    scale = torch.tensor([1.0, 0.5, -2.0])  # a negative learned scale is clamped to 0
    slopes = alibi_slopes(3)
    bias = alibi_bias(positions, slopes, scale)
    for h in range(3):
        for i in range(4):
            for j in range(4):
                want = -max(float(scale[h]), 0.0) * float(slopes[h]) * abs(int(positions[0, i]) - int(positions[0, j]))
                assert bias[0, h, i, j].item() == pytest.approx(want)


def test_visible_only_student_equals_masked_full_sequence_attention():
    """forward_visible (gather, ALiBi of the original positions) vs the full sequence where the masked frames
    are zeroed before the positional conv and hidden from attention as keys, read at the visible frames."""
    torch.manual_seed(11)
    model = Data2Vec2(Data2Vec2Config.preset("audio", "tiny", dropout=0.0, attn_dropout=0.0)).eval()
    with torch.no_grad():
        model.backbone.alibi_scale.copy_(torch.tensor([0.7, 1.3]))
    backbone = model.backbone
    batch = {"waveform": tones(2, 8000, 12), "lengths": torch.tensor([8000, 5600])}
    mask = model.make_masks(batch, torch.Generator().manual_seed(13))  # (2 * M, T)
    M = model.cfg.num_masks
    T = mask.shape[1]
    padding = (torch.arange(T)[None, :] >= torch.tensor([24, 17])[:, None]).repeat_interleave(M, dim=0)
    visible = ~mask & ~padding
    with torch.no_grad():
        out = backbone.forward_visible(batch["waveform"], batch["lengths"], visible)  # (2M, K, D)
        x, _ = backbone.embed.features(batch["waveform"], batch["lengths"])
        x = x.repeat_interleave(M, dim=0)
        h = x + backbone.embed.pos_conv(x * visible[..., None], padding)
        h = backbone.embed.norm(h)
        positions = torch.arange(T).expand(2 * M, T)
        full = backbone.encoder(h, padding_mask=~visible, attn_bias=backbone.attn_bias(positions))
    for r in range(2 * M):
        k = int(visible[r].sum())
        assert_close_scaled(out[r, :k], full[r, visible[r]])


def test_v2_masks_and_targets():
    torch.manual_seed(14)
    model = Data2Vec2(Data2Vec2Config.preset("audio", "tiny"))
    batch = {"waveform": tones(3, 8000, 15), "lengths": torch.tensor([8000, 7000, 6400])}
    mask = model.make_masks(batch, torch.Generator().manual_seed(16))
    assert mask.shape == (3 * model.cfg.num_masks, 24) and len(set(mask.sum(1).tolist())) == 1
    padding = (torch.arange(24)[None, :] >= torch.tensor([24, 21, 19])[:, None])
    assert not (mask & padding.repeat_interleave(model.cfg.num_masks, dim=0)).any()
    targets, cls_target = model.forward_teacher(batch)
    assert cls_target is None and (targets[padding] == 0).all()
    with torch.no_grad():  # reference: the teacher's FFN outputs on the student's features, instance-normed
        x, pad = model.backbone.embed.features(batch["waveform"], batch["lengths"])
        _, ffn = model.teacher.module.encode(x, pad, return_layers="ffn")
    y = sum(instance_norm(f, padding) for f in ffn[-model.cfg.top_k:]) / model.cfg.top_k
    assert_close_scaled(targets, y.masked_fill(padding[..., None], 0.0))


# --------------------------------------------------------------------------------------------------
# tiny runs
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("cls,cfg_cls", [(Data2Vec, Data2VecConfig), (Data2Vec2, Data2Vec2Config)])
def test_tiny_pretraining_on_synthetic_waveforms_lowers_the_loss(cls, cfg_cls):
    torch.manual_seed(0)
    model = cls(cfg_cls.preset("audio", "tiny", dropout=0.0, attn_dropout=0.0))
    assert model.modality is modalities.get("audio")
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    batch = {"waveform": tones(4, 12000, 1), "lengths": torch.tensor([12000, 10000, 12000, 8000])}
    losses = []
    for step in range(40):
        loss, stats = model(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        model.step_hook(step, 40)
        losses.append(float(stats["loss"]))
        assert 0 < float(stats["masked_fraction"]) < 1
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5]), losses


# --------------------------------------------------------------------------------------------------
# through the engine: health pass, SIGTERM, exact resume
# --------------------------------------------------------------------------------------------------


class Utterances(torch.utils.data.Dataset):
    """Synthetic utterances of 0.5-0.75 s, right-padded to 12000 samples: {"waveform", "lengths"}."""

    def __init__(self, n=16):
        self.waves = tones(n, 12000, 20)
        self.lengths = torch.randint(8000, 12001, (n,), generator=torch.Generator().manual_seed(21))

    def __len__(self):
        return len(self.waves)

    def __getitem__(self, i):
        n = int(self.lengths[i])
        return {"waveform": torch.nn.functional.pad(self.waves[i, :n], (0, 12000 - n)), "lengths": self.lengths[i]}


class StopsAt(Data2Vec):
    """Data2Vec that sends itself SIGTERM after update `stop` (the engine saves and stops)."""

    stop = -1

    def step_hook(self, step, total_steps):
        out = super().step_hook(step, total_steps)
        if step == self.stop:
            import os
            import signal
            os.kill(os.getpid(), signal.SIGTERM)
        return out


def test_v1_audio_through_the_engine_resumes_exactly(tmp_path):
    import json

    from data2vec.engine import PretrainConfig, pretrain

    cfg = PretrainConfig(steps=6, batch_size=4, lr=1e-3, warmup_steps=2, device="cpu", quiet=True, seed=3,
                         plots=False, save_every=3, health_every=2, health_probe_size=4)
    preset = Data2VecConfig.preset("audio", "tiny")

    def losses(folder):
        lines = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
        return [line["loss"] for line in lines], lines

    torch.manual_seed(3)
    pretrain(Data2Vec(preset), Utterances(), cfg, tmp_path / "full")
    torch.manual_seed(3)
    half = StopsAt(preset)
    half.stop = 3
    summary = pretrain(half, Utterances(), cfg, tmp_path / "half")
    assert summary["stopped_by"] == "SIGTERM" and summary["steps_done"] < 6
    torch.manual_seed(99)  # a different init: everything must come from the checkpoint
    pretrain(Data2Vec(preset), Utterances(), cfg, tmp_path / "half", resume=True)
    full, lines = losses(tmp_path / "full")
    assert losses(tmp_path / "half")[0] == full and len(full) == 6
    assert any(key.startswith("health/") for line in lines for key in line)  # the health pass read the audio
