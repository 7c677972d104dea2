"""What every modality's study protocols share (`data2vec compare`, docs/design.md section 8): the frozen-feature
scores with all labels and a fraction of them, the fine-tuning epochs of a labelled subset, what a fine-tuning result
records, and the supervised floor's budget. The image study (`vision_protocols`) and the speech study
(`audio_protocols`) call them with their own data, which holds `train_y`, `fit_idx`, `val_idx` and `test_y`.

Differences from the papers: a few-label k-NN / linear probe on the study's own splits instead of ImageNet's 1 % and
10 % subsets; fine-tuning epochs raised to at least `finetune_min_updates` updates for tiny labelled subsets; the
supervised floor trains for the pretraining budget plus the fine-tuning time (the papers compare at equal epochs).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from .records import pct, record, result_path, say, write_json

FROZEN = ("knn", "linear")  # frozen-feature protocols


def frozen_scores(cfg, arm: str, seed: int, protocol: str, feats: dict, test_feats: dict,
                  data, choice: str, choice_scores: dict) -> None:
    """One frozen protocol (k-NN or linear probe) with all labels and with `frozen_fraction` of them, on the
    features chosen for it on validation."""
    from ..probe import few_label_eval, fraction_indices, linear_probe

    fit_x, fit_y = feats[choice][data.fit_idx], data.train_y[data.fit_idx]
    val = (feats[choice][data.val_idx], data.train_y[data.val_idx])
    for fraction in (1.0, cfg.frozen_fraction):
        name = f"{protocol}@{pct(fraction)}"
        path = result_path(cfg, arm, seed, name)
        if path.is_file():
            continue
        t0 = time.time()
        if protocol == "linear" and fraction == 1.0:  # C chosen on the validation split: one fit per C
            score = linear_probe(fit_x, fit_y, test_feats[choice], data.test_y, seed=seed, val=val,
                                 max_iter=cfg.linear_max_iter, Cs=(1e-3, 1e-2, 1e-1, 1.0))["accuracy"]
        else:  # few labels: C by cross-validation on the labelled subset (the validation split is not labelled)
            score = few_label_eval(fit_x, fit_y, test_feats[choice], data.test_y, protocols=(protocol,),
                                   fraction=fraction if fraction < 1 else None, seeds=(seed,), k=cfg.knn_k,
                                   temperature=cfg.knn_temperature)[protocol][0]
        labelled = len(fit_y) if fraction == 1.0 else len(fraction_indices(fit_y, fraction, seed))
        write_json(path, record(cfg, arm, seed, name, score, features=choice, labelled=labelled,
                                validation_scores=choice_scores, seconds=round(time.time() - t0, 2)))
        say(f"{arm} seed {seed} {name}: {score:.2f} % ({choice})")


def score_frozen(cfg, arm: str, seed: int, feats: dict, test_feats: dict, data, t0: float) -> None:
    """Every frozen protocol of one arm: each candidate feature set (a layer and pooling, or a hand-made feature) also
    centred by the training mean, the candidate each protocol scores best with on the validation split chosen
    (`probe.choose_features`), then `frozen_scores` with it."""
    from ..probe import choose_features

    for name in list(feats):  # each candidate also centred by the training mean: a random or young encoder's
        mean = feats[name][data.fit_idx].mean(axis=0, keepdims=True)  # tokens share one direction, which
        feats[f"{name}/centred"] = feats[name] - mean  # swamps the cosine of the k-NN (not the linear probe)
        test_feats[f"{name}/centred"] = test_feats[name] - mean
    fit_y, val_y = data.train_y[data.fit_idx], data.train_y[data.val_idx]
    fit = {k: v[data.fit_idx] for k, v in feats.items()}
    val = {k: v[data.val_idx] for k, v in feats.items()}
    for protocol in FROZEN:  # each protocol reads the features it scores best with on validation
        if protocol == "linear":  # standardisation makes centring a no-op for the linear probe
            fit = {k: v for k, v in fit.items() if not k.endswith("/centred")}
        choice, scores = choose_features(fit, fit_y, val, val_y, k=cfg.knn_k, temperature=cfg.knn_temperature,
                                         protocol=protocol, seed=0)
        say(f"{arm} seed {seed} {protocol}: features {choice} (validation {protocol} {scores[choice]:.1f} %; "
            f"{time.time() - t0:.0f} s so far)")
        frozen_scores(cfg, arm, seed, protocol, feats, test_feats, data, choice, scores)


def finetune_record(out: dict, recipe: dict, scores: dict, epochs: int) -> dict:
    """The details every fine-tuning result stores (each lr's selection-split accuracy when a grid was run)."""
    s = out["summary"]
    grid = {"lr_validation_scores": {f"{lr:g}": a for lr, a in scores.items()}} if len(scores) > 1 else {}
    return dict(labelled=out["labelled"], epochs=epochs, cpu_seconds=out["cpu_seconds"],
                train_seconds=out["train_seconds"], train_cpu_seconds=out["train_cpu_seconds"],
                selected_epoch=s["test"]["selected"]["epoch"], last_epoch_score=s["test"]["last"]["accuracy"],
                validation_best=s["best"]["accuracy"], seconds=s["wall_time_s"], recipe=recipe, **grid,
                history=s["history"])


def finetune_epochs(cfg, data, fraction: float) -> int:
    """The epochs of the fine-tuning protocol at `fraction`: the table's, raised so that the run takes at least
    `finetune_min_updates` updates (13 labelled digits at batch 64 would otherwise get 40 updates)."""
    from ..label_splits import fraction_indices

    labelled = len(fraction_indices(data.train_y[data.fit_idx], fraction, 0)) if fraction < 1 else len(data.fit_idx)
    per_epoch = max(1, labelled // cfg.batch_size)  # fine-tuning drops the last partial batch (data2vec.finetune)
    return max(cfg.finetune_epochs.get(fraction, 10), -(-cfg.finetune_min_updates // per_epoch))


UPDATES_ALONE = "the fine-tuning's updates alone"  # a plan's epoch_seconds_from under the corrected rule


def supervised_budget(cfg, name: str, seed: int) -> dict:
    """The supervised floor's epochs on one labelled subset: the epochs the random-init arm fine-tuned, plus as many
    as the pretraining budget buys at the time one epoch's updates took there,

        E = E_ft + floor(budget / t_epoch),   t_epoch = (seconds inside the updates of that fine-tuning) / E_ft,

    so the floor's updates cost what the pretraining updates and the fine-tuning updates cost together. Evaluation
    and checkpoints are outside t_epoch on both sides (the floor evaluates as often as the run it is timed from,
    ten times); timing the whole run instead, as results written before the updates were timed alone must, counts
    the fixed evaluation and test passes as training time and gives the floor fewer epochs than its budget buys
    (CIFAR-10 with 1 % of the labels at 15 minutes: 214 epochs where 347 were due). The time is read from
    the random-init arm of the lowest seed that has it, and the result is stored in calibration.json under
    "supervised-<protocol>", so every seed gets the same epochs. Reading each seed's own time instead would let
    the load of that moment decide the epochs (a job on the other SMT sibling inflates even the CPU-time clock)."""
    import math

    path = Path(cfg.out) / "calibration.json"
    table = json.loads(path.read_text()) if path.is_file() else {}
    key = f"supervised-{name}"
    if key in table:
        return table[key]
    source = min(s for s in (*cfg.seeds, seed) if result_path(cfg, "random", s, name).is_file())
    ref = json.loads(result_path(cfg, "random", source, name).read_text())["details"]
    clock = "cpu" if cfg.clock == "cpu" and "cpu_seconds" in ref else "wall"  # the budget's clock
    ft_seconds, ft_epochs = ref["cpu_seconds" if clock == "cpu" else "seconds"], ref["epochs"]
    train_seconds = ref.get("train_cpu_seconds" if clock == "cpu" else "train_seconds", float("nan"))
    if math.isfinite(train_seconds) and train_seconds > 0:
        epoch_seconds, basis = train_seconds / ft_epochs, UPDATES_ALONE
        epochs = ft_epochs + int(cfg.budget_s / epoch_seconds)
    else:  # an older record: the whole run per epoch (evaluation included: fewer epochs than the budget buys)
        epoch_seconds, basis = ft_seconds / ft_epochs, "the whole fine-tuning run (older record, evaluation included)"
        epochs = max(ft_epochs, int((cfg.budget_s + ft_seconds) / epoch_seconds))
    table[key] = {"epochs": epochs, "budget_seconds": cfg.budget_s + epoch_seconds * ft_epochs, "clock": clock,
                  "epoch_seconds": epoch_seconds, "epoch_seconds_from": basis, "finetune_seconds": ft_seconds,
                  "finetune_epochs": ft_epochs, "from": f"random seed {source} {name}",
                  "budget_minutes": cfg.budget_minutes, "measured": time.strftime("%Y-%m-%d %H:%M:%S")}
    write_json(path, table)
    return table[key]
