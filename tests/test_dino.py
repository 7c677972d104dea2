"""DINO: loss vs a reference written here, centre update, schedules vs tables, head, freezing, tiny run."""

import math

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from reference import host_values

from baselines.dino import DINO, DINOConfig, DINOHead
from baselines.dino_loss import DINOLoss, teacher_temp_schedule
from baselines.multicrop import MultiCropTransform, collate_crops


def reference_dino_loss(student, teacher, center, tau_s, tau_t):
    """Eq. (3) with explicit loops over (teacher view i, student view v != i) pairs and batch rows, float64."""
    total, pairs = 0.0, 0
    for i, t in enumerate(teacher):
        for v, s in enumerate(student):
            if v == i:
                continue
            pair = 0.0
            for b in range(t.shape[0]):
                zt = (t[b].double() - center[0].double()) / tau_t
                q = torch.exp(zt - zt.max()) / torch.exp(zt - zt.max()).sum()
                zs = s[b].double() / tau_s
                log_p = zs - (zs.max() + torch.log(torch.exp(zs - zs.max()).sum()))
                pair += -(q * log_p).sum().item()
            total += pair / t.shape[0]
            pairs += 1
    return total / pairs


@pytest.mark.parametrize("n_crops, batch, tau_s, tau_t, n_global", [
    (2, 1, 0.1, 0.04, 2), (4, 3, 0.1, 0.07, 2), (6, 5, 0.2, 0.05, 2), (3, 2, 0.1, 0.04, 1),
])
def test_dino_loss_equals_the_reference(n_crops, batch, tau_s, tau_t, n_global):
    torch.manual_seed(n_crops * 10 + batch)
    K = 32
    student = [torch.randn(batch, K) * 3 for _ in range(n_crops)]
    teacher = [torch.randn(batch, K) * 3 for _ in range(n_global)]
    loss_fn = DINOLoss(K, student_temp=tau_s, center_momentum=0.9)
    loss_fn.center.copy_(torch.randn(1, K))  # a non-zero centre is subtracted before sharpening
    center_before = loss_fn.center.clone()
    loss = loss_fn(student, teacher, tau_t)
    expected = reference_dino_loss(student, teacher, center_before, tau_s, tau_t)
    assert loss.item() == pytest.approx(expected, rel=1e-5, abs=1e-6)


def test_center_update_and_gradients_flow_to_the_student_only():
    torch.manual_seed(0)
    K, B = 16, 4
    loss_fn = DINOLoss(K, center_momentum=0.9)
    c0 = torch.randn(1, K)
    loss_fn.center.copy_(c0)
    student = [torch.randn(B, K, requires_grad=True) for _ in range(4)]
    teacher = [torch.randn(B, K, requires_grad=True) for _ in range(2)]
    loss = loss_fn(student, teacher, 0.04)
    # c <- 0.9 c + 0.1 * mean over the 2 B teacher rows, computed here by hand
    mean = sum(t.detach()[b] for t in teacher for b in range(B)) / (2 * B)
    torch.testing.assert_close(loss_fn.center, 0.9 * c0 + 0.1 * mean[None], rtol=1e-6, atol=1e-6)
    loss.backward()
    assert all(s.grad is not None and s.grad.abs().sum() > 0 for s in student)
    assert all(t.grad is None for t in teacher)  # the teacher is a target, never differentiated


def test_dino_loss_rejects_bad_shapes():
    loss_fn = DINOLoss(8)
    with pytest.raises(ValueError, match="student_out"):
        loss_fn([torch.randn(2, 8), torch.randn(2, 7)], [torch.randn(2, 8)], 0.04)
    with pytest.raises(ValueError, match="teacher_temp"):
        loss_fn([torch.randn(2, 8)] * 2, [torch.randn(2, 8)], 0.0)


def test_teacher_temperature_schedule_table():
    table = {0: 0.04, 1: 0.043, 5: 0.055, 9: 0.067, 10: 0.07, 11: 0.07, 1000: 0.07}
    for step, expected in table.items():
        assert teacher_temp_schedule(step, 10, 0.04, 0.07) == pytest.approx(expected, abs=1e-12)
    assert teacher_temp_schedule(0, 0) == 0.07  # no warm-up: constant end value
    with pytest.raises(ValueError):
        teacher_temp_schedule(0, -1)


def tiny(**overrides):
    values = dict(freeze_last_layer_steps=0, teacher_temp_warmup_steps=0)
    values.update(overrides)
    return DINO(DINOConfig.preset("vision", "tiny", **values))


