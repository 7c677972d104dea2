"""The shared evaluation protocols `data2vec compare` is built from (data2vec/label_splits.py, data2vec/probe.py,
data2vec/finetune.py): the stratified label subsets and validation splits, the frozen probes and the fine-tuning
epoch chosen on validation. Split from test_compare.py (the comparison end to end).

References are written here: stratified subsets counted by hand, the linear probe's validation choice redone with
scikit-learn fits, pooled layer features recomputed from `return_layers`, the fine-tuning epoch choice read back
from the history and the selected weights scored again by `predict`.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from data2vec.label_splits import fraction_indices, validation_split
from data2vec.probe import choose_features, few_label_eval, knn_classify, layer_features, linear_probe


def blobs(n_per_class=30, classes=3, dim=6, seed=0, spread=1.0):
    centres = np.random.default_rng(100).normal(size=(classes, dim)) * 3  # the same classes in every split
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(classes), n_per_class)
    x = centres[y] + spread * rng.normal(size=(len(y), dim))
    return x.astype(np.float32), y


# ---- subsets ---------------------------------------------------------------------------------------------------


def test_fraction_indices_is_stratified_rounded_and_seeded():
    labels = np.array([0] * 200 + [1] * 50 + [2] * 7)
    idx = fraction_indices(labels, 0.1, seed=3)
    counts = np.bincount(labels[idx], minlength=3)
    assert counts.tolist() == [20, 5, 1]  # round(0.1 * n) per class, at least one
    assert len(set(idx.tolist())) == len(idx) and np.all(np.diff(idx) > 0)
    assert np.array_equal(idx, fraction_indices(labels, 0.1, seed=3))
    assert not np.array_equal(idx, fraction_indices(labels, 0.1, seed=4))
    with pytest.raises(ValueError, match="fraction"):
        fraction_indices(labels, 0.0, seed=0)


def test_fraction_indices_draws_every_example_equally_often():
    """Seeded statistical check: over 2,000 draws each of the 40 examples of a class is picked with p = 0.25."""
    labels = np.array([0] * 40 + [1] * 40)
    hits = np.zeros(80)
    draws = 2000
    for seed in range(draws):
        hits[fraction_indices(labels, 0.25, seed)] += 1
    p = hits / draws
    sd = np.sqrt(0.25 * 0.75 / draws)  # binomial standard deviation of one example's frequency
    assert np.all(np.abs(p - 0.25) < 5 * sd), (p.min(), p.max())


def test_validation_split_is_disjoint_stratified_and_capped():
    labels = np.repeat(np.arange(4), 100)
    fit, val = validation_split(labels, 0.2, seed=0)
    assert len(np.intersect1d(fit, val)) == 0 and len(fit) + len(val) == 400
    assert np.bincount(labels[val]).tolist() == [20, 20, 20, 20]
    fit, val = validation_split(labels, 0.2, seed=0, max_examples=30)
    assert len(val) == 30 and len(fit) == 370


# ---- frozen protocols ------------------------------------------------------------------------------------------


def test_linear_probe_with_validation_choice_equals_sklearn_by_hand():
    from sklearn.linear_model import LogisticRegression

    x, y = blobs(40, spread=2.5, seed=1)
    vx, vy = blobs(20, spread=2.5, seed=2)
    tx, ty = blobs(20, spread=2.5, seed=3)
    Cs = (1e-3, 1e-1, 10.0)
    out = linear_probe(x, y, tx, ty, Cs=Cs, val=(vx, vy))
    mean, std = x.mean(0), x.std(0) + 1e-6  # standardised with the training statistics only
    z = lambda a: (a - mean) / std  # noqa: E731
    val_acc = {C: (LogisticRegression(C=C, max_iter=1000).fit(z(x), y).predict(z(vx)) == vy).mean() for C in Cs}
    best = max(Cs, key=lambda c: (val_acc[c], -c))
    test_acc = (LogisticRegression(C=best, max_iter=1000).fit(z(x), y).predict(z(tx)) == ty).mean()
    assert out["C"] == best
    assert out["accuracy"] == pytest.approx(100 * test_acc)
    assert out["cv_accuracy"] == pytest.approx(100 * val_acc[best])


def test_few_label_eval_scores_each_seeded_subset():
    x, y = blobs(30, seed=4)
    tx, ty = blobs(10, seed=5)
    out = few_label_eval(x, y, tx, ty, fraction=0.2, seeds=(7, 8), k=5)
    for position, seed in enumerate((7, 8)):
        idx = fraction_indices(y, 0.2, seed)
        assert out["knn"][position] == knn_classify(x[idx], y[idx], tx, ty, k=5)["accuracy"]
        assert out["linear"][position] == linear_probe(x[idx], y[idx], tx, ty, seed=position)["accuracy"]
    every = few_label_eval(x, y, tx, ty, protocols=("knn",), k=5)
    assert every == {"knn": [knn_classify(x, y, tx, ty, k=5)["accuracy"]]}
    with pytest.raises(ValueError, match="not both"):
        few_label_eval(x, y, tx, ty, fraction=0.1, per_class=2)
    with pytest.raises(ValueError, match="unknown protocols"):
        few_label_eval(x, y, tx, ty, protocols=("svm",))


def test_layer_features_pool_every_block_and_the_final_output():
    from data2vec.backbone import build_backbone
    from data2vec.config import get_preset

    torch.manual_seed(0)
    backbone = build_backbone(get_preset("vision", "tiny", image_size=8, patch_size=2, in_chans=1, depth=2))
    images = torch.randn(5, 1, 8, 8)
    feats, labels = layer_features(backbone, [{"images": images, "labels": torch.arange(5)}])
    assert sorted(feats) == sorted(f"{n}/{p}" for n in ("block1", "block2", "final") for p in ("mean", "cls"))
    backbone.eval()
    with torch.no_grad():
        final, blocks = backbone(images, return_layers="block")
    for name, tokens in (("block1", blocks[0]), ("block2", blocks[1]), ("final", final)):
        np.testing.assert_allclose(feats[f"{name}/mean"], tokens[:, 1:].mean(1).numpy(), rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(feats[f"{name}/cls"], tokens[:, 0].numpy(), rtol=1e-6, atol=1e-6)
    assert labels.tolist() == [0, 1, 2, 3, 4]


def test_choose_features_picks_the_informative_candidate_for_both_protocols():
    x, y = blobs(30, seed=6)
    vx, vy = blobs(15, seed=7)
    rng = np.random.default_rng(0)
    train = {"noise": rng.normal(size=x.shape), "signal": x}
    val = {"noise": rng.normal(size=vx.shape), "signal": vx}
    for protocol in ("knn", "linear"):
        best, scores = choose_features(train, y, val, vy, k=5, protocol=protocol)
        assert best == "signal" and scores["signal"] > scores["noise"] + 30
    same = {"a": x, "b": x}
    assert choose_features(same, y, {"a": vx, "b": vx}, vy, k=5)[0] == "b"  # ties: the later (deeper) candidate
    with pytest.raises(ValueError, match="unknown protocol"):
        choose_features(train, y, val, vy, protocol="svm")


# ---- fine-tuning: the epoch chosen on validation, the test scored once --------------------------------------


@pytest.mark.parametrize("test_every_epoch", [False, True])
def test_finetune_selects_the_epoch_on_validation_and_scores_test_with_it(tmp_path, test_every_epoch):
    from data2vec.backbone import build_backbone
    from data2vec.config import get_preset
    from data2vec.finetune import FinetuneConfig, finetune, predict
    from data2vec.heads import ImageClassificationHead, TaskModel

    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)

    def images(n):  # class 1 = a bright left half
        x = torch.randn(n, 1, 8, 8, generator=gen) * 0.3
        y = torch.arange(n) % 2
        x[y == 1, :, :, :4] += 1.0
        return [(x[i], int(y[i])) for i in range(n)]

    def collate(batch):
        return {"images": torch.stack([b[0] for b in batch]), "labels": torch.tensor([b[1] for b in batch])}

    backbone = build_backbone(get_preset("vision", "tiny", image_size=8, patch_size=2, in_chans=1, depth=1))
    model = TaskModel(backbone, ImageClassificationHead(backbone.cfg.dim, 2))
    cfg = FinetuneConfig.vision_defaults(epochs=5, batch_size=8, lr=3e-3, save_best=False, eval_every=2,
                                         log_every=0, layer_decay=None, test_every_epoch=test_every_epoch)
    test = images(40)

    def metric_fn(outputs, labels):
        return {"accuracy": 100.0 * float((outputs.argmax(-1) == labels).mean())}

    summary = finetune(model, images(32), images(24), cfg, tmp_path, metric_fn, collate_fn=collate, quiet=True,
                       test_set=test)
    history = summary["history"]
    assert [h["epoch"] for h in history] == [2, 4, 5]  # every 2nd epoch and the last
    best = max(history, key=lambda h: h["accuracy"])  # the first of equal scores wins, as in the loop
    assert summary["test"]["selected"]["epoch"] == best["epoch"] == summary["best"]["epoch"]
    assert summary["test"]["last"]["epoch"] == 5
    logits, labels = predict(model, [collate(test[i : i + 16]) for i in range(0, 40, 16)], "classification")
    by_hand = 100.0 * float((logits.argmax(-1) == labels).mean())  # the model now holds the selected weights
    assert summary["test"]["selected"]["accuracy"] == pytest.approx(by_hand)
    assert summary["best_is"].startswith("selected on a validation split")
    if not test_every_epoch:
        assert "best_epoch_on_test" not in summary["test"] and "test_accuracy" not in history[0]
        return
    # the optimistic number beside it: test scored after every evaluated epoch, the selection untouched
    assert [h["test_accuracy"] for h in history if h["epoch"] == best["epoch"]] == [pytest.approx(by_hand)]
    assert history[-1]["test_accuracy"] == pytest.approx(summary["test"]["last"]["accuracy"])
    top = max(history, key=lambda h: h["test_accuracy"])
    assert summary["test"]["best_epoch_on_test"] == {"epoch": top["epoch"], "accuracy": top["test_accuracy"]}


@pytest.mark.parametrize("validation, passes", [([90.0, 80.0, 70.0], 2), ([70.0, 80.0, 90.0], 1)])
def test_the_test_split_is_scored_once_when_the_selected_epoch_is_the_last(tmp_path, validation, passes):
    """Selected epoch 2 of 5: the test split is scored with the last and the selected weights (two passes); selected
    epoch 5, the last: the same weights, one pass, and both entries hold its score."""
    from data2vec.backbone import build_backbone
    from data2vec.config import get_preset
    from data2vec.finetune import FinetuneConfig, finetune
    from data2vec.heads import ImageClassificationHead, TaskModel

    torch.manual_seed(0)
    data = [(torch.randn(1, 8, 8), i % 2) for i in range(16)]

    def collate(batch):
        return {"images": torch.stack([b[0] for b in batch]), "labels": torch.tensor([b[1] for b in batch])}

    calls = []

    def metric_fn(outputs, labels):  # the validation scores given, then 50 for every test pass
        calls.append(len(outputs))
        return {"accuracy": validation[len(calls) - 1] if len(calls) <= len(validation) else 50.0 + len(calls)}

    backbone = build_backbone(get_preset("vision", "tiny", image_size=8, patch_size=2, in_chans=1, depth=1))
    cfg = FinetuneConfig.vision_defaults(epochs=5, batch_size=8, save_best=False, eval_every=2, log_every=0,
                                         layer_decay=None)
    summary = finetune(TaskModel(backbone, ImageClassificationHead(backbone.cfg.dim, 2)), data, data[:8], cfg,
                       tmp_path, metric_fn, collate_fn=collate, quiet=True, test_set=data[:12])
    assert len(calls) == len(validation) + passes and calls[len(validation):] == [12] * passes
    test = summary["test"]
    assert test["selected"]["epoch"] == (2 if passes == 2 else 5) and test["last"]["epoch"] == 5
    assert (test["selected"]["accuracy"] == test["last"]["accuracy"]) == (passes == 1)
