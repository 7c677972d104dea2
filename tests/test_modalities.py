"""The modality plug-ins (data2vec/modalities): registry, masks, target settings, and methods without branches."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

from data2vec import modalities
from data2vec.modalities import TEXT, VISION, Modality
from data2vec.v1 import Data2Vec, Data2VecConfig
from data2vec.v2 import Data2Vec2, Data2Vec2Config

ROOT = Path(__file__).resolve().parents[1]


def text_batch(B=3, T=12, pad=3):
    ids = torch.randint(5, 60, (B, T), generator=torch.Generator().manual_seed(0))
    ids[0, -pad:] = 1  # the tiny text preset's pad id
    return {"input_ids": ids, "padding_mask": ids == 1}


def images(B=3):
    return torch.randn(B, 3, 32, 32, generator=torch.Generator().manual_seed(0))


# --------------------------------------------------------------------------------------------------
# registry
# --------------------------------------------------------------------------------------------------


def test_registry_names_and_lookup():
    assert modalities.names() == ("text", "vision", "audio")
    assert modalities.get("text") is TEXT and modalities.get("vision") is VISION
    with pytest.raises(ValueError, match="unknown modality 'video'"):
        modalities.get("video")
    with pytest.raises(ValueError, match="unknown modality"):
        Data2VecConfig.preset("video", "tiny")


@pytest.mark.parametrize("name", ["text", "vision", "audio"])
def test_every_hook_is_implemented(name):
    plugin = modalities.get(name)
    hooks = [n for n, v in vars(Modality).items() if callable(v) and not n.startswith("_")]
    missing = [hook for hook in hooks if getattr(type(plugin), hook) is getattr(Modality, hook)
               and hook not in ("check_v1", "check_v2")]  # the checks may have nothing to add
    assert not missing, missing
    assert plugin.v1_recipe and plugin.v2_recipe and set(plugin.v2_reduced) == {"tiny", "mini", "small"}


# --------------------------------------------------------------------------------------------------
# masks
# --------------------------------------------------------------------------------------------------


def test_text_v1_masks_never_select_pads_or_specials():
    model = Data2Vec(Data2VecConfig.preset("text", "tiny", mask_prob=0.5))
    batch = model.read_batch(text_batch())
    corrupted, loss_mask, selected = TEXT.corrupt(model.cfg, batch["input_ids"], batch["padding_mask"],
                                                  torch.Generator().manual_seed(0))
    assert not (selected & batch["padding_mask"]).any() and selected.any()
    assert torch.equal(loss_mask, selected)  # loss_on="selected"
    assert torch.equal(corrupted[~selected], batch["input_ids"][~selected])
    student_input, mask = model.make_masks(batch, torch.Generator().manual_seed(0))
    assert torch.equal(student_input, corrupted) and torch.equal(mask, loss_mask)
    mask_only = Data2VecConfig.preset("text", "tiny", mask_prob=0.5, loss_on="mask_token")
    _, positions, selected = TEXT.corrupt(mask_only, batch["input_ids"], batch["padding_mask"],
                                          torch.Generator().manual_seed(0))
    assert (positions <= selected).all() and (batch["input_ids"] != mask_only.mask_id).all()


def test_vision_v1_masks_are_blocks_of_the_patch_grid():
    model = Data2Vec(Data2VecConfig.preset("vision", "tiny"))
    x = images()
    mask = VISION.block_mask(model, x, torch.Generator().manual_seed(0))  # (B, N)
    num_masked, _ = model.cfg.block_sizes(model.cfg.encoder.num_patches)
    assert mask.shape == (3, model.cfg.encoder.num_patches) and mask.dtype == torch.bool
    assert (mask.sum(dim=1) <= num_masked).all() and mask.any()
    student_input, loss_mask = model.make_masks({"images": x}, torch.Generator().manual_seed(0))
    assert student_input is x and torch.equal(loss_mask, mask)


def test_v2_masks_per_modality():
    text = Data2Vec2(Data2Vec2Config.preset("text", "tiny"))
    batch = text.read_batch(text_batch())
    mask = text.make_masks(batch, torch.Generator().manual_seed(0))  # (B * M, T)
    M = text.cfg.num_masks
    padding = batch["padding_mask"].repeat_interleave(M, dim=0)
    assert mask.shape == (3 * M, 12) and not (mask & padding).any()
    real = (~padding).sum(dim=1)
    assert torch.equal((~mask & ~padding).sum(dim=1), (real * (1 - text.cfg.mask_ratio)).floor().long())
    vision = Data2Vec2(Data2Vec2Config.preset("vision", "tiny"))
    mask = vision.make_masks({"images": images()}, torch.Generator().manual_seed(0))
    N = vision.cfg.encoder.num_patches
    assert mask.shape == (3 * vision.cfg.num_masks, N)
    assert (mask.sum(dim=1) == N - int(N * (1 - vision.cfg.mask_ratio))).all()  # an exact kept count per row


def test_eligible_positions():
    batch = text_batch()
    mask = torch.zeros(3 * 2, 12, dtype=torch.bool)
    assert int(TEXT.eligible(None, batch, mask)) == 2 * (3 * 12 - 3)  # real tokens of the two clones
    assert int(VISION.eligible(None, {"images": images()}, mask)) == mask.numel()


def test_read_batch_checks_and_completes():
    with pytest.raises(ValueError, match="a text data2vec batch needs 'input_ids'"):
        TEXT.read_batch({"images": images()}, 1, "data2vec")
    with pytest.raises(ValueError, match="a vision data2vec2 batch needs 'images'"):
        VISION.read_batch({"input_ids": text_batch()["input_ids"]}, 1, "data2vec2")
    ids = text_batch()["input_ids"]
    assert torch.equal(TEXT.read_batch({"input_ids": ids}, 1, "data2vec")["padding_mask"], ids == 1)


# --------------------------------------------------------------------------------------------------
# target settings and recipe rows
# --------------------------------------------------------------------------------------------------


def test_v1_target_settings_differ_by_modality():
    text, vision = Data2VecConfig.preset("text"), Data2VecConfig.preset("vision")
    assert (text.target, text.layer_norm, text.final_norm, text.top_k) == ("ffn", "layer", "none", 10)
    assert (vision.target, vision.layer_norm, vision.final_norm, vision.top_k) == ("block", "layer", "layer", 6)
    assert (text.loss_reduction, vision.loss_reduction) == ("sum", "mean")
    assert (text.ema_scope, vision.ema_scope) == ("blocks", "encoder")
    assert vision.encoder.use_mask_token  # the v1 student replaces masked patches
    assert TEXT.v1_top_k(4, reduced=True) == 3 and VISION.v1_top_k(4, reduced=True) == 3
    assert TEXT.v1_top_k(12, reduced=False) == 10 and VISION.v1_top_k(12, reduced=False) == 6
    assert Data2VecConfig.preset("text", "tiny").layer_norm == "instance"  # the reduced text row


def test_v2_target_settings_differ_by_modality():
    text, vision = Data2Vec2Config.preset("text"), Data2Vec2Config.preset("vision")
    assert (text.prenet_depth, text.top_k, text.final_norm, text.cls_loss) == (0, 12, "none", 0.0)
    assert (vision.prenet_depth, vision.top_k, vision.final_norm, vision.cls_loss) == (2, 10, "layer", 0.01)
    assert text.layer_norm == vision.layer_norm == "instance"
    assert vision.encoder.position == "sincos" and not vision.encoder.use_mask_token
    assert type(Data2Vec2(Data2Vec2Config.preset("text", "tiny")).decoder).__name__ == "ConvDecoder1d"
    assert type(Data2Vec2(Data2Vec2Config.preset("vision", "tiny")).decoder).__name__ == "ConvDecoder2d"
    with pytest.raises(ValueError, match="text encoders have no CLS"):
        Data2Vec2Config.preset("text", "tiny", cls_loss=0.01)


# --------------------------------------------------------------------------------------------------
# the methods hold no modality branch
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["data2vec/v1.py", "data2vec/v2.py"])
def test_methods_have_no_modality_branch(path):
    tree = ast.parse((ROOT / path).read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            for operand in [node.left, *node.comparators]:
                assert not (isinstance(operand, ast.Constant) and operand.value in modalities.names()), (
                    f"{path}:{node.lineno} compares with a modality name")
                assert not (isinstance(operand, ast.Attribute) and operand.attr == "modality"), (
                    f"{path}:{node.lineno} compares .modality")
        if isinstance(node, ast.FunctionDef):
            assert node.name not in ("mask_text", "mask_images"), f"{path}:{node.lineno} {node.name}"
