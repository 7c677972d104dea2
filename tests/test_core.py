"""The Transformer core against equations written out here (docs/design.md section 3). The presets and the errors
that name a bad setting or input are tested in test_core_config.py."""

import math

import pytest
import torch
import torch.nn.functional as F
from reference import assert_close_scaled, attention, ffn, layer_norm_of, randomise_

from data2vec import (
    Attention,
    Block,
    Encoder,
    EncoderConfig,
    PatchEmbedding,
    RelativePositionBias,
    TextEmbedding,
    build_backbone,
    get_preset,
)
from data2vec.embeddings import sincos_2d


def small_cfg(**kw):
    base = dict(modality="text", dim=32, depth=3, heads=4, vocab_size=50, max_positions=40, dropout=0.0,
                attn_dropout=0.0)
    base.update(kw)
    return EncoderConfig(**base)


@pytest.mark.parametrize("k_bias", [True, False])
@pytest.mark.parametrize("path", ["explicit", "fused"])
def test_attention_matches_explicit_softmax_with_padding_and_bias(k_bias, path, monkeypatch):
    """Both of Attention's paths (the written-out one for short CPU sequences, torch's fused kernel) against the
    reference, with padding, an additive bias and both."""
    import data2vec.transformer as transformer

    monkeypatch.setattr(transformer, "EXPLICIT_ATTENTION_MAX_T", 1024 if path == "explicit" else 0)
    monkeypatch.setattr(transformer, "EXPLICIT_ATTENTION_MAX_T_BF16", 1024 if path == "explicit" else 0)
    torch.manual_seed(0)
    attn = Attention(32, 4, qkv_bias=True, k_bias=k_bias)
    randomise_(attn)
    x = torch.randn(3, 7, 32)
    padding = torch.zeros(3, 7, dtype=torch.bool)
    padding[1, 5:] = True
    padding[2, 2:] = True
    bias = torch.randn(1, 4, 7, 7)
    from data2vec.transformer import padding_to_attn_mask

    for pm, bs in [(None, None), (padding, None), (None, bias), (padding, bias)]:
        mask = padding_to_attn_mask(pm, bs, x.dtype)
        ours = attn(x, mask)
        ref = attention(attn, x, pm, bs)
        assert_close_scaled(ours, ref)
    if not k_bias:
        assert not any("k_bias" in n for n, _ in attn.named_parameters())


def test_post_ln_block_equals_its_equation():
    torch.manual_seed(1)
    block = Block(32, 4, norm_first=False, norm_eps=1e-5).eval()
    randomise_(block)
    x = torch.randn(2, 6, 32)
    out, f = block(x)
    h = layer_norm_of(block.norm1, x + attention(block.attn, x))  # h = LN1(x + Attn(x))
    f_ref = ffn(block.ffn, h)  # f = FFN(h)
    out_ref = layer_norm_of(block.norm2, h + f_ref)  # out = LN2(h + f)
    assert_close_scaled(f, f_ref)
    assert_close_scaled(out, out_ref)


def test_pre_ln_block_with_layer_scale_equals_its_equation():
    torch.manual_seed(2)
    block = Block(32, 4, norm_first=True, layer_scale=0.1, k_bias=False, norm_eps=1e-6).eval()
    randomise_(block)
    x = torch.randn(2, 6, 32)
    out, f = block(x)
    x1 = x + block.gamma1 * attention(block.attn, layer_norm_of(block.norm1, x))
    f_ref = ffn(block.ffn, layer_norm_of(block.norm2, x1))
    out_ref = x1 + block.gamma2 * f_ref
    assert_close_scaled(f, f_ref)
    assert_close_scaled(out, out_ref)


@pytest.mark.parametrize("norm_first", [False, True])
def test_return_layers_gives_the_named_tensors(norm_first):
    torch.manual_seed(3)
    cfg = small_cfg(norm_first=norm_first, final_norm=norm_first)
    enc = Encoder(cfg).eval()
    x = torch.randn(2, 5, 32)
    plain = enc(x)
    assert isinstance(plain, torch.Tensor)
    final_f, ffn = enc(x, return_layers="ffn")
    final_b, blocks = enc(x, return_layers="block")
    # Independent walk through the blocks, recording f and the block output.
    h = x
    for i, block in enumerate(enc.blocks):
        h_next, f = block(h)
        torch.testing.assert_close(ffn[i], f)
        torch.testing.assert_close(blocks[i], h_next)
        h = h_next
    expected_final = enc.norm(h)
    for final in (plain, final_f, final_b):
        torch.testing.assert_close(final, expected_final)
    assert len(ffn) == len(blocks) == cfg.depth
    if norm_first:  # the final norm is applied to the output, not to the returned block outputs
        assert not torch.allclose(blocks[-1], final_b)


