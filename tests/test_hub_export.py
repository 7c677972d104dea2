"""HuggingFace-format export against `transformers` itself, and our own format (docs/design.md section 7).

Our tiny model, every parameter moved off its constant initial value, is exported with `export_hf` to each
family's layout; `transformers` loads the folder with `from_pretrained`, and its every block's output, final
output and head logits are compared with ours at float32 precision for the tensors' scale
(`reference.assert_close_scaled`); the export of a text model is imported back. `save_backbone` /
`load_pretrained` round-trip our own format with its head. The import direction (a `transformers` model ->
ours) is tested in test_hub.py.
"""

import json

import pytest
import torch
from reference import LazyModule, assert_close_scaled, assert_layers_match, hf_text_batch, randomise_hf_

from data2vec import EncoderConfig, build_backbone, get_preset
from data2vec.heads import ImageClassificationHead, SequenceClassificationHead
from data2vec.hub import export_hf, load_backbone, load_pretrained, save_backbone

transformers = LazyModule("transformers")  # the dev extra: imported by the first test that uses it


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # a test that reached for the network would fail, not hang


# ---------------------------------------------------------------------------------------------------
# Export: our model -> folder -> transformers loads it -> same outputs
# ---------------------------------------------------------------------------------------------------


def our_model(modality, seed=0, **overrides):
    torch.manual_seed(seed)
    cfg = get_preset(modality, "tiny", dropout=0.0, attn_dropout=0.0, **overrides)
    model = build_backbone(cfg)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.2)  # off their constant initial values
    return model.eval()


@pytest.mark.parametrize("family", ["roberta", "data2vec-text"])
def test_export_text_round_trip_with_head(family, tmp_path):
    backbone = our_model("text")
    head = randomise_hf_(SequenceClassificationHead(64, 2)).eval()
    export_hf(tmp_path, backbone, family, head=head)
    cls = {"roberta": transformers.RobertaForSequenceClassification,
           "data2vec-text": transformers.Data2VecTextForSequenceClassification}[family]
    hf = cls.from_pretrained(tmp_path, attn_implementation="eager").eval()
    ids, attention, _ = hf_text_batch(1, vocab=1000)
    padding = attention == 0
    ids[0, 4] = 7  # our own batches never hold <pad> inside the text
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=attention, output_hidden_states=True)
        final, layers = backbone(ids, padding_mask=padding, return_layers="block")
        logits = head(final)
    assert_close_scaled(final, ref.hidden_states[-1])
    for got, want in zip(layers, ref.hidden_states[1:], strict=True):  # one per block
        assert_close_scaled(got, want)
    assert_close_scaled(logits, ref.logits)
    # and back again through the importer
    again = load_pretrained(tmp_path)
    with torch.no_grad():
        assert_close_scaled(again.logits(input_ids=ids, attention_mask=attention), logits)


@pytest.mark.parametrize("family,overrides,hf_cls", [
    ("data2vec-vision", {}, "Data2VecVisionModel"),  # relative shared bias, layer scale, no key bias, final LN
    ("beit", {"shared_rel_pos": False, "use_mask_token": True}, "BeitModel"),
    ("vit", {"position": "learned", "layer_scale": None, "k_bias": True}, "ViTModel"),
])
def test_export_vision_round_trip(family, overrides, hf_cls, tmp_path):
    backbone = our_model("vision", **overrides)
    export_hf(tmp_path, backbone, family)
    hf = getattr(transformers, hf_cls).from_pretrained(tmp_path, attn_implementation="eager").eval()
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        ref = hf(pixel_values=images, output_hidden_states=True)
        final, layers = backbone(images, return_layers="block")
    assert_layers_match(ref, final, layers)


def test_export_mean_pooling_head_to_data2vec_vision(tmp_path):
    backbone = our_model("vision", final_norm=False)
    head = randomise_hf_(ImageClassificationHead(64, 4, pooling="mean", eps=1e-6)).eval()
    export_hf(tmp_path, backbone, "data2vec-vision", head=head)
    hf = transformers.Data2VecVisionForImageClassification.from_pretrained(tmp_path, attn_implementation="eager")
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        assert_close_scaled(head(backbone(images)), hf.eval()(pixel_values=images).logits)


@pytest.mark.parametrize("family,hf_cls", [("data2vec-vision", "Data2VecVisionModel"), ("beit", "BeitModel")])
def test_export_without_final_norm_matches_the_pooler_each_family_builds(family, hf_cls, tmp_path):
    """Data2VecVisionModel has no pooler unless under a classification head, BeitModel always has one: the export of
    a mean-pooling encoder (no final norm) writes pooler tensors exactly when the model will look for them."""
    backbone = our_model("vision", final_norm=False)
    export_hf(tmp_path, backbone, family)
    hf, info = getattr(transformers, hf_cls).from_pretrained(tmp_path, output_loading_info=True)
    assert not info["unexpected_keys"] and not info["missing_keys"], info


def test_export_refuses_what_the_layout_cannot_hold(tmp_path):
    with pytest.raises(ValueError, match="relative position bias"):
        export_hf(tmp_path, our_model("vision"), "vit")
    with pytest.raises(ValueError, match="vision encoder"):
        export_hf(tmp_path, our_model("vision"), "roberta")
    with pytest.raises(ValueError, match="unknown export family"):
        export_hf(tmp_path, our_model("text"), "gpt2")
    with pytest.raises(ValueError, match="position_offset"):
        export_hf(tmp_path, our_model("text"), "bert")


def test_own_format_round_trip_with_head(tmp_path):
    backbone = our_model("vision")
    head = randomise_hf_(ImageClassificationHead(64, 3, pooling="cls")).eval()
    save_backbone(tmp_path, backbone, {"family": "data2vec-vision", "step": 7}, head=head)
    config = json.loads((tmp_path / "config.json").read_text())
    assert EncoderConfig.from_dict(config["encoder"]) == backbone.cfg and config["head"]["type"] == "image"
    loaded = load_pretrained(tmp_path)
    assert loaded.family == "data2vec-vision" and loaded.extra["step"] == 7
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded.logits(pixel_values=images), head(backbone(images)))
    assert isinstance(load_backbone(tmp_path), type(backbone))
