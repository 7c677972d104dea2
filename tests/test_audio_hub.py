"""data2vec-audio import / export against `transformers` itself (docs/design.md section 7, DESIGN section 10).

A `Data2VecAudioModel` / `Data2VecAudioForCTC` is built from a small random config, every parameter randomised
(HF initialises biases and norms to constants, which would hide a swapped name), saved with `save_pretrained`,
imported, and compared in eval mode: the embedding output (`hidden_states[0]`), every block's output, the final
output and the CTC logits, without and with padding (`attention_mask`); then exported back and reloaded with
`transformers`.
"""

import json

import pytest
import torch
import torch.nn.functional as F
from reference import LazyModule, assert_close_scaled

from data2vec import build_backbone  # noqa: E402
from data2vec.config import audio_preset  # noqa: E402
from data2vec.heads import CTCHead  # noqa: E402
from data2vec.hub import export_hf, load_hf, load_own, load_pretrained, save_backbone  # noqa: E402

transformers = LazyModule("transformers")  # the dev extra: imported by the first test that uses it

SMALL = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, conv_dim=(16,) * 7,
             num_conv_pos_embeddings=3, conv_pos_kernel_size=5, num_conv_pos_embedding_groups=4, vocab_size=11,
             layer_norm_eps=1e-5, mask_time_prob=0.05)