def crops(B=4, n_local=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {"crops": [torch.randn(B, 3, 32, 32, generator=g) for _ in range(2)]
            + [torch.randn(B, 3, 16, 16, generator=g) for _ in range(n_local)]}


def test_momentum_schedule_table_and_teacher_ema():
    torch.manual_seed(0)
    model = tiny()
    T = 10
    expected = {0: 0.996, 5: 0.998, 10: 1.0}
    for step, m in expected.items():
        teacher = [p.clone() for p in model.teacher.module.parameters()]
        with torch.no_grad():  # move the student so that the average is visible
            for p in model.backbone.parameters():
                p.add_(0.1)
        student = [p.clone() for p in model._student().parameters()]
        stats = model.step_hook(step, T)
        assert stats["momentum"] == pytest.approx(m, abs=1e-12)
        for t_old, s, t_new in zip(teacher, student, model.teacher.module.parameters(), strict=True):
            torch.testing.assert_close(t_new, m * t_old + (1 - m) * s, rtol=1e-6, atol=1e-6)
    # at T/2: 1 - 0.004 * (cos(pi / 2) + 1) / 2 = 0.998, written out
    assert 1 - 0.004 * (math.cos(math.pi * 0.5) + 1) / 2 == pytest.approx(0.998)


def test_teacher_has_no_trainable_parameters_and_stays_in_eval_mode():
    model = tiny()
    model.train()
    assert not model.teacher.module.training
    assert all(not p.requires_grad for p in model.teacher.parameters())
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert trainable == {id(p) for p in model._student().parameters() if p.requires_grad}


def test_weight_normalised_last_layer_keeps_unit_gain():
    torch.manual_seed(0)
    head = DINOHead(16, out_dim=12, hidden_dim=32, bottleneck_dim=8)
    g = head.last_layer.parametrizations.weight.original0
    assert not g.requires_grad and torch.equal(g, torch.ones_like(g))
    opt = torch.optim.AdamW([p for p in head.parameters() if p.requires_grad], lr=0.5)
    for _ in range(3):
        loss = head(torch.randn(5, 16)).pow(2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert torch.equal(g, torch.ones_like(g))  # untouched by training
    rows = head.last_layer.weight.norm(dim=1)  # effective prototypes w_k = g v_k / ||v_k|| have unit norm
    torch.testing.assert_close(rows, torch.ones_like(rows))
    z = F.normalize(head.mlp(torch.randn(3, 16)), dim=-1)  # the L2-normalised bottleneck
    torch.testing.assert_close(z.norm(dim=-1), torch.ones(3))


def test_last_layer_has_no_gradient_while_frozen():
    torch.manual_seed(0)
    model = tiny(freeze_last_layer_steps=2)
    v = model.head.last_layer.parametrizations.weight.original1
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-2, weight_decay=0.5)
    for step in range(3):
        v_before = v.detach().clone()
        loss, stats = model(crops(seed=step))
        stats = host_values(stats)
        opt.zero_grad()
        loss.backward()
        frozen = step < 2
        assert stats["last_layer_frozen"] == float(frozen)
        assert (v.grad is None) == frozen
        assert model.head.mlp[0].weight.grad is not None  # the rest of the student learns
        opt.step()
        assert torch.equal(v, v_before) == frozen  # not even weight decay touches it while frozen
        model.step_hook(step, 10)


def test_local_crops_of_smaller_size_and_stats():
    torch.manual_seed(0)
    model = tiny()
    loss, stats = model(crops(B=3, n_local=3))
    assert torch.isfinite(loss)
    K = model.cfg.out_dim
    for key in ("loss", "teacher_entropy", "teacher_batch_entropy", "center_norm", "teacher_temp"):
        # 0-dim tensors (the engine moves them to the host in one transfer) or floats known on the host
        assert isinstance(stats[key], float) or (torch.is_tensor(stats[key]) and stats[key].dim() == 0)
    stats = host_values(stats)
    assert 0 <= stats["teacher_entropy"] <= stats["teacher_batch_entropy"] + 1e-5 <= math.log(K) + 1e-4
    with pytest.raises(ValueError, match="multi-crop"):
        model({"images": torch.randn(2, 3, 32, 32)})


def test_multicrop_transform_and_collate():
    torch.manual_seed(0)
    tf = MultiCropTransform(32, 16, n_local=3, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    image = torch.randint(0, 256, (3, 40, 40), dtype=torch.uint8)
    out = tf(image)
    assert [tuple(c.shape) for c in out] == [(3, 32, 32)] * 2 + [(3, 16, 16)] * 3
    assert all(c.dtype == torch.float32 for c in out)
    assert -2.0 - 1e-4 <= min(c.min().item() for c in out) and max(c.max().item() for c in out) <= 2.0 + 1e-4
    pil = Image.fromarray(image.permute(1, 2, 0).numpy())
    assert len(tf(pil)) == 5
    batch = collate_crops([(tf(image), 1), (tf(image), 0)])
    assert [tuple(c.shape) for c in batch["crops"]] == [(2, 3, 32, 32)] * 2 + [(2, 3, 16, 16)] * 3
    assert batch["labels"].tolist() == [1, 0]
    with pytest.raises(ValueError, match="channel"):
        MultiCropTransform(32, 16, 1, mean=(0.5,), std=(0.25,))(image)
    with pytest.raises(ValueError, match="local_size"):
        DINOConfig.preset("vision", "tiny", local_size=12)  # not a multiple of the 8 px patch
    # a preset whose local crops do not fit a smaller image gets about 96/224 of it, in whole patches
    assert DINOConfig.preset("vision", "tiny", image_size=8, patch_size=4).local_size == 4


def test_reduced_presets_drop_layer_scale_because_it_makes_the_cls_token_ignore_the_image():
    """The cause of the uniform collapse on tiny runs: with layer scale 1e-4 every block's update is scaled
    by 1e-4 at init, so the CLS output is the same vector for every image; without it images differ."""
    assert DINOConfig.preset("vision", "tiny").encoder.layer_scale is None  # DINO's ViT has none
    assert DINOConfig.preset("vision", "mini").encoder.layer_scale is None
    assert DINOConfig.preset("vision", "tiny", layer_scale=1e-4).encoder.layer_scale == 1e-4  # override wins
    assert DINOConfig.preset("vision", "base").encoder.layer_scale == 1e-4  # the data2vec backbone, unchanged
    x = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    off_diagonal = ~torch.eye(8, dtype=torch.bool)
    cosines = {}
    for layer_scale in (1e-4, None):
        torch.manual_seed(0)
        model = DINO(DINOConfig.preset("vision", "tiny", layer_scale=layer_scale))
        with torch.no_grad():
            cls = F.normalize(model.backbone(x)[:, 0], dim=-1)  # (B, D) CLS features
        cosines[layer_scale] = (cls @ cls.T)[off_diagonal]  # cosine between different images
    assert cosines[1e-4].min() > 0.9999  # practically one output for all images: nothing to bootstrap from
    assert cosines[None].max() < 0.995  # distinguishable images


@pytest.mark.slow  # a multi-second training run (~5 s)
def test_tiny_run_loss_falls_and_teacher_neither_uniform_nor_one_prototype():
    """DINO on tiny images (issue 4), DINO's own ViT (learned positions, no layer scale) at DINO's lr rule
    (5e-4 * 64 / 256). The loss first rises towards log K while the centre catches up (~20 steps), then
    falls; the teacher ends clearly below log K per image (not uniform) with a batch entropy near log K
    (different images on different prototypes, not one)."""
    torch.manual_seed(0)
    model = tiny(position="learned", init="bert", out_dim=64, momentum_base=0.99, teacher_temp_start=0.04,
                 teacher_temp=0.04)
    g = torch.Generator().manual_seed(1)
    images = F.interpolate(torch.randn(256, 3, 4, 4, generator=g), size=32, mode="bilinear")  # smooth, (N, C, H, W)
    params = [p for p in model.parameters() if p.requires_grad]
    T, B, losses, kl = 100, 64, [], []
    opt = torch.optim.AdamW(params, lr=5e-4 * B / 256, weight_decay=0.04)
    for step in range(T):
        x = images[torch.randint(0, 256, (B,), generator=g)]
        views = [x + 0.3 * torch.randn(x.shape, generator=g) for _ in range(2)]  # 2 global crops
        for _ in range(2):  # 2 local 16 px crops at random places
            i, j = torch.randint(0, 17, (2,), generator=g).tolist()
            views.append(x[:, :, i:i + 16, j:j + 16] + 0.3 * torch.randn(B, 3, 16, 16, generator=g))
        loss, stats = model({"crops": views})
        stats = host_values(stats)
        opt.zero_grad()
        loss.backward()
        opt.step()
        model.step_hook(step, T)
        assert math.isfinite(stats["loss"])
        losses.append(stats["loss"])
        kl.append(stats["loss"] - stats["teacher_entropy"])
    log_k = math.log(model.cfg.out_dim)

    def mean(values):
        return sum(values) / len(values)

    settled, last = mean(losses[20:30]), mean(losses[-10:])
    # seeds 0-2 measured: falls by 0.06 / 0.13 / 0.26; per-image entropy 3.61 / 3.72 / 3.33 (log K = 4.16);
    # batch entropy 4.08 / 4.12 / 3.95
    assert last < settled - 0.03, (settled, last)  # the loss falls once the centre has settled
    assert stats["teacher_entropy"] < log_k - 0.2, stats  # sharper than uniform
    assert stats["teacher_batch_entropy"] > 0.8 * log_k, stats  # far from one prototype (0)
    assert mean(kl[-10:]) < mean(kl[20:30]), kl  # and the student matches the teacher better


def test_multicrop_views_stay_finite_on_sharp_float_images():
    """Bicubic resizing of a float image overshoots [0, 1]; torchvision's hue jitter turned such pixels into NaN
    (1 image in 64 of CIFAR-10 at the first update of a DINO run). The crops are clamped back to [0, 1] first:
    over 100 seeded draws of 4 views each no view holds a non-finite value (without the clamp: 4 did)."""
    from baselines.multicrop import MultiCropTransform

    image = torch.zeros(3, 32, 32)
    image[:, ::2, ::2] = 1.0  # a checkerboard: the strongest edges, the largest overshoot
    image[0, 8:16] = 0.9
    transform = MultiCropTransform(32, 16, 2)
    bad = 0
    for seed in range(100):
        torch.manual_seed(seed)
        bad += sum(not torch.isfinite(view).all() for view in transform(image))
    assert bad == 0
