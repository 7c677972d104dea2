"""Supervised floor: the shared method interface, the loss vs a reference written here, learning."""

import dataclasses

import pytest
import torch
from reference import host_values

from baselines import BertMLMConfig, DINOConfig
from baselines.supervised import Supervised, SupervisedConfig
from data2vec.methods import METHODS


def test_loss_and_accuracy_equal_the_reference():
    torch.manual_seed(0)
    model = Supervised(SupervisedConfig.preset("vision", "tiny", num_classes=5))
    images, labels = torch.randn(6, 3, 32, 32), torch.tensor([0, 1, 2, 3, 4, 0])
    loss, stats = model({"images": images, "labels": labels})
    logits = model.logits({"images": images}).detach()
    # label-smoothed cross-entropy written out: q = (1 - eps) onehot + eps / C
    eps, C = 0.1, 5
    q = torch.full((6, C), eps / C)
    q[torch.arange(6), labels] += 1 - eps
    expected = -(q * logits.log_softmax(-1)).sum(-1).mean()
    torch.testing.assert_close(loss.detach(), expected, rtol=1e-5, atol=1e-6)
    assert host_values(stats)["accuracy"] == pytest.approx((logits.argmax(-1) == labels).float().mean().item())
    assert model.step_hook(0, 1) == {}


def test_text_classification_and_regression():
    torch.manual_seed(0)
    ids = torch.randint(5, 1000, (3, 12))
    padding = torch.zeros(3, 12, dtype=torch.bool)
    padding[0, 8:] = True
    cls = Supervised(SupervisedConfig.preset("text", "tiny"))
    loss, stats = cls({"input_ids": ids, "padding_mask": padding, "labels": torch.tensor([0, 1, 1])})
    assert set(stats) == {"loss", "accuracy"} and cls.cfg.label_smoothing == 0.0
    reg = Supervised(SupervisedConfig.preset("text", "tiny", num_classes=1, dropout=0.0, attn_dropout=0.0,
                                             head_dropout=0.0))
    target = torch.tensor([0.5, 2.0, 4.5])
    loss, stats = reg({"input_ids": ids, "padding_mask": padding, "labels": target})
    pred = reg.logits({"input_ids": ids, "padding_mask": padding}).detach().reshape(-1)
    assert loss.item() == pytest.approx(((pred - target) ** 2).mean().item(), rel=1e-5)
    with pytest.raises(ValueError, match="labels"):
        cls({"input_ids": ids})


def test_learns_a_separable_toy_problem():
    torch.manual_seed(0)
    model = Supervised(SupervisedConfig.preset("vision", "tiny", num_classes=2, label_smoothing=0.0))
    images = torch.randn(16, 3, 32, 32)
    labels = torch.arange(16) % 2
    images[labels == 1, 0] += 1.5  # class 1: a brighter red channel
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(25):
        loss, stats = model({"images": images, "labels": labels})
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(stats["loss"])
    assert losses[-1] < 0.5 * losses[0]
    assert model({"images": images, "labels": labels})[1]["accuracy"] == 1.0


@pytest.mark.parametrize("name, modality", [(n, m) for n, spec in METHODS.items() for m in spec.modalities])
def test_every_method_shares_the_interface(name, modality):
    config_cls, method_cls = METHODS[name].config_class, METHODS[name].method_class
    cfg = config_cls.preset(modality, "tiny")
    assert dataclasses.asdict(cfg)["encoder"]["modality"] == modality
    method = method_cls(cfg)
    assert method.cfg is cfg and method.backbone.cfg == cfg.encoder
    assert callable(method.step_hook)
    with pytest.raises(ValueError, match="unknown"):
        config_cls.preset(modality, "tiny", no_such_field=1)


def test_presets_follow_the_published_recipes():
    dino = DINOConfig.preset("vision", "base")
    assert (dino.out_dim, dino.hidden_dim, dino.bottleneck_dim) == (65536, 2048, 256)
    temps = (dino.student_temp, dino.teacher_temp_start, dino.teacher_temp, dino.center_momentum)
    assert temps == (0.1, 0.04, 0.07, 0.9)
    assert (dino.momentum_base, dino.global_scale, dino.local_scale) == (0.996, (0.4, 1.0), (0.05, 0.4))
    assert DINOConfig.preset("vision", "small").out_dim == 4096
    bert = BertMLMConfig.preset("text", "base")
    assert (bert.mask_prob, bert.random_prob, bert.keep_prob) == (0.15, 0.1, 0.1)
    assert (bert.encoder.dim, bert.encoder.depth) == (768, 12)
    with pytest.raises(ValueError, match="vision"):
        DINOConfig.preset("text", "tiny")
