"""Frozen-feature evaluation (data2vec/probe.py) against independent computations, and `data2vec probe`."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from data2vec.probe import (
    extract_features,
    few_label_indices,
    knn_classify,
    knn_predict,
    linear_probe,
    pool_tokens,
    standardize,
)

# ---- pooling ---------------------------------------------------------------------------------------------


def test_pool_tokens_vision_mean_drops_cls_and_cls_takes_first():
    tokens = torch.arange(2 * 4 * 3, dtype=torch.float32).reshape(2, 4, 3)  # (B=2, 1+N=4, D=3)
    mean = pool_tokens(tokens, "mean")
    for b in range(2):
        expected = [sum(tokens[b, t, d].item() for t in (1, 2, 3)) / 3 for d in range(3)]
        assert mean[b].tolist() == pytest.approx(expected)
    assert torch.equal(pool_tokens(tokens, "cls"), tokens[:, 0])


def test_pool_tokens_text_mean_ignores_padding():
    tokens = torch.randn(2, 5, 4)
    pad = torch.tensor([[False, False, True, True, True], [False, False, False, False, True]])
    pooled = pool_tokens(tokens, "mean", padding_mask=pad, has_cls=False)
    assert torch.allclose(pooled[0], (tokens[0, 0] + tokens[0, 1]) / 2)
    assert torch.allclose(pooled[1], tokens[1, :4].sum(0) / 4)
    with pytest.raises(ValueError, match="pooling"):
        pool_tokens(tokens, "max")


def test_extract_features_restores_mode_and_matches_direct_call():
    from data2vec.backbone import build_backbone
    from data2vec.config import vision_preset

    backbone = build_backbone(vision_preset("tiny", image_size=8, patch_size=2, in_chans=1))
    backbone.train()
    images = torch.randn(6, 1, 8, 8)
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    batches = [{"images": images[:4], "labels": labels[:4]}, (images[4:], labels[4:])]
    x, y = extract_features(backbone, batches, pooling="mean")
    assert backbone.training
    backbone.eval()
    with torch.no_grad():
        direct = backbone(images)[:, 1:].mean(1)
    assert x.shape == (6, 64) and np.allclose(x, direct.numpy(), atol=1e-5)
    assert y.tolist() == labels.tolist()


# ---- k-NN: votes computed by hand ----------------------------------------------------------------------


def test_knn_weighted_votes_by_hand():
    # three training points on the unit circle, one query; cosine similarities are cos(angle difference)
    angles = np.array([0.0, 0.3, 1.2])
    train = np.stack([np.cos(angles), np.sin(angles)], 1) * np.array([[1.0], [5.0], [2.0]])  # norms differ
    labels = np.array([0, 1, 1])
    query = np.array([[math.cos(0.1), math.sin(0.1)]])
    sims = np.cos(angles - 0.1)
    T = 0.07
    # k = 2: neighbours 0 (sim cos 0.1) and 1 (sim cos 0.2); class 0 gets exp(cos .1 / T) > class 1's
    votes = {0: math.exp(sims[0] / T), 1: math.exp(sims[1] / T)}
    assert knn_predict(train, labels, query, k=2, temperature=T).tolist() == [max(votes, key=votes.get)] == [0]
    # k = 3 with a large temperature: weights become almost equal, so class 1 (two votes) wins
    w = np.exp(sims / 10.0)
    assert w[1] + w[2] > w[0]
    assert knn_predict(train, labels, query, k=3, temperature=10.0).tolist() == [1]
    # majority vote (temperature None) with k = 3: two votes for class 1
    assert knn_predict(train, labels, query, k=3, temperature=None).tolist() == [1]


def test_knn_matches_brute_force_on_random_data():
    rng = np.random.default_rng(0)
    train, labels = rng.normal(size=(40, 5)), rng.integers(0, 4, size=40)
    test = rng.normal(size=(15, 5))
    k, T = 7, 0.5
    tn = train / np.linalg.norm(train, axis=1, keepdims=True)
    qn = test / np.linalg.norm(test, axis=1, keepdims=True)
    expected = []
    for q in qn:
        sims = tn @ q
        top = np.argsort(-sims)[:k]
        score = np.zeros(4)
        for j in top:
            score[labels[j]] += math.exp(sims[j] / T)
        expected.append(int(np.argmax(score)))
    assert knn_predict(train, labels, test, k=k, temperature=T, chunk=4).tolist() == expected
    result = knn_classify(train, labels, test, np.array(expected), k=k, temperature=T)
    assert result["accuracy"] == 100.0


# ---- linear probe ---------------------------------------------------------------------------------------


def test_standardize_uses_train_statistics():
    train = np.array([[1.0, 10.0], [3.0, 30.0]])
    test = np.array([[2.0, 50.0]])
    a, b = standardize(train, test, eps=0.0)
    assert np.allclose(a, [[-1, -1], [1, 1]])
    assert np.allclose(b, [[0.0, 3.0]])


def test_linear_probe_matches_sklearn_refit_with_the_chosen_C():
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(1)
    centres = rng.normal(scale=2.0, size=(3, 6))
    y_tr, y_te = rng.integers(0, 3, 60), rng.integers(0, 3, 90)
    x_tr = centres[y_tr] + rng.normal(size=(60, 6))
    x_te = centres[y_te] + rng.normal(size=(90, 6))
    result = linear_probe(x_tr, y_tr, x_te, y_te, Cs=(0.01, 1.0), folds=3)
    assert result["C"] in (0.01, 1.0)
    mean, std = x_tr.mean(0), x_tr.std(0) + 1e-6
    ref = LogisticRegression(C=result["C"], max_iter=1000).fit((x_tr - mean) / std, y_tr)
    expected = 100.0 * (ref.predict((x_te - mean) / std) == y_te).mean()
    assert result["accuracy"] == pytest.approx(expected)
    assert result["accuracy"] > 80.0  # well separated clusters


def test_few_label_indices_per_class_and_seeded():
    labels = np.repeat(np.arange(4), 10)
    idx = few_label_indices(labels, 3, seed=5)
    assert np.bincount(labels[idx]).tolist() == [3, 3, 3, 3]
    assert idx.tolist() == few_label_indices(labels, 3, seed=5).tolist()
    assert idx.tolist() != few_label_indices(labels, 3, seed=6).tolist()


# ---- the command ----------------------------------------------------------------------------------------


def _write_image_folder(root, n_per_class=6, size=8):
    from PIL import Image

    rng = np.random.default_rng(0)
    for c, name in enumerate(["a", "b"]):
        (root / name).mkdir(parents=True)
        for i in range(n_per_class):
            arr = np.full((size, size, 3), 40 + 160 * c, dtype=np.uint8)
            arr = np.clip(arr + rng.integers(-30, 30, size=arr.shape), 0, 255).astype(np.uint8)
            Image.fromarray(arr).save(root / name / f"{i}.png")


def test_probe_command_on_image_folder_with_random_checkpoint(tmp_path, capsys):
    from data2vec.backbone import build_backbone
    from data2vec.checkpoint import save_checkpoint
    from data2vec.cli import main
    from data2vec.config import vision_preset

    _write_image_folder(tmp_path / "imgs")
    cfg = vision_preset("tiny", image_size=8, patch_size=4, in_chans=3)
    holder = torch.nn.Module()
    holder.backbone = build_backbone(cfg)
    save_checkpoint(tmp_path / "run" / "checkpoint", model=holder, optimizer=None, step=0,
                    config={"method": {"encoder": cfg.to_dict()}})
    out = tmp_path / "probe"
    rc = main(["probe", "--init", str(tmp_path / "run"), "--data", str(tmp_path / "imgs"), "--out", str(out),
               "--k", "3"])
    assert rc == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["results"]) == {"linear", "knn"}
    for r in metrics["results"].values():
        assert 0.0 <= r["accuracy"] <= 100.0
    assert "knn" in capsys.readouterr().out


def test_probe_random_encoder_follows_seed_not_the_global_rng(tmp_path):
    from PIL import Image

    from data2vec.cli import main

    rng = np.random.default_rng(0)  # pure-noise images: the scores depend on the encoder's random weights
    for name in ("a", "b"):
        (tmp_path / "imgs" / name).mkdir(parents=True)
        for i in range(40):
            noise = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
            Image.fromarray(noise).save(tmp_path / "imgs" / name / f"{i}.png")
    results = []
    for i, outside_seed in enumerate((123, 456)):
        torch.manual_seed(outside_seed)
        rc = main(["probe", "--data", str(tmp_path / "imgs"), "--preset", "tiny", "--image-size", "8", "--k", "1",
                   "--seed", "5", "--out", str(tmp_path / f"p{i}")])
        assert rc == 0
        results.append(json.loads((tmp_path / f"p{i}" / "metrics.json").read_text())["results"])
    assert results[0] == results[1]


def test_probe_command_bad_input_gives_one_clear_line(tmp_path, capsys):
    from data2vec.cli import main

    rc = main(["probe", "--data", str(tmp_path / "nope"), "--preset", "tiny", "--out", str(tmp_path / "p")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "nope" in err[0] and "fix" in err[0]
    corrupt = tmp_path / "ckpt"
    corrupt.mkdir()
    (corrupt / "config.json").write_text("{not json")
    (corrupt / "model.safetensors").write_bytes(b"garbage")
    rc = main(["probe", "--init", str(corrupt), "--data", "digits", "--out", str(tmp_path / "p")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "corrupt" in err[0]


def test_probe_image_size_and_channel_mismatch_are_explained(tmp_path, capsys):
    from data2vec.backbone import build_backbone
    from data2vec.checkpoint import save_checkpoint
    from data2vec.cli import main
    from data2vec.config import vision_preset

    cfg = vision_preset("tiny", image_size=8, patch_size=4, in_chans=3)  # an RGB encoder with 4 x 4 patches
    holder = torch.nn.Module()
    holder.backbone = build_backbone(cfg)
    save_checkpoint(tmp_path / "run" / "checkpoint", model=holder, optimizer=None, step=0,
                    config={"method": {"encoder": cfg.to_dict()}})
    rc = main(["probe", "--init", str(tmp_path / "run"), "--data", "digits", "--image-size", "6",
               "--out", str(tmp_path / "p")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "not divisible by the encoder's patch size 4" in err[0]
    rc = main(["probe", "--init", str(tmp_path / "run"), "--data", "digits", "--out", str(tmp_path / "p")])  # grey
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "1 channel(s) but the encoder expects 3" in err[0]


def test_probe_layer_auto_chooses_on_a_validation_split_of_the_training_images(tmp_path, capsys):
    from data2vec.cli import main
    from data2vec.probe import validation_split
    from tasks.vision import load_digits_dataset

    out = tmp_path / "auto"
    assert main(["probe", "--data", "digits", "--preset", "tiny", "--layer", "auto", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    labels = load_digits_dataset("train").labels
    fit, val = validation_split(labels, 0.1, seed=0, max_examples=5000)
    assert metrics["validation_examples"] == len(val) and metrics["train_examples"] == len(fit)
    blocks = ["block1", "block2", "final"]  # the tiny preset has 2 blocks
    candidates = {f"{b}/{p}" for b in blocks for p in ("mean", "cls")}
    assert metrics["results"]["linear"]["features"] in candidates  # standardised: centring is a no-op, not tried
    assert metrics["results"]["knn"]["features"] in candidates | {f"{c}/centred" for c in candidates}
    printed = capsys.readouterr().out
    assert f"features {metrics['results']['knn']['features']}," in printed
    assert main(["probe", "--data", "digits", "--preset", "tiny", "--layer", "7", "--out", str(tmp_path / "bad")]) == 2
    assert "block number 1..2" in capsys.readouterr().err
