"""Data2Vec v1 end to end: inputs of student and teacher, targets and loss against references built here,
EMA through step_hook, the collapse guard, presets, and tiny training runs (docs/design.md section 4)."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from reference import host_values, instance_norm, layer_norm, smooth_l1

from data2vec.ema import linear_tau
from data2vec.modalities import TEXT, VISION
from data2vec.v1 import CollapseError, Data2Vec, Data2VecConfig

PAD, MASK = 1, 4


def text_batch(B=6, T=20, vocab=1000, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, vocab, (B, T), generator=g)
    lengths = torch.randint(T // 2, T + 1, (B,), generator=g)
    padding = torch.arange(T)[None] >= lengths[:, None]
    ids[:, 0] = 0
    ids[torch.arange(B), lengths - 1] = 2
    ids[padding] = PAD
    return {"input_ids": ids, "padding_mask": padding}


def smooth_images(B=6, seed=0):
    """Low-frequency images: neighbouring patches predict the masked ones."""
    g = torch.Generator().manual_seed(seed)
    return F.interpolate(torch.randn(B, 3, 2, 2, generator=g), size=32, mode="bilinear", align_corners=False)


def tiny(modality, **kw):
    torch.manual_seed(0)
    if modality == "text":  # deterministic student, so references can recompute its output
        kw = {"dropout": 0.0, "attn_dropout": 0.0, **kw}
    return Data2Vec(Data2VecConfig.preset(modality, "tiny", **kw))


# --------------------------------------------------------------------------------------------------
# configs
# --------------------------------------------------------------------------------------------------


def test_base_presets_follow_the_paper_table():
    text = Data2VecConfig.preset("text", "base")
    assert (text.encoder.dim, text.encoder.depth, text.encoder.norm_first) == (768, 12, False)
    assert (text.target, text.top_k, text.layer_norm, text.final_norm) == ("ffn", 10, "layer", "none")
    assert (text.loss_beta, text.loss_reduction, text.ema_scope) == (4.0, "sum", "blocks")
    assert (text.tau_start, text.tau_end, text.tau_ramp_steps) == (0.999, 0.9999, 100_000)
    assert (text.mask_prob, text.random_prob, text.keep_prob, text.mask_id) == (0.15, 0.1, 0.1, 50264)
    vision = Data2VecConfig.preset("vision", "base")
    assert vision.encoder.use_mask_token and vision.encoder.norm_first
    assert (vision.target, vision.top_k, vision.layer_norm, vision.final_norm) == ("block", 6, "layer", "layer")
    assert (vision.loss_beta, vision.loss_reduction, vision.ema_scope) == (2.0, "mean", "encoder")
    assert vision.tau_at(0, 10) == vision.tau_at(10**6, 10) == 0.9998
    assert vision.block_sizes(196) == (120, 16)


def test_reduced_text_presets_use_instance_norm_targets():
    for name in ("tiny", "mini", "small"):
        assert Data2VecConfig.preset("text", name).layer_norm == "instance"
        assert Data2VecConfig.preset("vision", name).layer_norm == "layer"
    assert Data2VecConfig.preset("text", "mini", layer_norm="layer").layer_norm == "layer"  # an override wins


def test_reduced_presets_scale_k_tau_ramp_and_blocks():
    mini = Data2VecConfig.preset("vision", "mini")  # depth 4, 8 x 8 grid
    assert mini.top_k == 3 and mini.block_sizes(64) == (38, 5)
    text = Data2VecConfig.preset("text", "tiny")  # depth 2
    assert text.top_k == 2 and text.mask_id == MASK
    # tau ramp proportional to the run length
    assert text.tau_at(0, 1000) == pytest.approx(text.tau_start)
    assert text.tau_at(150, 1000) == pytest.approx(linear_tau(150, text.tau_start, text.tau_end, 300))
    assert text.tau_at(300, 1000) == text.tau_end
    assert text.tau_at(1500, 5000) == pytest.approx(linear_tau(1500, text.tau_start, text.tau_end, 1500))


def test_overrides_roundtrip_and_errors():
    cfg = Data2VecConfig.preset("text", "tiny", vocab_size=321, top_k=1, text_masking="span", head="mlp")
    assert cfg.encoder.vocab_size == 321 and cfg.top_k == 1 and cfg.mask_prob == 0.35
    back = Data2VecConfig.from_dict(cfg.to_dict())
    assert back == cfg and isinstance(back.special_ids, tuple)
    assert dataclasses.asdict(cfg)["encoder"]["vocab_size"] == 321
    with pytest.raises(ValueError, match="unknown field"):
        Data2VecConfig.preset("text", "tiny", nonsense=1)
    with pytest.raises(ValueError, match="top_k"):
        Data2VecConfig.preset("text", "tiny", top_k=3)
    with pytest.raises(ValueError, match="mask_id"):
        Data2VecConfig.preset("text", "tiny", mask_id=5000)
    with pytest.raises(ValueError, match="loss_reduction"):
        Data2VecConfig.preset("vision", "tiny", loss_reduction="max")


# --------------------------------------------------------------------------------------------------
# what the student and the teacher see
# --------------------------------------------------------------------------------------------------


def test_text_student_sees_mask_exactly_at_masked_positions_and_teacher_the_original():
    model = tiny("text", random_prob=0.0, keep_prob=0.0)
    batch = text_batch()
    seen = {}
    h1 = model.backbone.embed.tokens.register_forward_hook(
        lambda m, i, o: seen.__setitem__("student", i[0].clone()))
    h2 = model.teacher.module.embed.tokens.register_forward_hook(
        lambda m, i, o: seen.__setitem__("teacher", i[0].clone()))
    model(batch, generator=torch.Generator().manual_seed(3))
    h1.remove(), h2.remove()
    _, positions, selected = TEXT.corrupt(model.cfg, batch["input_ids"], batch["padding_mask"],
                                             torch.Generator().manual_seed(3))
    assert torch.equal(positions, selected) and selected.any()
    assert torch.equal(seen["student"] == MASK, selected)
    assert torch.equal(seen["student"][~selected], batch["input_ids"][~selected])
    assert torch.equal(seen["teacher"], batch["input_ids"])
    assert not (selected & batch["padding_mask"]).any()


def test_vision_student_sees_the_mask_embedding_and_teacher_the_clean_image():
    model = tiny("vision")
    images = smooth_images()
    seen = {}
    h1 = model.backbone.embed.register_forward_hook(lambda m, i, o: seen.__setitem__("student", o.detach().clone()))
    h2 = model.teacher.module.embed.register_forward_hook(lambda m, i, o: seen.__setitem__("teacher", (i, o.clone())))
    model({"images": images}, generator=torch.Generator().manual_seed(5))
    h1.remove(), h2.remove()
    mask = VISION.block_mask(model, images, torch.Generator().manual_seed(5))  # (B, N)
    patches = model.backbone.embed.proj(images).flatten(2).transpose(1, 2)  # (B, N, D) clean patch embeddings
    student = seen["student"][:, 1:]  # relative positions only: no absolute position added
    token = model.backbone.embed.mask_token[0, 0]
    assert torch.allclose(student[mask], token.expand(int(mask.sum()), -1))
    torch.testing.assert_close(student[~mask], patches[~mask])
    inputs, teacher_out = seen["teacher"]
    assert len(inputs) == 1 or inputs[1] is None  # no mask given to the teacher
    torch.testing.assert_close(teacher_out[:, 1:], patches, atol=1e-5, rtol=1e-5)


# --------------------------------------------------------------------------------------------------
# targets and loss against references
# --------------------------------------------------------------------------------------------------


def reference_text_loss(model, batch, seed):
    """Targets from hooks on the teacher's FFNs over the unmasked input; loss by Eq. (loss)."""
    cfg = model.cfg
    corrupted, positions, _ = TEXT.corrupt(model.cfg, batch["input_ids"], batch["padding_mask"],
                                              torch.Generator().manual_seed(seed))
    ffn_out = []
    hooks = [b.ffn.register_forward_hook(lambda m, i, o: ffn_out.append(o))
             for b in model.teacher.module.encoder.blocks]
    with torch.no_grad():
        model.teacher.module(batch["input_ids"], batch["padding_mask"])
    for h in hooks:
        h.remove()
    norm = {"layer": layer_norm, "instance": lambda a: instance_norm(a, batch["padding_mask"])}[cfg.layer_norm]
    y = sum(norm(a) for a in ffn_out[-cfg.top_k:]) / cfg.top_k  # (B, T, D)
    x = model.backbone(corrupted, batch["padding_mask"])
    pred = model.head(x)[positions]
    elem = smooth_l1(pred - y[positions], cfg.loss_beta)
    return elem.sum(1).mean(), y[positions], pred  # "sum" reduction: sum over D, mean over tokens