LENGTHS = (4000, 2700, 1300)  # samples: 12, 8 and 4 frames


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def randomise_(model, seed=0):
    """Every parameter ~ N(0, 0.2^2), LayerNorm gains around 1, from a fixed seed."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g) * 0.2
            p.copy_(1.0 + noise if "layer_norm.weight" in name else noise)
    return model


def build_hf(cls, folder, seed=0, **changes):
    torch.manual_seed(seed)
    model = randomise_(cls(transformers.Data2VecAudioConfig(**{**SMALL, **changes})), seed).eval()
    model.save_pretrained(folder)
    return model


def waves(seed=1):
    """A right-padded batch of three utterances (LENGTHS) and its HF attention mask (1 = real sample)."""
    g = torch.Generator().manual_seed(seed)
    batch = torch.randn(len(LENGTHS), LENGTHS[0], generator=g)
    mask = torch.zeros(len(LENGTHS), LENGTHS[0], dtype=torch.long)
    for row, n in enumerate(LENGTHS):
        batch[row, n:] = 0.0  # what HF's feature extractor pads with
        mask[row, :n] = 1
    return batch, mask


def frames(n: int) -> int:
    """Real frames of n samples (the HF model's own formula, a reference independent of ours)."""
    return int(transformers.Data2VecAudioModel(transformers.Data2VecAudioConfig(**SMALL))
               ._get_feat_extract_output_lengths(torch.tensor(n)))


def assert_every_layer(hf_out, embedded, final, layers, rows=slice(None), length=None):
    """hidden_states[0] vs our embedding output, hidden_states[1:] vs our blocks, last_hidden_state vs final."""
    T = slice(None) if length is None else slice(0, length)
    assert len(hf_out.hidden_states) == len(layers) + 1
    assert_close_scaled(embedded[rows, T], hf_out.hidden_states[0][rows, T])
    for got, ref in zip(layers, hf_out.hidden_states[1:], strict=True):
        assert_close_scaled(got[rows, T], ref[rows, T])
    last = hf_out.last_hidden_state if hasattr(hf_out, "last_hidden_state") else hf_out.hidden_states[-1]  # CTC
    assert_close_scaled(final[rows, T], last[rows, T])


def ours_every_layer(model, batch, lengths=None):
    backbone = model.backbone
    embedded, _ = backbone.embed(batch, lengths)
    final, layers = backbone(batch, lengths, return_layers="block")
    return embedded, final, layers


def test_import_matches_every_layer_without_padding(tmp_path):
    hf = build_hf(transformers.Data2VecAudioModel, tmp_path)
    model = load_pretrained(tmp_path)
    assert model.family == "data2vec-audio" and model.report.missing == [] and model.report.unused == []
    cfg = model.encoder_config
    assert (cfg.dim, cfg.depth, cfg.conv_dim, cfg.pos_conv_depth, cfg.pos_conv_kernel) == (32, 2, 16, 3, 5)
    assert not cfg.normalize_waveform  # no preprocessor_config.json: the HF model does not normalise
    batch = waves()[0][:1]  # one full-length utterance
    with torch.no_grad():
        ref = hf(batch, output_hidden_states=True)
        assert_every_layer(ref, *ours_every_layer(model, batch))
        assert_close_scaled(model(input_values=batch), ref.last_hidden_state)  # the HF-style call


def test_import_matches_transformers_on_a_padded_batch_in_its_padding_mode(tmp_path):
    """With pos_conv_zero_pads=False (transformers' own handling of padded frames) every layer of a padded batch
    matches, real frames and padded ones alike."""
    hf = build_hf(transformers.Data2VecAudioModel, tmp_path, seed=2)
    model = load_hf(tmp_path, pos_conv_zero_pads=False)
    batch, mask = waves(seed=3)
    lengths = mask.sum(dim=1)
    with torch.no_grad():
        ref = hf(batch, attention_mask=mask, output_hidden_states=True)
        embedded, final, layers = ours_every_layer(model, batch, lengths)
        for row, n in enumerate(LENGTHS):
            assert_every_layer(ref, embedded, final, layers, rows=slice(row, row + 1), length=frames(n))
        assert_close_scaled(model(input_values=batch, attention_mask=mask), ref.last_hidden_state)


def test_default_import_gives_each_padded_utterance_its_unpadded_output(tmp_path):
    """Our default (pads zeroed before every positional-conv layer): the real frames of a padded row equal
    transformers' output for that utterance alone, which transformers' own padded batch does not."""
    hf = build_hf(transformers.Data2VecAudioModel, tmp_path, seed=4)
    model = load_pretrained(tmp_path)
    batch, mask = waves(seed=5)
    with torch.no_grad():
        ours = model(input_values=batch, attention_mask=mask)
        hf_padded = hf(batch, attention_mask=mask).last_hidden_state
        for row, n in enumerate(LENGTHS):
            alone = hf(batch[row:row + 1, :n]).last_hidden_state  # (1, frames(n), D)
            assert alone.shape[1] == frames(n)
            assert_close_scaled(ours[row:row + 1, :frames(n)], alone)
        short = frames(LENGTHS[-1])
        leak = (hf_padded[2, :short] - hf(batch[2:3, :LENGTHS[-1]]).last_hidden_state[0]).abs().max()
        assert leak > 1e-3  # transformers' padded batch differs there (HF issue #25621)


def test_ctc_head_imported_and_logits_match(tmp_path):
    hf = build_hf(transformers.Data2VecAudioForCTC, tmp_path, seed=6)
    model = load_hf(tmp_path, pos_conv_zero_pads=False)
    assert isinstance(model.head, CTCHead) and model.head.vocab_size == SMALL["vocab_size"]
    assert model.report.missing == [] and model.report.unused == []
    batch, mask = waves(seed=7)
    with torch.no_grad():
        ref = hf(batch, attention_mask=mask, output_hidden_states=True)
        ours = model.logits(input_values=batch, attention_mask=mask)
    for row, n in enumerate(LENGTHS):
        assert_close_scaled(ours[row, :frames(n)], ref.logits[row, :frames(n)])
    assert_every_layer(ref, *ours_every_layer(model, batch[:1]), rows=slice(0, 1))  # row 0 is unpadded


def test_preprocessor_normalisation_moves_into_the_backbone(tmp_path):
    """A folder whose preprocessor_config.json says do_normalize: our backbone normalises raw audio as the HF
    feature extractor does before the HF model (eps 1e-5 here, 1e-7 there: rel 1e-4 covers the difference)."""
    hf = build_hf(transformers.Data2VecAudioModel, tmp_path, seed=8)
    extractor = transformers.Wav2Vec2FeatureExtractor(do_normalize=True, return_attention_mask=True)
    extractor.save_pretrained(tmp_path)
    model = load_pretrained(tmp_path)
    assert model.encoder_config.normalize_waveform
    raw = 3.0 * torch.randn(1, 4000, generator=torch.Generator().manual_seed(9)) + 0.5
    normalised = extractor(raw[0].numpy(), sampling_rate=16000, return_tensors="pt").input_values
    with torch.no_grad():
        assert_close_scaled(model(input_values=raw), hf(normalised).last_hidden_state, rel=1e-4)


def test_export_round_trip_through_transformers(tmp_path):
    """Our encoder + CTC head -> export -> transformers' Data2VecAudioForCTC: same logits and hidden states;
    import of the export gives our weights back exactly."""
    torch.manual_seed(10)
    cfg = audio_preset("tiny", use_mask_token=True, dropout=0.0, attn_dropout=0.0)
    backbone = randomise_(build_backbone(cfg)).eval()
    head = randomise_(CTCHead(cfg.dim, 7)).eval()
    folder = export_hf(tmp_path / "hf", backbone, "data2vec-audio", head=head)
    config = json.loads((folder / "config.json").read_text())
    assert config["architectures"] == ["Data2VecAudioForCTC"] and config["num_conv_pos_embeddings"] == 2
    assert json.loads((folder / "preprocessor_config.json").read_text())["do_normalize"] is True
    hf = transformers.Data2VecAudioForCTC.from_pretrained(folder).eval()
    batch, mask = waves(seed=11)
    with torch.no_grad():
        ref = hf(F.layer_norm(batch[:1], batch[:1].shape[-1:], eps=1e-5), output_hidden_states=True)
        final, layers = backbone(batch[:1], return_layers="block")
        for got, want in zip(layers, ref.hidden_states[1:], strict=True):
            assert_close_scaled(got, want)
        assert_close_scaled(head(final), ref.logits)
    back = load_pretrained(folder)
    assert back.report.missing == [] and back.report.unused == []
    assert back.encoder_config == cfg
    for key, value in backbone.state_dict().items():
        assert torch.equal(back.backbone.state_dict()[key], value), key
    assert torch.equal(back.head.proj.weight, head.proj.weight)


def test_own_format_round_trip_keeps_the_audio_config(tmp_path):
    cfg = audio_preset("tiny", conv_kernels=(10, 4, 2), conv_strides=(5, 4, 2))
    backbone = build_backbone(cfg).eval()
    save_backbone(tmp_path, backbone, head=CTCHead(cfg.dim, 5))
    back = load_own(tmp_path)
    assert back.encoder_config == cfg and isinstance(back.head, CTCHead)
    wave = torch.randn(1, 2000)
    assert torch.equal(back.backbone(wave), backbone(wave))


def test_what_cannot_be_imported_or_exported_is_refused(tmp_path):
    build_hf(transformers.Data2VecAudioModel, tmp_path / "bias", conv_bias=True)
    with pytest.raises(ValueError, match="conv_bias"):
        load_pretrained(tmp_path / "bias")
    build_hf(transformers.Data2VecAudioModel, tmp_path / "widths", conv_dim=(16, 16, 16, 16, 16, 16, 8))
    with pytest.raises(ValueError, match="one width"):
        load_pretrained(tmp_path / "widths")
    alibi = build_backbone(audio_preset("tiny", alibi=True))
    with pytest.raises(ValueError, match="ALiBi"):
        export_hf(tmp_path / "out", alibi, "data2vec-audio")
    with pytest.raises(ValueError, match="audio encoder"):
        export_hf(tmp_path / "out2", build_backbone(audio_preset("tiny")), "roberta")
