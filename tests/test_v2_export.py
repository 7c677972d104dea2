"""A data2vec 2.0 text encoder exports to HuggingFace's data2vec-text (a RoBERTa-shaped post-LN encoder) with
every layer matching; the v2 image encoder (post-LN ViT, LayerNorm after the CLS prepend) has no HF class and
the export says so."""

from __future__ import annotations

import pytest
import torch
from reference import LazyModule, assert_close_scaled

from data2vec.hub import export_hf, load_pretrained
from data2vec.v2 import Data2Vec2, Data2Vec2Config

transformers = LazyModule("transformers")  # the dev extra: imported by the first test that uses it


def trained_v2(modality: str) -> Data2Vec2:
    """A tiny v2 model after a few updates (so the weights are not at their initial values)."""
    torch.manual_seed(0)
    extra = {"vocab_size": 120} if modality == "text" else {}
    model = Data2Vec2(Data2Vec2Config.preset(modality, "tiny", **extra))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    for step in range(3):
        batch = ({"input_ids": torch.randint(5, 120, (4, 16)), "padding_mask": torch.zeros(4, 16, dtype=torch.bool)}
                 if modality == "text" else {"images": torch.randn(4, 3, 32, 32)})
        loss, _ = model(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        model.step_hook(step, 10)
    return model.eval()


def test_v2_text_encoder_round_trips_through_data2vec_text(tmp_path):
    backbone = trained_v2("text").backbone.eval()
    export_hf(tmp_path, backbone, "data2vec-text")
    hf = transformers.Data2VecTextModel.from_pretrained(tmp_path, attn_implementation="eager").eval()
    ids = torch.randint(5, 120, (2, 12), generator=torch.Generator().manual_seed(1))
    attention = torch.ones_like(ids)
    attention[1, 9:] = 0
    ids[1, 9:] = backbone.cfg.pad_id
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=attention, output_hidden_states=True)
        final, layers = backbone(ids, padding_mask=attention == 0, return_layers="block")
    real = attention.bool()
    assert_close_scaled(final[real], ref.hidden_states[-1][real])
    for got, want in zip(layers, ref.hidden_states[1:], strict=True):
        assert_close_scaled(got[real], want[real])
    again = load_pretrained(tmp_path)  # and back through the importer
    with torch.no_grad():
        assert_close_scaled(again(input_ids=ids, attention_mask=attention)[real], final[real])


def test_v2_image_encoder_export_is_refused_with_the_reason(tmp_path):
    backbone = trained_v2("vision").backbone
    for family in ("vit", "data2vec-vision", "beit"):
        with pytest.raises(ValueError, match="transformers has no class for it"):
            export_hf(tmp_path / family, backbone, family)