@pytest.mark.parametrize("layer_norm", ["layer", "instance"])  # paper / reduced presets
def test_text_loss_and_targets_match_reference(layer_norm):
    model = tiny("text", loss_beta=0.5, depth=3, top_k=2, layer_norm=layer_norm)
    with torch.no_grad():  # give the teacher different weights than the student
        for p in model.teacher.module.encoder.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    batch = text_batch()
    loss, stats = model(batch, generator=torch.Generator().manual_seed(1))
    stats = host_values(stats)
    ref, target, pred = reference_text_loss(model, batch, 1)
    torch.testing.assert_close(loss, ref, atol=1e-5, rtol=1e-5)
    ref_std = torch.sqrt(target.var(0, unbiased=False) + 1e-6).mean().item()
    assert stats["target_std"] == pytest.approx(ref_std, rel=1e-5)
    ref_pred_std = torch.sqrt(pred.detach().var(0, unbiased=False) + 1e-6).mean().item()
    assert stats["pred_std"] == pytest.approx(ref_pred_std, rel=1e-4)
    from sklearn.metrics import r2_score

    ref_r2 = r2_score(target.numpy(), pred.detach().numpy(), multioutput="variance_weighted")
    assert stats["explained_variance"] == pytest.approx(ref_r2, rel=1e-4, abs=1e-5)
    n_real = (~batch["padding_mask"]).sum().item()
    assert stats["masked_fraction"] == pytest.approx(target.shape[0] / n_real)


