"""HuggingFace-format import against `transformers` itself (docs/design.md section 7).

For every family a `transformers` model is built from a tiny random config, every parameter is
randomised (HF initialises biases, LayerNorms, layer scale and relative-bias tables to constants, which
would hide mapping errors), saved with `save_pretrained`, imported with `load_pretrained`, and every
block's output, the final output and (for data2vec-text) every FFN output are compared at float32
precision for the tensors' scale (`reference.assert_close_scaled`: max error <= 1e-5 x max |reference|).
Also here: the loader's errors, `data2vec convert` both ways, fine-tuning from a HuggingFace folder, and
sharded / pytorch_model.bin / masked-image-modeling folders. The export (our model -> a folder that
`transformers` loads) and our own format are tested in test_hub_export.py.
"""

import json

import pytest
import torch
from reference import LazyModule, assert_close_scaled, assert_layers_match, hf_text_batch, randomise_hf_

from data2vec.heads import ImageClassificationHead, QuestionAnsweringHead, SequenceClassificationHead  # noqa: E402
from data2vec.hub import load_pretrained  # noqa: E402

transformers = LazyModule("transformers")  # the dev extra: imported by the first test that uses it

TEXT = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
            max_position_embeddings=40, hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1)
VISION = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, image_size=32,
              patch_size=8)


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # a test that reached for the network would fail, not hang


def build_hf(cls, config, tmp_path, seed=0):
    torch.manual_seed(seed)
    model = randomise_hf_(cls(config), seed).eval()
    model.save_pretrained(tmp_path)
    return model


# ---------------------------------------------------------------------------------------------------
# Text families
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("family", ["bert", "roberta", "data2vec-text"])
def test_text_encoder_parity_every_layer(family, tmp_path):
    cls, cfg_cls = {
        "bert": (transformers.BertModel, transformers.BertConfig),
        "roberta": (transformers.RobertaModel, transformers.RobertaConfig),
        "data2vec-text": (transformers.Data2VecTextModel, transformers.Data2VecTextConfig),
    }[family]
    hf_cfg = cfg_cls(**TEXT, attn_implementation="eager", pad_token_id=0 if family == "bert" else 1)
    hf = build_hf(cls, hf_cfg, tmp_path)
    model = load_pretrained(tmp_path)
    assert model.family == family and model.head is None
    cfg = model.encoder_config
    assert (cfg.position_offset, cfg.pad_id) == ((0, 0) if family == "bert" else (2, 1))
    assert cfg.norm_eps == hf_cfg.layer_norm_eps
    ids, attention, types = hf_text_batch(hf_cfg.pad_token_id)
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=attention, token_type_ids=types, output_hidden_states=True)
        final, layers = model(input_ids=ids, attention_mask=attention, token_type_ids=types, return_layers="block")
    assert_layers_match(ref, final, layers)
    # a base model's pooler is not part of our encoder: reported, not silently dropped
    assert model.report.unused == ["pooler.dense.bias", "pooler.dense.weight"]
    assert model.report.missing == []


def test_data2vec_text_ffn_targets_match_hooks(tmp_path):
    """The data2vec-text targets: the FFN output of every block before dropout, residual and LayerNorm."""
    hf_cfg = transformers.Data2VecTextConfig(**TEXT, attn_implementation="eager", pad_token_id=1)
    hf = build_hf(transformers.Data2VecTextModel, hf_cfg, tmp_path)
    captured = []
    hooks = [layer.output.dense.register_forward_hook(lambda m, i, o: captured.append(o))
             for layer in hf.encoder.layer]
    ids, attention, _ = hf_text_batch(1)
    with torch.no_grad():
        hf(input_ids=ids, attention_mask=attention)
        _, ffn = load_pretrained(tmp_path)(input_ids=ids, attention_mask=attention, return_layers="ffn")
    for hook in hooks:
        hook.remove()
    assert len(ffn) == len(captured) == 2
    for ref, got in zip(captured, ffn, strict=True):
        assert_close_scaled(got, ref)


@pytest.mark.parametrize("family,style", [("bert", "bert"), ("roberta", "roberta"), ("data2vec-text", "roberta")])
def test_sequence_classification_head_imported(family, style, tmp_path):
    cls, cfg_cls = {
        "bert": (transformers.BertForSequenceClassification, transformers.BertConfig),
        "roberta": (transformers.RobertaForSequenceClassification, transformers.RobertaConfig),
        "data2vec-text": (transformers.Data2VecTextForSequenceClassification, transformers.Data2VecTextConfig),
    }[family]
    hf_cfg = cfg_cls(**TEXT, num_labels=3, attn_implementation="eager", pad_token_id=0 if family == "bert" else 1)
    hf = build_hf(cls, hf_cfg, tmp_path)
    model = load_pretrained(tmp_path)
    assert isinstance(model.head, SequenceClassificationHead) and model.head.style == style
    assert model.report.missing == [] and model.report.unused == []
    ids, attention, types = hf_text_batch(hf_cfg.pad_token_id)
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=attention, token_type_ids=types).logits
        got = model.logits(input_ids=ids, attention_mask=attention, token_type_ids=types)
    assert_close_scaled(got, ref)