def test_nothing_extra_is_kept_when_not_asked():
    """With return_layers=None the encoder keeps no per-block list."""
    enc = Encoder(small_cfg()).eval()
    out = enc(torch.randn(1, 4, 32))
    assert isinstance(out, torch.Tensor)
    with pytest.raises(ValueError, match="return_layers"):
        enc(torch.randn(1, 4, 32), return_layers="attn")


@pytest.mark.parametrize("offset", [0, 2])
def test_real_token_outputs_do_not_change_with_padding(offset):
    torch.manual_seed(4)
    cfg = small_cfg(position_offset=offset, type_vocab_size=2, pad_id=1)
    model = build_backbone(cfg).eval()
    ids = torch.randint(3, 50, (2, 6))
    out = model(ids)
    padded = torch.cat([ids, torch.full((2, 4), 1)], dim=1)
    padding = torch.zeros(2, 10, dtype=torch.bool)
    padding[:, 6:] = True
    out_padded, layers = model(padded, padding_mask=padding, return_layers="ffn")
    assert_close_scaled(out_padded[:, :6], out)
    _, layers_unpadded = model(ids, return_layers="ffn")
    for a, b in zip(layers, layers_unpadded, strict=True):  # one per block of the same model
        assert_close_scaled(a[:, :6], b)


def test_text_embedding_equation_and_roberta_positions():
    cfg = small_cfg(position_offset=2, type_vocab_size=1, pad_id=1, dropout=0.0)
    emb = TextEmbedding(cfg).eval()
    randomise_(emb)
    ids = torch.tensor([[0, 5, 6, 2, 1, 1]])
    padding = ids == 1
    out = emb(ids, padding)
    positions = torch.tensor([[2, 3, 4, 5, 1, 1]])  # real tokens from 2, padding at padding_idx = 1
    ref = emb.tokens.weight[ids] + emb.positions.weight[positions] + emb.token_types.weight[torch.zeros_like(ids)]
    assert_close_scaled(out, layer_norm_of(emb.norm, ref))
    bert = TextEmbedding(small_cfg(position_offset=0, type_vocab_size=2, pad_id=0)).eval()
    types = torch.tensor([[0, 0, 0, 1, 1, 1]])
    ref = bert.tokens.weight[ids] + bert.positions.weight[torch.arange(6)] + bert.token_types.weight[types]
    assert_close_scaled(bert(ids, padding, types), layer_norm_of(bert.norm, ref))


def test_patch_embedding_mask_token_cls_and_positions():
    cfg = get_preset("vision", "tiny", position="learned", use_mask_token=True)
    emb = PatchEmbedding(cfg).eval()
    randomise_(emb)
    images = torch.randn(2, 3, 32, 32)
    mask = torch.zeros(2, 16, dtype=torch.bool)
    mask[0, [1, 5]] = True
    out = emb(images, mask)
    # Patch (row r, col c) is pixels [8r:8r+8, 8c:8c+8]; the conv is a linear map of the flattened patch.
    W = emb.proj.weight.reshape(cfg.dim, -1)
    for b in range(2):
        for n in range(16):
            r, c = divmod(n, 4)
            patch = images[b, :, 8 * r:8 * r + 8, 8 * c:8 * c + 8].reshape(-1)
            token = emb.mask_token[0, 0] if mask[b, n] else W @ patch + emb.proj.bias
            assert_close_scaled(out[b, 1 + n], token + emb.pos_embed[0, 1 + n])
        torch.testing.assert_close(out[b, 0], emb.cls_token[0, 0] + emb.pos_embed[0, 0])


def test_sincos_positions_formula():
    table = sincos_2d(3, 8)  # (9, 8)
    omega = [1.0, 1.0 / 100.0]  # 1 / 10000^(k / 2), k = 0, 1
    for n in range(9):
        r, c = divmod(n, 3)
        ref = [math.sin(r * w) for w in omega] + [math.cos(r * w) for w in omega]
        ref += [math.sin(c * w) for w in omega] + [math.cos(c * w) for w in omega]
        torch.testing.assert_close(table[n], torch.tensor(ref), atol=1e-6, rtol=1e-6)


def test_relative_position_bias_index():
    rpb = RelativePositionBias(grid=3, heads=2)
    with torch.no_grad():
        rpb.table.copy_(torch.randn_like(rpb.table))
    bias = rpb()  # (1, H, 10, 10)
    assert bias.shape == (1, 2, 10, 10)
    span = 5
    for i in range(9):
        for j in range(9):
            dh = i // 3 - j // 3
            dw = i % 3 - j % 3
            torch.testing.assert_close(bias[0, :, 1 + i, 1 + j], rpb.table[(dh + 2) * span + (dw + 2)])
    torch.testing.assert_close(bias[0, :, 0, 4], rpb.table[25])
    torch.testing.assert_close(bias[0, :, 4, 0], rpb.table[26])
    torch.testing.assert_close(bias[0, :, 0, 0], rpb.table[27])


