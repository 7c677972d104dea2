"""Targets against a reference built here from forward hooks on the blocks (docs/design.md section 4, step 3)."""

import pytest
import torch
from reference import instance_norm, layer_norm

from data2vec import build_backbone, get_preset
from data2vec.targets import build_targets


def hooked_layers(model, kind, run):
    """Collect per-block tensors with hooks: the FFN module's output ("ffn") or the block's output ("block")."""
    captured, handles = [], []
    for block in model.encoder.blocks:
        if kind == "ffn":
            handles.append(block.ffn.register_forward_hook(lambda m, i, o: captured.append(o.detach())))
        else:
            handles.append(block.register_forward_hook(lambda m, i, o: captured.append(o[0].detach())))
    run()
    for h in handles:
        h.remove()
    return captured


def text_model(depth=4):
    torch.manual_seed(0)
    cfg = get_preset("text", "tiny", depth=depth, vocab_size=60, max_positions=30, dropout=0.0, attn_dropout=0.0)
    return build_backbone(cfg).eval()


def batch(B=3, T=12):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(4, 60, (B, T), generator=g)
    padding = torch.zeros(B, T, dtype=torch.bool)
    padding[1, 8:] = True
    padding[2, 5:] = True
    ids[padding] = 1
    return ids, padding


@pytest.mark.parametrize("kind", ["ffn", "block"])
@pytest.mark.parametrize("top_k", [1, 3, 4])
def test_layer_norm_targets_match_hooks(kind, top_k):
    model = text_model()
    ids, padding = batch()
    with torch.no_grad():
        _, layers = model(ids, padding, return_layers=kind)
        ref_layers = hooked_layers(model, kind, lambda: model(ids, padding))
    assert len(layers) == len(ref_layers) == 4
    ours = build_targets(layers, top_k, layer_norm="layer", final_norm="none", padding_mask=padding)
    ref = sum(layer_norm(x) for x in ref_layers[-top_k:]) / top_k
    ref[padding] = 0.0
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)


def test_exactly_the_top_k_layers_are_used():
    B, T, D = 2, 5, 8
    layers = [torch.full((B, T, D), float(i)) + torch.randn(B, T, D) * 0.01 * i for i in range(6)]
    ours = build_targets(layers, 2, layer_norm="none", final_norm="none")
    torch.testing.assert_close(ours, (layers[4] + layers[5]) / 2)
    # changing a layer below the top K changes nothing
    changed = list(layers)
    changed[3] = torch.randn(B, T, D) * 100
    torch.testing.assert_close(build_targets(changed, 2, layer_norm="layer"),
                               build_targets(layers, 2, layer_norm="layer"))


def test_final_layer_norm_after_averaging():
    g = torch.Generator().manual_seed(0)
    layers = [torch.randn(2, 7, 16, generator=g) * (i + 1) + i for i in range(4)]
    ours = build_targets(layers, 3, layer_norm="layer", final_norm="layer")
    ref = layer_norm(sum(layer_norm(x) for x in layers[-3:]) / 3)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)
    per_token = ours.mean(-1)
    assert per_token.abs().max() < 1e-5


def test_instance_norm_ignores_padding():
    g = torch.Generator().manual_seed(0)
    _, padding = batch(B=3, T=12)
    layers = [torch.randn(3, 12, 8, generator=g) * 3 + 2 for _ in range(3)]
    ours = build_targets(layers, 2, layer_norm="instance", final_norm="instance", padding_mask=padding)
    ref = instance_norm(sum(instance_norm(x, padding) for x in layers[-2:]) / 2, padding)
    ref[padding] = 0.0
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)
    # changing the padded positions' values changes no target
    noisy = [x.masked_fill(padding[..., None], 1e4) for x in layers]
    torch.testing.assert_close(build_targets(noisy, 2, layer_norm="instance", padding_mask=padding),
                               build_targets(layers, 2, layer_norm="instance", padding_mask=padding))


def test_padding_never_influences_targets_through_the_encoder():
    model = text_model()
    ids, padding = batch()
    other = ids.clone()
    other[padding] = 7  # different (ignored) content at padded positions
    with torch.no_grad():
        a = build_targets(model(ids, padding, return_layers="ffn")[1], 3, layer_norm="instance", padding_mask=padding)
        b = build_targets(model(other, padding, return_layers="ffn")[1], 3, layer_norm="instance", padding_mask=padding)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_bad_arguments():
    layers = [torch.randn(2, 3, 4) for _ in range(3)]
    with pytest.raises(ValueError, match="top_k"):
        build_targets(layers, 4)
    with pytest.raises(ValueError, match="layer_norm"):
        build_targets(layers, 2, layer_norm="batch")
    with pytest.raises(ValueError, match="padding_mask"):
        build_targets(layers, 2, padding_mask=torch.zeros(2, 3))
