"""data2vec 2.0 (docs/design.md section 5; issue 13 item 5): the visible-only student, the teacher's targets, the
decoder input, the loss, the EMA bookkeeping and tiny training runs. The configuration and the conv decoders are
tested in test_v2_config.py.

Independent references written here: the visible-token embedding order (positions -> gather -> CLS -> LayerNorm)
and the loss as explicit Python loops over rows and masked tokens; instance norm and layer norm by hand (mean /
biased variance) are `reference.norm_by_hand`.
"""

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from reference import host_values, layer_norm_of, norm_by_hand

from data2vec.config import get_preset
from data2vec.diagnostics import CollapseError
from data2vec.v2 import Data2Vec2, Data2Vec2Config

PAD = 1


def vision_model(seed=0, **overrides):
    torch.manual_seed(seed)
    return Data2Vec2(Data2Vec2Config.preset("vision", "tiny", **overrides))


def text_model(seed=0, **overrides):
    torch.manual_seed(seed)
    return Data2Vec2(Data2Vec2Config.preset("text", "tiny", **overrides))


def images(B=3, seed=1):
    return torch.randn(B, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def text_batch(B=3, T=16, seed=1):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 1000, (B, T), generator=g)
    padding = torch.zeros(B, T, dtype=torch.bool)
    padding[1, 10:] = True  # one padded row
    ids[padding] = PAD
    return {"input_ids": ids, "padding_mask": padding}


# --------------------------------------------------------------------------------------------------
# the visible-only student path in the core
# --------------------------------------------------------------------------------------------------