def test_vision_backbone_uses_relative_bias_in_every_block():
    torch.manual_seed(5)
    for shared in (True, False):
        cfg = get_preset("vision", "tiny", shared_rel_pos=shared)
        model = build_backbone(cfg).eval()
        x = torch.randn(2, 3, 32, 32)
        before = model(x)
        with torch.no_grad():
            biases = [model.rel_pos] if shared else list(model.rel_pos)
            for b in biases:
                b.table.add_(torch.randn_like(b.table))
        assert not torch.allclose(before, model(x))


@pytest.mark.parametrize("modality", ["text", "vision"])
def test_gradients_reach_every_parameter(modality):
    torch.manual_seed(6)
    cfg = get_preset(modality, "tiny", use_mask_token=True, type_vocab_size=2) if modality == "vision" else \
        get_preset(modality, "tiny", type_vocab_size=2)
    model = build_backbone(cfg).train()
    if modality == "text":
        ids = torch.randint(0, cfg.vocab_size, (2, 8))
        out = model(ids, token_type_ids=torch.randint(0, 2, (2, 8)))
    else:
        mask = torch.zeros(2, cfg.num_patches, dtype=torch.bool)
        mask[:, :3] = True
        out = model(torch.randn(2, 3, 32, 32), mask=mask)
    (out * torch.randn_like(out)).sum().backward()
    for name, p in model.named_parameters():
        if name == "embed.tokens.weight":  # the padding row gets no gradient by design; the rest must
            assert p.grad is not None and p.grad.abs().sum() > 0
            continue
        assert p.grad is not None and p.grad.abs().sum() > 0, f"no gradient reaches {name}"


def test_same_seed_same_output():
    outs = []
    for _ in range(2):
        torch.manual_seed(7)
        model = build_backbone(get_preset("text", "tiny")).train()  # dropout on: the seed must fix it too
        outs.append(model(torch.arange(10)[None] + 3))
    torch.testing.assert_close(outs[0], outs[1], atol=0, rtol=0)


def test_drop_path_drops_whole_samples():
    from data2vec.transformer import DropPath

    torch.manual_seed(8)
    dp = DropPath(0.5).train()
    x = torch.ones(2000, 3, 4)
    y = dp(x)
    per_sample = y.reshape(2000, -1)
    assert set(per_sample.unique().tolist()) <= {0.0, 2.0}
    assert (per_sample.min(1).values == per_sample.max(1).values).all()  # all or nothing per sample
    assert abs((per_sample[:, 0] == 0).float().mean().item() - 0.5) < 0.05
    assert torch.equal(dp.eval()(x), x)


def test_patch_projection_is_xavier_uniform_and_patch_tokens_have_unit_scale():
    # Xavier-uniform on the (D, C p p) view (MAE, data2vec 2.0): U(-b, b), b = sqrt(6 / (C p p + D)), whatever the
    # `init` scheme; so a patch token of unit-variance pixels has variance C p p * b^2 / 3 = 2 C p p / (C p p + D),
    # about 1 for 4 px and 16 px patches alike (N(0, 0.02) gave 0.02^2 C p p: 0.02 for 4 px RGB patches).
    torch.manual_seed(3)
    for patch, dim, init in ((4, 128, "beit"), (16, 96, "bert")):
        cfg = get_preset("vision", "tiny", image_size=32, patch_size=patch, dim=dim, init=init)
        proj = build_backbone(cfg).embed.proj
        fan_in = 3 * patch * patch
        bound = math.sqrt(6.0 / (fan_in + dim))
        w = proj.weight.detach()
        assert w.abs().max() <= bound and w.abs().max() > 0.95 * bound  # uniform: the edge is reached
        assert abs(w.std().item() - bound / math.sqrt(3)) < 0.05 * bound
        assert abs(w.mean().item()) < 0.02 * bound and proj.bias.abs().max() == 0
        pixels = torch.randn(64, 3, 32, 32)  # unit variance, as after the dataset's mean/std normalisation
        tokens = proj(pixels)  # (64, D, 32 / p, 32 / p)
        expected = 2 * fan_in / (fan_in + dim)
        assert abs(tokens.var().item() - expected) < 0.15 * expected, (patch, tokens.var().item(), expected)


