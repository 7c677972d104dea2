"""data2vec 2.0's configuration and the conv decoders it configures (docs/design.md section 5; issue 13 item 5):
the released recipes, the reduced presets, the errors that name a bad field, and the decoders
(data2vec/decoders.py) against references with their parameter counts at the base shapes. Split from test_v2.py
(the student, the teacher, the loss, training).

Independent references written here: the decoders with F.conv2d / F.conv1d and the channel LayerNorm by hand
(`reference.norm_by_hand` over the channels), and parameter counts from the layer shapes.
"""

import pytest
import torch
import torch.nn.functional as F
from reference import norm_by_hand

from data2vec.decoders import ConvDecoder1d, ConvDecoder2d
from data2vec.v2 import Data2Vec2Config

# --------------------------------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------------------------------


def test_base_presets_are_the_released_recipes():
    v = Data2Vec2Config.preset("vision", "base")
    e = v.encoder
    assert (e.dim, e.depth, e.heads, e.image_size, e.patch_size) == (768, 12, 12, 224, 16)
    assert (e.norm_first, e.position, e.embed_norm, e.cls_init_std, e.norm_eps, e.final_norm) == \
        (False, "sincos", True, 1.0, 1e-6, False)
    assert (v.num_masks, v.mask_ratio, v.mask_block, v.mask_adjust, v.prenet_depth, v.top_k) == \
        (16, 0.8, 3, 0.07, 2, 10)
    assert (v.layer_norm, v.final_norm, v.loss_scale, v.cls_loss, v.ema_scope) == ("instance", "layer", None, 0.01,
                                                                                  "encoder")
    assert (v.decoder_layers, v.decoder_kernel, v.decoder_groups, v.decoder_residual, v.decoder_width) == \
        (6, 3, 16, True, 768)
    assert (v.tau_start, v.tau_end, v.tau_ramp_steps) == (0.9998, 0.99999, 100_000)
    t = Data2Vec2Config.preset("text", "base")
    assert (t.encoder.dim, t.encoder.depth, t.encoder.norm_first, t.encoder.dropout) == (768, 12, False, 0.1)
    assert (t.num_masks, t.mask_ratio, t.prenet_depth, t.top_k, t.final_norm, t.loss_scale, t.cls_loss) == \
        (8, 0.48, 0, 12, "none", 1.0, 0.0)
    assert (t.decoder_layers, t.decoder_kernel, t.decoder_groups, t.decoder_residual,
            t.decoder_projection_ratio, t.decoder_dropout, t.ema_scope) == (5, 9, 1, False, 2.0, 0.1, "blocks")
    assert (t.tau_start, t.tau_end) == (0.9999, 0.99999)


@pytest.mark.parametrize("modality", ["vision", "text"])
@pytest.mark.parametrize("name", ["tiny", "mini", "small"])
def test_reduced_presets_follow_design_section_8(modality, name):
    cfg = Data2Vec2Config.preset(modality, name)
    depth = cfg.encoder.depth
    assert 2 <= cfg.top_k <= depth - cfg.prenet_depth
    assert 0.7 <= (cfg.top_k + cfg.prenet_depth) / depth <= 1.0  # K scaled with depth
    assert 0 < cfg.tau_ramp_steps < 1  # the ramp is a fraction of the run
    if modality == "vision":
        assert cfg.mask_block <= 2 and cfg.encoder.grid_size <= 8  # block scaled to the small grid
    if (modality, name) == ("text", "mini"):  # the text study's priced recipe (released: 8 masks, 5 conv blocks)
        assert (cfg.num_masks, cfg.decoder_layers) == (2, 2)
    assert Data2Vec2Config.from_dict(cfg.to_dict()) == cfg