def test_question_answering_head_imported_and_lm_head_reported(tmp_path):
    hf_cfg = transformers.RobertaConfig(**TEXT, attn_implementation="eager", pad_token_id=1)
    hf = build_hf(transformers.RobertaForQuestionAnswering, hf_cfg, tmp_path / "qa")
    model = load_pretrained(tmp_path / "qa")
    assert isinstance(model.head, QuestionAnsweringHead)
    ids, attention, _ = hf_text_batch(1)
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=attention)
        start, end = model.logits(input_ids=ids, attention_mask=attention)
    assert_close_scaled(start, ref.start_logits)
    assert_close_scaled(end, ref.end_logits)

    build_hf(transformers.RobertaForMaskedLM, hf_cfg, tmp_path / "mlm")
    mlm = load_pretrained(tmp_path / "mlm")
    assert mlm.head is None and mlm.report.missing == []
    assert mlm.report.unused and all(k.startswith("lm_head.") for k in mlm.report.unused)


# ---------------------------------------------------------------------------------------------------
# Vision families
# ---------------------------------------------------------------------------------------------------

VISION_CASES = {
    # name: (model class, config class, extra config); class names, so that collecting does not import transformers
    "vit": ("ViTModel", "ViTConfig", {}),
    "vit-no-qkv-bias": ("ViTModel", "ViTConfig", {"qkv_bias": False}),
    "data2vec-vision-shared": ("Data2VecVisionModel", "Data2VecVisionConfig",
                               {"use_shared_relative_position_bias": True, "use_mean_pooling": False}),
    "beit-per-layer-mean": ("BeitModel", "BeitConfig",
                            {"use_relative_position_bias": True, "use_mean_pooling": True}),
    "beit-shared-and-per-layer": ("BeitModel", "BeitConfig",
                                  {"use_relative_position_bias": True, "use_shared_relative_position_bias": True}),
    "beit-absolute-no-layer-scale": ("BeitModel", "BeitConfig",
                                     {"use_absolute_position_embeddings": True, "layer_scale_init_value": 0.0,
                                      "use_mean_pooling": False}),
}


@pytest.mark.parametrize("case", list(VISION_CASES))
def test_vision_encoder_parity_every_layer(case, tmp_path):
    cls, cfg_cls, extra = VISION_CASES[case]
    cls, cfg_cls = getattr(transformers, cls), getattr(transformers, cfg_cls)
    hf_cfg = cfg_cls(**VISION, **extra, layer_norm_eps=1e-6, attn_implementation="eager")
    hf = build_hf(cls, hf_cfg, tmp_path)
    model = load_pretrained(tmp_path)
    cfg = model.encoder_config
    assert cfg.norm_eps == 1e-6
    if cls is not transformers.ViTModel:
        assert cfg.final_norm == (not hf_cfg.use_mean_pooling)  # mean pooling: no final LN on last_hidden_state
        assert cfg.k_bias is False
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref = hf(pixel_values=images, output_hidden_states=True)
        final, layers = model(pixel_values=images, return_layers="block")
    assert_layers_match(ref, final, layers)
    assert model.report.missing == []
    expected_unused = {"pooler.dense.weight", "pooler.dense.bias"} if cls is transformers.ViTModel else (
        {"pooler.layernorm.weight", "pooler.layernorm.bias"} if hf_cfg.use_mean_pooling else set())
    assert set(model.report.unused) == expected_unused


def test_beit_mask_token_imported_and_used(tmp_path):
    hf_cfg = transformers.BeitConfig(**VISION, use_mask_token=True, use_shared_relative_position_bias=True,
                                     attn_implementation="eager")
    hf = build_hf(transformers.BeitModel, hf_cfg, tmp_path)
    model = load_pretrained(tmp_path)
    assert model.encoder_config.use_mask_token
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    masked = torch.zeros(2, 16, dtype=torch.bool)
    masked[0, :5] = masked[1, 7:12] = True
    with torch.no_grad():
        ref = hf(pixel_values=images, bool_masked_pos=masked).last_hidden_state
        got = model(pixel_values=images, bool_masked_pos=masked)
    assert_close_scaled(got, ref)


