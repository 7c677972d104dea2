"""The speech encoder (audio_embedding.py, backbone.AudioTransformer): the conv length formula against an
independent count, normalisation and the encoder pieces against references written here, shapes, presets, and
padding that never leaks into a real frame."""

import math

import pytest
import torch
import torch.nn.functional as F
from reference import assert_close_scaled, gelu, layer_norm

from data2vec.audio_embedding import conv_output_lengths, frame_padding_mask, normalize_waveform
from data2vec.backbone import AudioTransformer, build_backbone
from data2vec.config import AUDIO_PRESETS, EncoderConfig, audio_preset

KERNELS, STRIDES = (10, 3, 3, 3, 3, 2, 2), (5, 2, 2, 2, 2, 2, 2)


def frames_by_counting(length: int, kernels, strides) -> int:
    """Count the frames t whose receptive field [t * hop, t * hop + width) fits in `length` samples, with hop the
    product of the strides and width 1 + sum_i (k_i - 1) prod_{j<i} s_j (a frame's span, written out)."""
    hop = math.prod(strides)
    width, jump = 1, 1
    for k, s in zip(kernels, strides, strict=True):
        width += (k - 1) * jump
        jump *= s
    t = 0
    while t * hop + width <= length:
        t += 1
    return t


def test_wav2vec2_spec_is_20ms_frames_of_25ms():
    cfg = audio_preset("base")
    assert (cfg.conv_kernels, cfg.conv_strides) == (KERNELS, STRIDES)
    assert cfg.downsampling == 320 and cfg.receptive_field == 400  # 20 ms hop, 25 ms window at 16 kHz
    assert (cfg.dim, cfg.depth, cfg.heads, cfg.conv_dim) == (768, 12, 12, 512)
    assert (cfg.pos_conv_depth, cfg.pos_conv_kernel, cfg.pos_conv_groups) == (5, max(3, 95 // 5), 16)
    assert not cfg.norm_first and not cfg.final_norm and cfg.norm_eps == 1e-5


@pytest.mark.parametrize("kernels,strides", [(KERNELS, STRIDES), ((4, 3), (2, 3)), ((7,), (1,))])
def test_conv_output_lengths_match_counting_and_real_convolutions(kernels, strides):
    gen = torch.Generator().manual_seed(0)
    lengths = torch.cat([torch.randint(1, 20_000, (40,), generator=gen), torch.tensor([399, 400, 719, 720, 721])])
    ours = conv_output_lengths(lengths, kernels, strides)
    counted = torch.tensor([frames_by_counting(int(n), kernels, strides) for n in lengths])
    assert torch.equal(ours, counted)
    for n in (400, 721, 3200, 16000):  # and the shape PyTorch's convolutions give
        h = torch.zeros(1, 1, n)
        for k, s in zip(kernels, strides, strict=True):
            h = F.conv1d(h, torch.zeros(1, 1, k), stride=s)
        assert h.shape[-1] == int(conv_output_lengths(torch.tensor([n]), kernels, strides))


def test_frame_padding_mask_marks_frames_past_each_utterance():
    lengths = torch.tensor([16000, 8000, 401])
    pad = frame_padding_mask(lengths, 49, KERNELS, STRIDES)
    expected = [frames_by_counting(int(n), KERNELS, STRIDES) for n in lengths]  # 49, 24, 1
    assert pad.dtype == torch.bool and pad.shape == (3, 49)
    assert (~pad).sum(dim=1).tolist() == expected
    for row, n in zip(pad, expected, strict=True):  # real frames first, then padding
        assert not row[:n].any() and row[n:].all()
    assert frame_padding_mask(None, 49, KERNELS, STRIDES) is None


def test_normalize_waveform_against_numpy_over_real_samples():
    gen = torch.Generator().manual_seed(1)
    wave = torch.randn(3, 1000, generator=gen) * torch.tensor([[0.1], [3.0], [1.0]]) + torch.tensor([[2.0], [0], [-1]])
    lengths = torch.tensor([1000, 640, 17])
    out = normalize_waveform(wave, lengths)
    for b, n in enumerate(lengths.tolist()):
        x = wave[b, :n].double().numpy()
        ref = (x - x.mean()) / math.sqrt(x.var() + 1e-5)  # numpy's var is the biased one
        assert_close_scaled(out[b, :n].double(), torch.from_numpy(ref))
        assert (out[b, n:] == 0).all()  # padded samples are zero
    # the statistics of one row never depend on what pads it
    alone = normalize_waveform(wave[1:2, :640])
    assert_close_scaled(out[1:2, :640], alone)
    # invariant to gain and offset (up to eps, negligible at unit-scale rows)
    assert_close_scaled(normalize_waveform(5 * wave[1:, :500] + 3), normalize_waveform(wave[1:, :500]), rel=1e-4)


def test_feature_encoder_and_positional_conv_against_written_out_references():
    torch.manual_seed(2)
    cfg = audio_preset("tiny", pos_conv_kernel=4)  # an even kernel: fairseq's SamePad drops the last frame
    model = build_backbone(cfg).eval()
    wave = torch.randn(2, 3000)
    embed = model.embed
    # feature encoder: per layer h <- GELU(LN_c(conv(h))), written with F.conv1d and the reference LN
    h = normalize_waveform(wave)[:, None, :]
    for layer in embed.feature_encoder.layers:
        h = F.conv1d(h, layer.conv.weight, stride=layer.conv.stride[0])
        h = gelu(layer_norm(h.transpose(1, 2), 1e-5, layer.layer_norm.weight, layer.layer_norm.bias)).transpose(1, 2)
    feats = layer_norm(h.transpose(1, 2), cfg.norm_eps, embed.proj_norm.weight, embed.proj_norm.bias) @ \
        embed.proj.weight.T + embed.proj.bias  # (B, T, D)
    ours, padding = embed.features(wave)
    assert padding is None
    assert_close_scaled(ours, feats)
    # positional conv: zero-pad k // 2 both sides, grouped conv, drop the extra frame, LN without affine, GELU
    p = feats.transpose(1, 2)
    for conv in embed.pos_conv.layers:
        k = conv.kernel_size[0]
        p = F.conv1d(F.pad(p, (k // 2, k // 2)), conv.weight, conv.bias, groups=cfg.pos_conv_groups)[..., :-1]
        p = gelu(layer_norm(p.transpose(1, 2))).transpose(1, 2)
    x = layer_norm(feats + p.transpose(1, 2), cfg.norm_eps, embed.norm.weight, embed.norm.bias)
    assert_close_scaled(embed.contextualize(ours), x)


def test_shapes_and_lengths():
    cfg = audio_preset("tiny")
    model = AudioTransformer(cfg).eval()
    wave = torch.randn(3, 4000)
    lengths = torch.tensor([4000, 2000, 700])
    out, layers = model(wave, lengths, return_layers="ffn")
    T = frames_by_counting(4000, KERNELS, STRIDES)
    assert out.shape == (3, T, cfg.dim) and len(layers) == cfg.depth and layers[0].shape == out.shape
    pad = model.frame_padding(lengths, T)
    assert (~pad).sum(dim=1).tolist() == [frames_by_counting(n, KERNELS, STRIDES) for n in lengths.tolist()]


@pytest.mark.parametrize("name", list(AUDIO_PRESETS))
def test_presets_build(name):
    cfg = audio_preset(name)
    assert cfg.modality == "audio" and cfg.dim % cfg.pos_conv_groups == 0
    if name == "tiny":
        assert build_backbone(cfg)(torch.randn(1, 1200)).shape == (1, 3, cfg.dim)


def test_padding_never_leaks_into_a_real_frame():
    """Every layer's output at the real frames of a short utterance is the same whether it is encoded alone or
    right-padded next to a longer one (eval mode), for the FFN outputs and the block outputs."""
    torch.manual_seed(3)
    model = build_backbone(audio_preset("tiny", pos_conv_depth=3)).eval()
    short, long = torch.randn(1, 2500), torch.randn(1, 6000)
    n = frames_by_counting(2500, KERNELS, STRIDES)
    batch = torch.cat([F.pad(short, (0, 3500), value=7.0), long])  # a non-zero pad value: must not matter
    lengths = torch.tensor([2500, 6000])
    for kind in ("ffn", "block"):
        alone_out, alone = model(short, return_layers=kind)
        batch_out, batched = model(batch, lengths, return_layers=kind)
        for a, b in zip(alone, batched, strict=True):
            assert_close_scaled(b[:1, :n], a)
        assert_close_scaled(batch_out[:1, :n], alone_out)
        # the long utterance is unchanged by sharing the batch too
        assert_close_scaled(batch_out[1:], model(long)[0:1] if kind == "ffn" else model(long))


def test_fairseq_positional_conv_leaks_padding_into_the_last_frames():
    """pos_conv_zero_pads=False (fairseq / transformers) zeroes the pads before the first layer only: with two
    or more layers the real frames next to the padding change (HF issue #25621); the default does not."""
    torch.manual_seed(4)
    leaky = build_backbone(audio_preset("tiny", pos_conv_depth=3, pos_conv_zero_pads=False)).eval()
    short, long = torch.randn(1, 2500), torch.randn(1, 6000)
    n = frames_by_counting(2500, KERNELS, STRIDES)
    batch_out = leaky(torch.cat([F.pad(short, (0, 3500)), long]), torch.tensor([2500, 6000]))
    diff = (batch_out[0, :n] - leaky(short)[0]).abs().amax(dim=-1)  # (n,) per frame
    assert diff[-1] > 1e-3  # the last real frame reads the padding
    one_layer = build_backbone(audio_preset("tiny", pos_conv_depth=1, pos_conv_zero_pads=False)).eval()
    out = one_layer(torch.cat([F.pad(short, (0, 3500)), long]), torch.tensor([2500, 6000]))
    assert_close_scaled(out[0:1, :n], one_layer(short))  # one layer after the zeroing: nothing leaks


def test_bad_input_is_named():
    model = build_backbone(audio_preset("tiny"))
    with pytest.raises(ValueError, match="lengths must lie in"):
        model(torch.randn(2, 1000), torch.tensor([1000, 0]))
    with pytest.raises(ValueError, match="shorter than one frame"):
        model(torch.randn(2, 1000), torch.tensor([1000, 300]))
    with pytest.raises(ValueError, match="waveform must be float"):
        model(torch.zeros(2, 1000, dtype=torch.long))
    with pytest.raises(ValueError, match="pos_conv_groups"):
        EncoderConfig(modality="audio", dim=64, heads=2, pos_conv_groups=5, norm_first=False)
    with pytest.raises(ValueError, match="kernels"):
        audio_preset("tiny", conv_kernels=(10, 3), conv_strides=(5,))
    assert audio_preset("tiny", conv_kernels=[4, 3], conv_strides=[2, 3]).conv_kernels == (4, 3)  # JSON lists