def test_config_errors_name_the_field_and_the_fix():
    with pytest.raises(ValueError, match=r"Data2Vec2Config\.cls_loss: text encoders have no CLS"):
        Data2Vec2Config.preset("text", "tiny", cls_loss=0.01)
    with pytest.raises(ValueError, match=r"Data2Vec2Config\.top_k"):
        Data2Vec2Config.preset("vision", "mini", top_k=4)  # mini: 1 prenet block of 4
    with pytest.raises(ValueError, match=r"Data2Vec2Config\.mask_block"):
        Data2Vec2Config.preset("vision", "tiny", mask_block=5)  # 4 x 4 grid
    with pytest.raises(ValueError, match=r"Data2Vec2Config\.encoder: position='relative'"):
        Data2Vec2Config.preset("vision", "tiny", position="relative")
    with pytest.raises(ValueError, match=r"Data2Vec2Config\.decoder_groups"):
        Data2Vec2Config.preset("vision", "tiny", decoder_groups=3)
    with pytest.raises(ValueError, match=r"Data2Vec2Config\.mask_ratio"):
        Data2Vec2Config.preset("text", "tiny", mask_ratio=1.0)
    with pytest.raises(ValueError, match="unknown field"):
        Data2Vec2Config.preset("text", "tiny", num_mask=3)
    with pytest.raises(ValueError, match="unknown data2vec 2.0 preset"):
        Data2Vec2Config.preset("text", "huge")


# --------------------------------------------------------------------------------------------------
# the decoders
# --------------------------------------------------------------------------------------------------


def channel_ln(x):
    return norm_by_hand(x, dim=1)


def test_conv_decoder_2d_matches_a_reference_with_residual_and_no_positions():
    torch.manual_seed(0)
    dec = ConvDecoder2d(32, layers=2, kernel=3, groups=4, residual=True)
    x = torch.randn(2, 12, 32)  # 3 x 4 grid
    h = x.transpose(1, 2).reshape(2, 32, 3, 4)
    for conv in dec.convs:
        h = h + F.gelu(channel_ln(F.conv2d(h, conv.weight, conv.bias, padding=1, groups=4)))
    expected = h.reshape(2, 32, 12).transpose(1, 2) @ dec.proj.weight.T + dec.proj.bias
    torch.testing.assert_close(dec(x, (3, 4)), expected, rtol=1e-5, atol=1e-5)
    # the residual rule: all convolution weights and biases zero -> each block adds GELU(LN(0)) = 0
    with torch.no_grad():
        for conv in dec.convs:
            conv.weight.zero_()
            conv.bias.zero_()
    torch.testing.assert_close(dec(x, (3, 4)), dec.proj(x), rtol=0, atol=1e-6)
    assert not any("pos" in name for name, _ in dec.named_parameters())


def test_conv_decoder_1d_matches_a_reference_without_residual():
    torch.manual_seed(0)
    dec = ConvDecoder1d(16, width=24, layers=2, kernel=5, groups=1, residual=False, projection_ratio=2.0)
    x = torch.randn(2, 7, 16)
    h = x.transpose(1, 2)
    for conv in dec.convs:
        h = F.gelu(channel_ln(F.conv1d(h, conv.weight, conv.bias, padding=2)))  # no residual
    lin1, lin2 = dec.proj[0], dec.proj[2]
    expected = F.gelu(h.transpose(1, 2) @ lin1.weight.T + lin1.bias) @ lin2.weight.T + lin2.bias
    assert lin1.weight.shape == (48, 24)  # Linear(width, 2 width) -> GELU -> Linear(2 width, D)
    torch.testing.assert_close(dec(x), expected, rtol=1e-5, atol=1e-5)
    with torch.no_grad():  # zero convolutions: without a residual the input is gone
        for conv in dec.convs:
            conv.weight.zero_()
            conv.bias.zero_()
    torch.testing.assert_close(dec(x), dec.proj(torch.zeros(2, 7, 24)), rtol=0, atol=1e-6)


def test_decoder_parameter_counts_at_the_base_shapes():
    def count(module):
        return sum(p.numel() for p in module.parameters())

    D = 768
    conv2d = D * (D // 16) * 3 * 3 + D  # grouped 3 x 3: each output channel sees 48 inputs
    assert count(ConvDecoder2d(D, layers=6, kernel=3, groups=16)) == 6 * conv2d + D * D + D  # 2,585,856
    conv1d = D * D * 9 + D
    proj = (D * 2 * D + 2 * D) + (2 * D * D + D)
    assert count(ConvDecoder1d(D, layers=5, kernel=9, groups=1, projection_ratio=2.0)) == 5 * conv1d + proj
    assert 6 * conv2d + D * D + D == 2_585_856 and 5 * conv1d + proj == 28_907_520
