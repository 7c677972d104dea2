"""The core's configuration (data2vec/config.py; docs/design.md section 3): every preset builds and runs forward
and backward, every `EncoderConfig` validation error fires naming its field, a bad input or preset name gives one
clear error, and the presets table holds the released base shapes. Split from test_core.py (the core against
equations written out)."""

import pytest
import torch

from data2vec import EncoderConfig, build_backbone, get_preset
from data2vec.config import PRESETS


@pytest.mark.parametrize("modality", ["text", "vision"])
@pytest.mark.parametrize("name", ["tiny", "mini", "small", "base"])
def test_every_preset_builds_and_runs(modality, name):
    cfg = get_preset(modality, name)
    if name == "base":  # keep the test light: the full width, two blocks
        cfg = cfg.replace(depth=2)
    model = build_backbone(cfg).train()
    if modality == "text":
        ids = torch.randint(0, cfg.vocab_size, (2, 16))
        out = model(ids, padding_mask=torch.zeros(2, 16, dtype=torch.bool))
        assert out.shape == (2, 16, cfg.dim)
    else:
        out = model(torch.randn(1, cfg.in_chans, cfg.image_size, cfg.image_size))
        assert out.shape == (1, cfg.num_patches + 1, cfg.dim)
    out.mean().backward()
    assert torch.isfinite(out).all()


@pytest.mark.parametrize(
    "changes, field",
    [
        (dict(dim=100, heads=3), "dim"),
        (dict(modality="vision", image_size=30, patch_size=8), "patch_size"),
        (dict(dropout=-0.1), "dropout"),
        (dict(attn_dropout=1.0), "attn_dropout"),
        (dict(drop_path=2.0), "drop_path"),
        (dict(modality="video"), "modality"),
        (dict(depth=0), "depth"),
        (dict(heads=0), "heads"),
        (dict(mlp_ratio=0), "mlp_ratio"),
        (dict(layer_scale=1e-4, norm_first=False), "layer_scale"),
        (dict(layer_scale=-1.0, norm_first=True), "layer_scale"),
        (dict(final_norm=True, norm_first=False), "final_norm"),
        (dict(norm_eps=0.0), "norm_eps"),
        (dict(init="xavier"), "init"),
        (dict(init_std=0.0), "init_std"),
        (dict(vocab_size=0), "vocab_size"),
        (dict(pad_id=99, vocab_size=10), "pad_id"),
        (dict(position_offset=600), "position_offset"),
        (dict(type_vocab_size=-1), "type_vocab_size"),
        (dict(modality="vision", position="rope"), "position"),
        (dict(modality="vision", in_chans=0), "in_chans"),
    ],
)
def test_every_validation_error_fires(changes, field):
    with pytest.raises(ValueError, match=f"EncoderConfig.{field}"):
        EncoderConfig(**changes)


def test_bad_inputs_give_clear_errors():
    model = build_backbone(get_preset("vision", "tiny"))
    with pytest.raises(ValueError, match="not divisible by the patch size"):
        model(torch.randn(1, 3, 30, 30))
    with pytest.raises(ValueError, match="channel"):
        model(torch.randn(1, 1, 32, 32))
    with pytest.raises(ValueError, match="larger than"):
        model(torch.randn(1, 3, 48, 48))  # the relative table covers offsets of a 4 x 4 grid only
    with pytest.raises(ValueError, match="mask token"):
        model(torch.randn(1, 3, 32, 32), mask=torch.zeros(1, 16, dtype=torch.bool))
    text = build_backbone(get_preset("text", "tiny"))
    with pytest.raises(ValueError, match="max_positions"):
        text(torch.zeros(1, 200, dtype=torch.long))
    with pytest.raises(ValueError, match="padding_mask"):
        text(torch.zeros(1, 5, dtype=torch.long), padding_mask=torch.zeros(1, 5))
    with pytest.raises(ValueError, match="unknown text preset"):
        get_preset("text", "huge")
    with pytest.raises(ValueError, match="no field"):
        get_preset("text", "tiny").replace(width=3)


def test_presets_table_is_complete():
    for modality in ("text", "vision"):
        assert {"tiny", "mini", "small", "base"} <= set(PRESETS[modality])
    base = get_preset("text", "base")
    assert (base.depth, base.dim, base.heads, int(base.dim * base.mlp_ratio)) == (12, 768, 12, 3072)
    vbase = get_preset("vision", "base")
    assert (vbase.depth, vbase.dim, vbase.num_patches, vbase.layer_scale) == (12, 768, 196, 1e-4)