def test_vision_loss_and_targets_match_reference():
    model = tiny("vision")
    images = smooth_images()
    with torch.no_grad():
        for p in model.teacher.module.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    loss, _ = model({"images": images}, generator=torch.Generator().manual_seed(2))
    cfg = model.cfg
    mask = VISION.block_mask(model, images, torch.Generator().manual_seed(2))
    outs = []
    hooks = [b.register_forward_hook(lambda m, i, o: outs.append(o[0][:, 1:]))
             for b in model.teacher.module.encoder.blocks]
    with torch.no_grad():
        model.teacher.module(images)
    for h in hooks:
        h.remove()
    y = layer_norm(sum(layer_norm(a) for a in outs[-cfg.top_k:]) / cfg.top_k)  # released: final layer norm
    pred = model.head(model.backbone(images, mask)[:, 1:][mask])
    ref = smooth_l1(pred - y[mask], cfg.loss_beta).mean()  # "mean" reduction
    torch.testing.assert_close(loss, ref, atol=1e-5, rtol=1e-5)


def test_loss_ignores_outputs_at_unmasked_positions():
    model = tiny("text")
    batch = text_batch()
    _, positions, _ = TEXT.corrupt(model.cfg, batch["input_ids"], batch["padding_mask"],
                                   torch.Generator().manual_seed(4))
    base, _ = model(batch, generator=torch.Generator().manual_seed(4))
    noise = torch.randn(*positions.shape, model.cfg.encoder.dim) * 10
    hook = model.backbone.register_forward_hook(lambda m, i, o: o + noise * (~positions)[..., None])
    changed, _ = model(batch, generator=torch.Generator().manual_seed(4))
    hook.remove()
    torch.testing.assert_close(changed, base)
    hook = model.backbone.register_forward_hook(lambda m, i, o: o + noise * positions[..., None])
    moved, _ = model(batch, generator=torch.Generator().manual_seed(4))
    hook.remove()
    assert not torch.allclose(moved, base)


def test_loss_on_mask_token_only_counts_mask_ids():
    model = tiny("text", loss_on="mask_token", random_prob=0.5, keep_prob=0.3)
    batch = text_batch(B=8)
    corrupted, positions, selected = TEXT.corrupt(model.cfg, batch["input_ids"], batch["padding_mask"],
                                                     torch.Generator().manual_seed(0))
    assert torch.equal(positions, selected & (corrupted == MASK))
    assert positions.sum() < selected.sum()


def test_teacher_targets_follow_the_run_precision_and_are_normalised_in_fp32():
    """Under bf16 autocast the teacher's products run in bf16 (the release's ema_same_dtype) and the targets, built
    in fp32, keep their statistics to bf16's precision."""
    model = tiny("vision")
    images = smooth_images()
    _, plain = model({"images": images}, generator=torch.Generator().manual_seed(0))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, mixed = model({"images": images}, generator=torch.Generator().manual_seed(0))
    assert host_values(mixed)["target_std"] == pytest.approx(host_values(plain)["target_std"], rel=2e-2)


# --------------------------------------------------------------------------------------------------
# EMA through step_hook; collapse guard
# --------------------------------------------------------------------------------------------------