def test_visible_embedding_adds_positions_before_the_gather_and_cls_after():
    model = vision_model().eval()
    emb = model.backbone.embed
    x = images(B=2)
    mask = model.make_masks({"images": x}, torch.Generator().manual_seed(0))  # (2 * M, 16)
    got, padding = emb.forward_visible(x, ~mask)
    assert padding is None  # equal kept counts
    # reference: patch conv, + sin-cos of each patch's own position, keep the visible ones, CLS first, LN
    patches = F.conv2d(x, emb.proj.weight, emb.proj.bias, stride=8).flatten(2).transpose(1, 2)  # (2, 16, D)
    patches = patches + emb.pos_embed[0, 1:]
    M = model.cfg.num_masks
    rows = []
    for r in range(mask.shape[0]):
        seq = torch.cat([emb.cls_token[0], patches[r // M][~mask[r]]])  # (1 + K, D); CLS has no position
        rows.append(layer_norm_of(emb.embed_norm, seq))
    torch.testing.assert_close(got, torch.stack(rows), rtol=1e-5, atol=1e-5)


def test_visible_path_with_everything_visible_equals_the_full_forward():
    model = vision_model().eval()
    x = images(B=2)
    all_visible = torch.ones(2, 16, dtype=torch.bool)
    torch.testing.assert_close(model.backbone.forward_visible(x, all_visible), model.backbone(x),
                               rtol=1e-5, atol=1e-5)


def test_relative_position_encoders_refuse_the_visible_path():
    torch.manual_seed(0)
    from data2vec.backbone import build_backbone

    backbone = build_backbone(get_preset("vision", "tiny"))  # BEiT-style relative bias
    with pytest.raises(ValueError, match="relative position bias"):
        backbone.forward_visible(images(B=1), torch.ones(1, 16, dtype=torch.bool))


def test_cls_token_is_initialised_standard_normal():
    torch.manual_seed(0)
    cfg = Data2Vec2Config.preset("vision", "base")
    from data2vec.backbone import build_backbone

    cls = build_backbone(cfg.encoder).embed.cls_token.flatten()
    assert 0.9 < cls.std().item() < 1.1 and cls.abs().max() > 2.0  # N(0, 1), not truncated at 2 sigma


@pytest.mark.parametrize("modality", ["vision", "text"])
def test_student_output_ignores_the_content_of_masked_tokens(modality):
    model = (vision_model() if modality == "vision" else text_model()).eval()
    batch = {"images": images()} if modality == "vision" else text_batch()
    mask = model.make_masks(batch, torch.Generator().manual_seed(0))
    M = model.cfg.num_masks
    first = mask[0::M]  # (B, N): the first clone's mask of every sample
    changed = dict(batch)
    if modality == "vision":
        pixels = first.view(-1, 1, 4, 1, 4, 1).expand(-1, 3, 4, 8, 4, 8).reshape(-1, 3, 32, 32)  # masked pixels
        changed["images"] = torch.where(pixels, torch.randn_like(batch["images"]) * 5, batch["images"])
    else:
        changed["input_ids"] = torch.where(first, torch.full_like(batch["input_ids"], 7), batch["input_ids"])
    out_a, cls_a = model.forward_student(batch, mask[0::M], torch.Generator().manual_seed(1))
    out_b, cls_b = model.forward_student(changed, mask[0::M], torch.Generator().manual_seed(1))
    assert torch.equal(out_a, out_b)
    if cls_a is not None:
        assert torch.equal(cls_a, cls_b)
    # the test can fail: changing a visible token does change the output
    visible_pos = (~first[0]).nonzero()[0].item()
    other = dict(batch)
    if modality == "vision":
        other["images"] = batch["images"].clone()
        r, c = divmod(visible_pos, 4)
        other["images"][0, :, r * 8:(r + 1) * 8, c * 8:(c + 1) * 8] += 3.0
    else:
        other["input_ids"] = batch["input_ids"].clone()
        other["input_ids"][0, visible_pos] = 8
    out_c, _ = model.forward_student(other, mask[0::M], torch.Generator().manual_seed(1))
    assert not torch.allclose(out_a, out_c)


def test_padded_text_rows_decode_as_without_padding():
    model = text_model().eval()
    batch = text_batch()
    mask = model.make_masks(batch, torch.Generator().manual_seed(0))
    M = model.cfg.num_masks
    row = 1  # the padded sample: 10 real tokens, then pads
    short = {"input_ids": batch["input_ids"][row:row + 1, :10], "padding_mask": batch["padding_mask"][row:row + 1, :10]}
    model.cfg.mask_noise_std = 0.0  # the two calls draw different noise; without it they must agree exactly
    out, _ = model.forward_student(batch, mask, None)  # (B * M, 16, D)
    alone, _ = model.forward_student(short, mask[row * M:(row + 1) * M, :10], None)  # (M, 10, D)
    torch.testing.assert_close(out[row * M:(row + 1) * M, :10], alone, rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------------------------------
# the teacher
# --------------------------------------------------------------------------------------------------


def count_teacher_calls(model):
    calls = []
    target = model.teacher.module.encoder.blocks[0]
    target.register_forward_pre_hook(lambda module, args: calls.append(args[0].shape[0]))
    return calls


@pytest.mark.parametrize("num_masks", [1, 4])
def test_teacher_runs_once_per_step_on_the_batch_whatever_m(num_masks):
    for model, batch in ((vision_model(num_masks=num_masks), {"images": images(B=3)}),
                         (text_model(num_masks=num_masks), text_batch(B=3))):
        calls = count_teacher_calls(model)
        model(batch)
        assert calls == [3]  # one pass, B rows (not B * M)


def test_vision_targets_equal_instance_norm_top_k_average_layer_norm_from_the_teacher_layers():
    model = vision_model(depth=3, prenet_depth=1, top_k=2).eval()
    x = images()
    targets, cls_target = model.forward_teacher({"images": x})
    _, layers = model.teacher(x, return_layers="ffn")  # 3 x (B, 1 + N, D)
    shared = layers[1:]  # the prenet block is never a target
    normed = [norm_by_hand(layer[:, 1:], dim=1) for layer in shared[-2:]]  # CLS dropped, IN over tokens
    expected = norm_by_hand(sum(normed) / 2, dim=-1)  # average, then layer norm over D
    torch.testing.assert_close(targets, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(cls_target, expected.mean(dim=1), rtol=1e-5, atol=1e-5)
    # the top K never reaches a prenet block: a K that would is refused
    with pytest.raises(ValueError, match=r"Data2Vec2Config\.top_k"):
        Data2Vec2Config.preset("vision", "tiny", depth=3, prenet_depth=1, top_k=3)


def test_text_targets_use_real_tokens_only_and_no_final_norm():
    model = text_model(depth=3, top_k=2).eval()
    batch = text_batch()
    targets, cls_target = model.forward_teacher(batch)
    assert cls_target is None
    _, layers = model.teacher(batch["input_ids"], batch["padding_mask"], return_layers="ffn")
    for b in range(3):
        real = ~batch["padding_mask"][b]
        expected = sum(norm_by_hand(layer[b][real], dim=0) for layer in layers[-2:]) / 2  # IN over real tokens
        torch.testing.assert_close(targets[b][real], expected, rtol=1e-5, atol=1e-5)
        assert (targets[b][~real] == 0).all()


# --------------------------------------------------------------------------------------------------
# the decoder input (the conv decoders themselves: test_v2_config.py)
# --------------------------------------------------------------------------------------------------


def test_decoder_input_keeps_student_tokens_and_puts_noise_only_at_masked_slots():
    model = vision_model().train()
    R, N, K, D = 400, 16, 3, 64
    visible = torch.zeros(R, N, dtype=torch.bool)  # (R, N) True = visible, K per row
    for r in range(R):
        visible[r, torch.randperm(N)[:K]] = True
    tokens = torch.randn(R, K, D)
    full = model.decoder_input(tokens, visible, torch.Generator().manual_seed(0))
    for r in range(5):
        assert torch.equal(full[r][visible[r]], tokens[r])  # no positions added, order restored
    noise = full[~visible]
    assert abs(noise.mean().item()) < 1e-3 and abs(noise.std().item() - 0.01) < 5e-4  # N(0, 0.01^2)


# --------------------------------------------------------------------------------------------------
# the loss
# --------------------------------------------------------------------------------------------------


def loss_by_hand(decoded, cls_pred, targets, cls_target, mask, scale, cls_weight, M):
    reg, count = 0.0, 0
    for r in range(decoded.shape[0]):
        for n in range(decoded.shape[1]):
            if mask[r, n]:
                reg += scale * ((decoded[r, n] - targets[r // M, n]) ** 2).sum().item()
                count += 1
    total = reg / count
    if cls_pred is not None:
        total += cls_weight * sum(scale * ((cls_pred[r] - cls_target[r // M]) ** 2).sum().item()
                                  for r in range(decoded.shape[0]))  # summed over rows, not averaged
    return total


def test_vision_loss_matches_hand_computation_with_cls_term_and_inverse_sqrt_d_scale():
    model = vision_model(num_masks=3)
    B, M, N, D = 2, 3, 16, 64
    g = torch.Generator().manual_seed(0)
    decoded, targets = torch.randn(B * M, N, D, generator=g), torch.randn(B, N, D, generator=g)
    cls_pred, cls_target = torch.randn(B * M, D, generator=g), torch.randn(B, D, generator=g)
    mask = torch.rand(B * M, N, generator=g) < 0.7
    got = model.forward_loss(decoded, cls_pred, targets, cls_target, mask).item()
    expected = loss_by_hand(decoded, cls_pred, targets, cls_target, mask, 1 / math.sqrt(D), 0.01, M)
    assert got == pytest.approx(expected, rel=1e-5)


def test_text_loss_uses_scale_one_and_no_cls_term():
    model = text_model(num_masks=2)
    B, M, N, D = 2, 2, 9, 64
    g = torch.Generator().manual_seed(1)
    decoded, targets = torch.randn(B * M, N, D, generator=g), torch.randn(B, N, D, generator=g)
    mask = torch.rand(B * M, N, generator=g) < 0.5
    got = model.forward_loss(decoded, None, targets, None, mask).item()
    assert got == pytest.approx(loss_by_hand(decoded, None, targets, None, mask, 1.0, 0.0, M), rel=1e-5)


# --------------------------------------------------------------------------------------------------
# the training step, stats, EMA, collapse guard
# --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("modality", ["vision", "text"])
def test_forward_returns_detached_scalar_stats(modality):
    model = vision_model() if modality == "vision" else text_model()
    batch = {"images": images()} if modality == "vision" else text_batch()
    loss, stats = model(batch)
    assert loss.requires_grad and loss.dim() == 0
    assert {"loss", "target_std", "pred_std", "explained_variance", "tau", "masked_fraction"} <= set(stats)
    assert all(torch.is_tensor(v) and v.dim() == 0 and not v.requires_grad for v in stats.values())
    stats = host_values(stats)
    assert stats["explained_variance"] <= 1.0
    if modality == "vision":
        assert stats["masked_fraction"] == pytest.approx(1 - int(16 * 0.2) / 16)  # 13 of 16
    else:
        real = (~batch["padding_mask"]).sum(1)
        masked = sum(int(n) - max(1, int(int(n) * 0.52)) for n in real)
        assert stats["masked_fraction"] == pytest.approx(masked / real.sum().item())


def test_teacher_excludes_the_decoder_and_step_hook_follows_the_tau_schedule():
    model = vision_model()
    assert not any("decoder" in name for name, _ in model.teacher.named_parameters())
    assert model.teacher.scope == "encoder" and text_model().teacher.scope == "blocks"
    total = 100  # tiny: 0.99 -> 0.999 over 30% of the run
    for step, tau in ((0, 0.99), (15, 0.9945), (30, 0.999), (99, 0.999)):
        assert model.step_hook(step, total)["tau"] == pytest.approx(tau)
    assert model.num_updates == 100
    state = model.state_dict()
    fresh = vision_model(seed=5)
    fresh.load_state_dict(state)
    assert (fresh.tau, fresh.num_updates) == (model.tau, model.num_updates)


def test_collapse_guard_stops_training_only():
    model = vision_model(collapse_min_target_std=100.0, collapse_warmup_steps=0, collapse_patience=2)
    batch = {"images": images()}
    model.eval()
    for _ in range(3):
        model(batch)  # evaluation never raises
    model.train()
    model(batch)
    with pytest.raises(CollapseError, match="data2vec2 collapsed"):
        model(batch)


def synthetic_data(modality):
    g = torch.Generator().manual_seed(123)
    if modality == "vision":
        return F.interpolate(torch.randn(32, 3, 4, 4, generator=g), size=32, mode="bilinear")  # smooth images
    return torch.randint(5, 50, (32, 8), generator=g).repeat(1, 4)  # repeated phrases


def train(model, modality, steps, start=0, optimizer=None, total=30):
    data = synthetic_data(modality)
    optimizer = optimizer or torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    losses, stats = [], None
    for step in range(start, start + steps):
        torch.manual_seed(1000 + step)  # as the engine: the global RNG seeded before every forward
        idx = torch.randint(0, 32, (8,))
        if modality == "vision":
            batch = {"images": data[idx]}
        else:
            batch = {"input_ids": data[idx], "padding_mask": torch.zeros(8, 32, dtype=torch.bool)}
        loss, stats = model(batch)
        stats = host_values(stats)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        model.step_hook(step, total)
        losses.append(loss.item())
    return losses, stats, optimizer


@pytest.mark.parametrize("modality", ["vision", "text"])
def test_tiny_run_loss_falls_without_collapse(modality):
    model = vision_model() if modality == "vision" else text_model()
    losses, stats, _ = train(model, modality, 30)
    first, last = sum(losses[:5]) / 5, sum(losses[-5:]) / 5
    assert last < 0.8 * first, losses
    assert stats["target_std"] > 0.3  # the targets still differ between tokens


@pytest.mark.parametrize("modality", ["vision", "text"])
def test_tiny_run_is_deterministic_and_resumes_exactly_from_the_state_dicts(modality):
    make = vision_model if modality == "vision" else text_model
    straight, _, _ = train(make(), modality, 6)
    again, _, _ = train(make(), modality, 6)
    assert straight == again
    model = make()
    head, _, optimizer = train(model, modality, 3)
    saved = copy.deepcopy({"model": model.state_dict(), "optim": optimizer.state_dict()})
    resumed = make(seed=99)  # different init: everything must come from the state dicts
    resumed.load_state_dict(saved["model"])
    opt2 = torch.optim.AdamW([p for p in resumed.parameters() if p.requires_grad], lr=1e-3)
    opt2.load_state_dict(saved["optim"])
    tail, _, _ = train(resumed, modality, 3, start=3, optimizer=opt2)
    assert head + tail == straight