@pytest.mark.parametrize("where", ["first block qkv", "last block proj"])
def test_scaled_tolerance_catches_a_perturbed_attention_weight(where, tmp_path):
    """The parity tolerance is not too loose: one attention weight matrix off by 0.1 % fails it."""
    hf_cfg = transformers.ViTConfig(**VISION, layer_norm_eps=1e-6, attn_implementation="eager")
    hf = build_hf(transformers.ViTModel, hf_cfg, tmp_path)
    model = load_pretrained(tmp_path)
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref = hf(pixel_values=images, output_hidden_states=True)
        assert_layers_match(ref, *model(pixel_values=images, return_layers="block"))  # passes unperturbed
        blocks = model.backbone.encoder.blocks
        weight = blocks[0].attn.qkv.weight if where == "first block qkv" else blocks[-1].attn.proj.weight
        weight.mul_(1.001)
        final = model(pixel_values=images)
    with pytest.raises(AssertionError, match="max \\|diff\\|"):
        assert_close_scaled(final, ref.last_hidden_state)


@pytest.mark.parametrize("family,mean", [("vit", False), ("beit", True), ("data2vec-vision", True),
                                         ("data2vec-vision", False)])
def test_image_classification_head_imported(family, mean, tmp_path):
    cls, cfg_cls = {
        "vit": (transformers.ViTForImageClassification, transformers.ViTConfig),
        "beit": (transformers.BeitForImageClassification, transformers.BeitConfig),
        "data2vec-vision": (transformers.Data2VecVisionForImageClassification, transformers.Data2VecVisionConfig),
    }[family]
    extra = {} if family == "vit" else {"use_mean_pooling": mean, "use_shared_relative_position_bias": True}
    hf = build_hf(cls, cfg_cls(**VISION, **extra, num_labels=5, attn_implementation="eager"), tmp_path)
    model = load_pretrained(tmp_path)
    head = model.head
    assert isinstance(head, ImageClassificationHead) and head.pooling == ("mean" if mean else "cls")
    assert model.report.missing == [] and model.report.unused == []
    images = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        assert_close_scaled(model.logits(pixel_values=images), hf(pixel_values=images).logits)




# ---------------------------------------------------------------------------------------------------
# Errors that name the problem
# ---------------------------------------------------------------------------------------------------