def test_step_hook_moves_blocks_by_the_formula_and_shares_text_embeddings():
    model = tiny("text")
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    assert all(not p.requires_grad for p in model.teacher.parameters())
    for step in range(2):
        before = {n: p.clone() for n, p in model.teacher.module.named_parameters()}
        loss, _ = model(text_batch(seed=step))
        opt.zero_grad()
        loss.backward()
        opt.step()
        out = model.step_hook(step, 100)
        tau = model.cfg.tau_at(step, 100)
        assert out == {"tau": tau}
        student = dict(model.backbone.named_parameters())
        for name, p in model.teacher.module.named_parameters():
            if name.startswith("encoder.blocks."):
                torch.testing.assert_close(p, tau * before[name] + (1 - tau) * student[name], rtol=1e-6, atol=1e-7)
            else:
                assert torch.equal(p, student[name]), name
        assert all(p.grad is None for p in model.teacher.parameters())
    _, stats = model(text_batch())
    assert host_values(stats)["tau"] == pytest.approx(model.cfg.tau_at(1, 100))


def test_state_dict_restores_teacher_and_ema_bookkeeping():
    model = tiny("text")
    model.step_hook(41, 100)
    with torch.no_grad():
        model.teacher.module.encoder.blocks[0].ffn.fc1.weight.add_(1.0)
    other = tiny("text")
    other.load_state_dict(model.state_dict())
    assert other.num_updates == 42 and other.tau == model.tau
    assert torch.equal(other.teacher.module.encoder.blocks[0].ffn.fc1.weight,
                       model.teacher.module.encoder.blocks[0].ffn.fc1.weight)


def test_collapse_guard_raises_after_warmup_with_advice():
    model = tiny("text", collapse_min_target_std=100.0, collapse_warmup_steps=2, collapse_patience=2)
    batch = text_batch()
    model(batch)  # before the warm-up: no check
    model.step_hook(0, 10), model.step_hook(1, 10)
    model(batch)  # first step under the threshold
    model.eval()
    model(batch)  # evaluation never raises
    model.train()
    with pytest.raises(CollapseError, match="learning rate") as info:
        model(batch)
    assert "tau" in str(info.value) and "loss_reduction" in str(info.value)
    assert isinstance(info.value, RuntimeError)


def test_a_resumed_run_keeps_the_collapse_counter():
    """The guard's count of steps in a row below a threshold travels with the state dict: a run resumed
    after one such step stops after one more (patience 2), as the uninterrupted run would."""
    settings = dict(collapse_min_target_std=100.0, collapse_warmup_steps=0, collapse_patience=2)
    model = tiny("text", **settings)
    batch = text_batch()
    model(batch)  # one step below the threshold
    assert model.collapse_guard.steps_below == 1
    resumed = tiny("text", **settings)
    resumed.load_state_dict(model.state_dict())
    assert resumed.collapse_guard.steps_below == 1
    with pytest.raises(CollapseError, match="for 2 checks in a row"):
        resumed(batch)


def test_collapse_guard_detects_a_constant_teacher():
    model = tiny("vision", collapse_warmup_steps=0, collapse_patience=1)
    with torch.no_grad():  # a collapsed teacher: every block outputs the same vector for every token
        for block in model.teacher.module.encoder.blocks:
            block.gamma1.zero_(), block.gamma2.zero_()
        model.teacher.module.embed.proj.weight.zero_()
    with pytest.raises(CollapseError, match="target_std"):
        model({"images": smooth_images()})


# --------------------------------------------------------------------------------------------------
# tiny training runs
# --------------------------------------------------------------------------------------------------


def train(model, batch, steps, lr):
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr)
    history = []
    for step in range(steps):
        loss, stats = model(batch, generator=torch.Generator().manual_seed(0))
        opt.zero_grad()
        loss.backward()
        opt.step()
        model.step_hook(step, steps)
        history.append(host_values(stats))
    return history


def test_tiny_text_model_learns_without_collapse():
    model = tiny("text")
    history = train(model, text_batch(B=8, T=24), steps=30, lr=1e-3)
    first, last = history[0], history[-1]
    assert last["loss"] < 0.5 * first["loss"], (first, last)
    assert min(h["target_std"] for h in history) > 0.2


def test_tiny_vision_model_learns_without_collapse():
    model = tiny("vision")
    history = train(model, {"images": smooth_images(B=8)}, steps=30, lr=1e-2)
    first, last = history[0], history[-1]
    assert last["loss"] < 0.7 * first["loss"], (first, last)
    assert min(h["target_std"] for h in history) > 0.2
    assert last["pred_std"] > 0.1


@pytest.mark.parametrize("field, value", [("tau_end", 1.5), ("tau_ramp_steps", -1), ("collapse_patience", 0),
                                          ("collapse_min_target_std", -0.1)])
def test_v1_and_v2_refuse_the_same_bad_teacher_fields(field, value):
    from data2vec.v2 import Data2Vec2Config

    for config in (Data2VecConfig, Data2Vec2Config):
        with pytest.raises(ValueError, match=field):
            config.preset("vision", "tiny", **{field: value})