def test_beit_init_rescales_depth():
    torch.manual_seed(9)
    cfg = get_preset("vision", "tiny", depth=4, init="beit")
    model = build_backbone(cfg)
    stds = [b.attn.proj.weight.std().item() for b in model.encoder.blocks]
    for layer_id, s in enumerate(stds, start=1):
        expected = 0.02 * 0.88 / math.sqrt(2 * layer_id)  # truncated normal at 2 sigma has std ~0.88 sigma
        assert abs(s - expected) / expected < 0.2, (layer_id, s, expected)
    text = build_backbone(get_preset("text", "tiny"))
    assert abs(text.encoder.blocks[1].attn.proj.weight.std().item() - 0.02) < 0.003
    assert text.embed.tokens.weight[text.cfg.pad_id].abs().sum() == 0


def test_attention_path_by_sequence_length_and_precision(monkeypatch):
    """On a CPU, float32 sequences up to EXPLICIT_ATTENTION_MAX_T (bf16: EXPLICIT_ATTENTION_MAX_T_BF16) take the
    written-out attention, longer ones torch's fused kernel (3 blocks: 3 calls)."""
    from data2vec.transformer import EXPLICIT_ATTENTION_MAX_T, EXPLICIT_ATTENTION_MAX_T_BF16

    calls = []
    real = F.scaled_dot_product_attention

    def spy(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", spy)
    encoder = Encoder(small_cfg())
    encoder(torch.randn(1, EXPLICIT_ATTENTION_MAX_T, 32))
    assert calls == []
    encoder(torch.randn(1, EXPLICIT_ATTENTION_MAX_T + 1, 32))
    assert len(calls) == 3
    with torch.autocast("cpu", dtype=torch.bfloat16):
        encoder(torch.randn(1, EXPLICIT_ATTENTION_MAX_T_BF16, 32))
        assert len(calls) == 3
        encoder(torch.randn(1, EXPLICIT_ATTENTION_MAX_T_BF16 + 1, 32))
        assert len(calls) == 6


def test_explicit_attention_in_bf16_matches_the_fused_kernel():
    """Under bf16 autocast both paths compute the same attention to bf16's precision (the products in bf16, the
    softmax in float32), with a padding mask."""
    from data2vec.transformer import explicit_attention, padding_to_attn_mask

    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 4, 9, 16) for _ in range(3))
    padding = torch.zeros(2, 9, dtype=torch.bool)
    padding[1, 6:] = True
    mask = padding_to_attn_mask(padding, None, torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ours = explicit_attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), mask)
    fused = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    assert ours.dtype == torch.bfloat16
    assert (ours.float() - fused).abs().max() < 0.05 * fused.abs().max()


def test_smaller_images_reuse_the_relative_table():
    """A 2 x 2 grid (DINO local crop) must see exactly the biases of the same offsets in the 4 x 4 table."""
    rpb = RelativePositionBias(grid=4, heads=2)
    with torch.no_grad():
        rpb.table.copy_(torch.randn_like(rpb.table))
    small = rpb((2, 3))  # (1, H, 7, 7)
    span = 7
    for i in range(6):
        for j in range(6):
            dh = i // 3 - j // 3
            dw = i % 3 - j % 3
            torch.testing.assert_close(small[0, :, 1 + i, 1 + j], rpb.table[(dh + 3) * span + (dw + 3)])
    torch.testing.assert_close(small[0, :, 0, 0], rpb.table[span * span + 2])


@pytest.mark.parametrize("position", ["learned", "sincos", "relative", "none"])
def test_local_crops_pass_through_the_same_vit(position):
    torch.manual_seed(10)
    cfg = get_preset("vision", "tiny", position=position)
    model = build_backbone(cfg).eval()
    full = model(torch.randn(2, 3, 32, 32))
    local = model(torch.randn(2, 3, 16, 16))  # 2 x 2 grid
    assert full.shape == (2, 17, 64) and local.shape == (2, 5, 64)


def test_interpolated_and_recomputed_positions():
    cfg = get_preset("vision", "tiny", position="learned")
    emb = PatchEmbedding(cfg)
    with torch.no_grad():
        emb.pos_embed.copy_(torch.randn_like(emb.pos_embed))
    same = emb.positions_for((4, 4))
    assert same is emb.pos_embed
    smaller = emb.positions_for((2, 2))  # (1, 5, D)
    ref = F.interpolate(emb.pos_embed[:, 1:].reshape(1, 4, 4, -1).permute(0, 3, 1, 2), size=(2, 2), mode="bicubic",
                        align_corners=False).permute(0, 2, 3, 1).reshape(1, 4, -1)
    torch.testing.assert_close(smaller[:, 1:], ref)
    torch.testing.assert_close(smaller[:, 0], emb.pos_embed[:, 0])
    sin = PatchEmbedding(get_preset("vision", "tiny", position="sincos"))
    torch.testing.assert_close(sin.positions_for((2, 3))[0, 1:], sincos_2d((2, 3), 64))
    torch.testing.assert_close(sin.positions_for((4, 4))[0, 1:], sincos_2d(4, 64))