def test_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_pretrained(tmp_path / "nowhere")
    (tmp_path / "a").mkdir()
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_pretrained(tmp_path / "a")
    (tmp_path / "a" / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(ValueError, match="gpt2"):
        load_pretrained(tmp_path / "a")
    (tmp_path / "a" / "config.json").write_text(json.dumps(transformers.RobertaConfig(**TEXT).to_dict()))
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        load_pretrained(tmp_path / "a")
    # weights that do not fit the config: the error names the key and both shapes
    build_hf(transformers.RobertaModel, transformers.RobertaConfig(**TEXT), tmp_path / "b")
    config = json.loads((tmp_path / "b" / "config.json").read_text())
    config["intermediate_size"] = 48
    (tmp_path / "b" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"encoder\.layer\.0\.intermediate\.dense\.weight.*\(64, 32\).*\(48, 32\)"):
        load_pretrained(tmp_path / "b")


# ---------------------------------------------------------------------------------------------------
# The command line: convert both ways, and fine-tuning from a HuggingFace folder
# ---------------------------------------------------------------------------------------------------


def test_convert_cli_both_ways(tmp_path, capsys):
    from data2vec.cli import main

    hf_cfg = transformers.RobertaConfig(**TEXT, num_labels=2, attn_implementation="eager", pad_token_id=1)
    hf = build_hf(transformers.RobertaForSequenceClassification, hf_cfg, tmp_path / "hf")
    (tmp_path / "hf" / "vocab.json").write_text("{}")  # stands for the tokenizer files: copied along
    assert main(["convert", "--from-hf", str(tmp_path / "hf"), "--out", str(tmp_path / "ours")]) == 0
    assert (tmp_path / "ours" / "vocab.json").is_file()
    config = json.loads((tmp_path / "ours" / "config.json").read_text())
    assert config["family"] == "roberta" and config["head"]["style"] == "roberta"
    assert main(["convert", "--to-hf", str(tmp_path / "ours"), "--out", str(tmp_path / "back")]) == 0
    again = transformers.RobertaForSequenceClassification.from_pretrained(tmp_path / "back",
                                                                          attn_implementation="eager").eval()
    ids, attention, _ = hf_text_batch(1)
    with torch.no_grad():
        assert_close_scaled(again(input_ids=ids, attention_mask=attention).logits,
                            hf(input_ids=ids, attention_mask=attention).logits)
    # the fine-tuning CLI's --init reads our export (backbone.* keys, encoder config) as well
    from data2vec.cli.common import load_init

    init = load_init(str(tmp_path / "ours"), "text", "tiny")
    assert init.encoder_config == load_pretrained(tmp_path / "ours").encoder_config
    capsys.readouterr()
    assert main(["convert", "--to-hf", str(tmp_path / "ours"), "--out", str(tmp_path / "x"), "--family", "vit"]) == 2
    assert "vit" in capsys.readouterr().err
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text(json.dumps({"model_type": "t5"}))
    assert main(["convert", "--from-hf", str(tmp_path / "bad"), "--out", str(tmp_path / "y")]) == 2
    assert "t5" in capsys.readouterr().err


def test_finetune_sst2_from_a_huggingface_folder(tmp_path):
    """The README path: a downloaded RoBERTa-style folder (weights + tokenizer) -> `data2vec finetune --init`."""
    from data2vec.cli import main
    from tasks.text.tokenizer import train_tokenizer

    sentences = ["a good film", "a bad film", "really good fun", "really bad and dull", "good acting"] * 8
    (tmp_path / "corpus.txt").write_text("\n".join(sentences))
    tokenizer = train_tokenizer(tmp_path / "corpus.txt", kind="bpe", vocab_size=300, min_frequency=1)
    hf_cfg = transformers.Data2VecTextConfig(**dict(TEXT, vocab_size=tokenizer.vocab_size),
                                             pad_token_id=tokenizer.pad_id)
    build_hf(transformers.Data2VecTextModel, hf_cfg, tmp_path / "d2v")
    tokenizer.save(tmp_path / "d2v")
    glue = tmp_path / "SST-2"
    glue.mkdir()
    rows = [f"{s}\t{int('good' in s)}\n" for s in sentences]
    (glue / "train.tsv").write_text("sentence\tlabel\n" + "".join(rows))
    (glue / "dev.tsv").write_text("sentence\tlabel\n" + "".join(rows[:12]))
    code = main(["finetune", "--task", "sst2", "--data", str(glue), "--init", str(tmp_path / "d2v"), "--epochs", "1",
                 "--batch-size", "8", "--max-length", "16", "--out", str(tmp_path / "run"), "--quiet"])
    assert code == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert "huggingface:data2vec-text" in json.dumps(metrics)


def test_sharded_safetensors_and_pytorch_bin_folders(tmp_path):
    """`save_pretrained` shards big models (an index + several files); older folders hold pytorch_model.bin."""
    hf_cfg = transformers.ViTConfig(**VISION, attn_implementation="eager")
    torch.manual_seed(0)
    hf = randomise_hf_(transformers.ViTModel(hf_cfg)).eval()
    hf.save_pretrained(tmp_path / "sharded", max_shard_size="20KB")
    assert (tmp_path / "sharded" / "model.safetensors.index.json").is_file()
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "config.json").write_text((tmp_path / "sharded" / "config.json").read_text())
    state = {f"vit.{k}": v for k, v in hf.state_dict().items()}  # a task model's prefix, in a pickle
    state["vit.encoder.layer.0.attention.attention.relative_position_index"] = torch.zeros(3, dtype=torch.long)
    torch.save(state, tmp_path / "bin" / "pytorch_model.bin")
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref = hf(pixel_values=images).last_hidden_state
        for folder in ("sharded", "bin"):
            assert_close_scaled(load_pretrained(tmp_path / folder)(images), ref)
    assert load_pretrained(tmp_path / "bin").report.ignored_buffers == [
        "encoder.layer.0.attention.attention.relative_position_index"]


def test_masked_image_modeling_checkpoint_keeps_its_own_layernorm_apart(tmp_path):
    """BeitForMaskedImageModeling has `beit.layernorm` (final norm) and its own `layernorm` (MIM head)."""
    hf_cfg = transformers.BeitConfig(**VISION, use_mean_pooling=False, use_mask_token=True,
                                     use_shared_relative_position_bias=True, attn_implementation="eager")
    hf = build_hf(transformers.BeitForMaskedImageModeling, hf_cfg, tmp_path)
    model = load_pretrained(tmp_path)
    assert model.head is None and model.report.missing == []
    assert set(model.report.unused) == {"task.layernorm.weight", "task.layernorm.bias", "lm_head.weight",
                                        "lm_head.bias"}
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert_close_scaled(model(pixel_values=images), hf.beit(pixel_values=images).last_hidden_state)
