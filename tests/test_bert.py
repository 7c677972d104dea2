"""BERT MLM: tied decoder, loss only on selected positions (vs a reference written here), overfitting."""

import dataclasses

import pytest
import torch
from reference import gelu, host_values, layer_norm_of

from baselines.bert import BertMLM, BertMLMConfig

PAD, MASK, SPECIALS = 1, 4, (0, 1, 2, 3, 4)


def tiny(**overrides):
    values = dict(dropout=0.0, attn_dropout=0.0)
    values.update(overrides)
    return BertMLM(BertMLMConfig.preset("text", "tiny", **values))


def text_batch(B=4, T=16, seed=0, vocab=1000):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab, (B, T), generator=g)
    ids[:, 0], ids[:, -1] = 0, 2  # <s> ... </s>
    padding = torch.zeros(B, T, dtype=torch.bool)
    padding[0, T // 2:] = True  # one short sequence
    ids[padding] = PAD
    return {"input_ids": ids, "padding_mask": padding}


def test_config_preset_and_asdict():
    cfg = BertMLMConfig.preset("text", "tiny", vocab_size=500, mask_id=7, special_ids=[0, 1, 7])
    assert cfg.encoder.vocab_size == 500 and cfg.mask_id == 7 and cfg.special_ids == (0, 1, 7)
    assert dataclasses.asdict(cfg)["encoder"]["dim"] == 64
    assert BertMLMConfig.preset("text", "base").mask_id == 50264  # RoBERTa's <mask>
    with pytest.raises(ValueError, match="mask_id"):
        BertMLMConfig.preset("text", "tiny", mask_id=5000)
    with pytest.raises(ValueError, match="text method"):
        BertMLMConfig.preset("vision", "tiny")
    with pytest.raises(ValueError, match="unknown"):
        BertMLMConfig.preset("text", "tiny", not_a_field=1)


def test_decoder_is_tied_to_the_input_embedding():
    model = tiny()
    emb = model.backbone.embed.tokens.weight
    assert model.head.decoder.weight is emb
    assert model.head.decoder.weight.data_ptr() == emb.data_ptr()
    with torch.no_grad():
        emb[10, 0] += 1.0  # a change to the embedding is a change to the decoder
    assert model.head.decoder.weight[10, 0] == emb[10, 0]
    n_unique = sum(p.numel() for p in model.parameters())  # parameters() counts a shared tensor once
    assert n_unique == sum(p.numel() for n, p in model.named_parameters())


def test_loss_equals_reference_over_selected_positions_only():
    torch.manual_seed(0)
    model = tiny()
    batch = text_batch()
    ids = batch["input_ids"]
    features = torch.randn(*ids.shape, 64, requires_grad=True)
    mask = torch.zeros_like(ids, dtype=torch.bool)
    mask[1, 3] = mask[2, 5] = mask[3, 7] = True
    loss, correct = model.mlm_loss(features, ids, mask)
    # reference: the head written out for every position, then cross-entropy averaged over the selected ones
    head = model.head
    h = layer_norm_of(head.norm, gelu(features @ head.dense.weight.T + head.dense.bias))
    logits = h @ model.backbone.embed.tokens.weight.T + head.bias  # (B, T, V)
    terms = [-(logits[b, t].log_softmax(-1)[ids[b, t]]) for b, t in [(1, 3), (2, 5), (3, 7)]]
    torch.testing.assert_close(loss, sum(terms) / 3, rtol=1e-5, atol=1e-6)
    assert correct.item() == sum(int(logits[b, t].argmax() == ids[b, t]) for b, t in [(1, 3), (2, 5), (3, 7)])
    # changing anything at an unselected position changes nothing; the gradient there is zero
    loss.backward()
    assert features.grad[~mask].abs().max() == 0 and features.grad[mask].abs().sum() > 0
    changed = features.detach().clone()
    changed[~mask] = torch.randn_like(changed[~mask]) * 10
    torch.testing.assert_close(model.mlm_loss(changed, ids, mask)[0], loss.detach())
    changed[1, 3] += 1.0
    assert not torch.allclose(model.mlm_loss(changed, ids, mask)[0], loss.detach())


def test_forward_masks_only_eligible_tokens_and_reports_statistics():
    torch.manual_seed(0)
    model = tiny()
    batch = text_batch(B=8, T=64)
    ids, padding = batch["input_ids"], batch["padding_mask"]
    corrupted, mask, special = model.corrupt(ids, padding)
    assert not (mask & special).any()  # never <s>, </s> or padding
    assert torch.equal(corrupted[~mask], ids[~mask])
    loss, stats = model(batch)
    stats = host_values(stats)
    assert set(stats) == {"loss", "mlm_accuracy", "masked_fraction"}
    assert stats["loss"] == pytest.approx(loss.item())
    assert 0.10 < stats["masked_fraction"] < 0.20  # 15% of the eligible tokens, exact count per row
    assert model.step_hook(0, 10) == {}
    with pytest.raises(ValueError, match="input_ids"):
        model({"images": torch.randn(1, 3, 8, 8)})


def test_tiny_model_overfits_a_fixed_batch():
    torch.manual_seed(0)
    model = tiny(vocab_size=200)
    batch = text_batch(B=8, T=24, vocab=200)
    opt = torch.optim.AdamW(model.parameters(), lr=5e-3)
    history = []
    for _ in range(60):
        loss, stats = model(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(stats)
    first = sum(s["loss"] for s in history[:5]) / 5
    last = sum(s["loss"] for s in history[-5:]) / 5
    acc_first = sum(s["mlm_accuracy"] for s in history[:5]) / 5
    acc_last = sum(s["mlm_accuracy"] for s in history[-5:]) / 5
    assert last < 0.65 * first, (first, last)  # about 5.3 -> 2.5 nats (log 200 = 5.3 at the start)
    assert acc_last > acc_first + 0.15, (acc_first, acc_last)  # about 0.0 -> 0.3
