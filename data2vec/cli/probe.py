"""`data2vec probe`: evaluate frozen features with a linear probe and/or weighted k-NN.

The backbone (from `--init`, see `data2vec finetune`, or random from `--preset`) is frozen; one pooled
feature vector per image (or, with `--modality audio`, per keyword recording: the frames averaged over the real
frames) is extracted from the train and test splits of `--data`; a logistic-regression
probe (L2 strength chosen by cross-validation on the train split) and DINO's weighted k-NN
(k = 20, T = 0.07) are scored on the test split. `--labels-per-class N` repeats the evaluation on
`--label-seeds` random subsets of N labelled training images per class (`probe.few_label_eval`, the
protocol `data2vec demo` and `data2vec compare` use too); only the images of those subsets are embedded.
Writes `<out>/metrics.json`.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from .errors import OVERWRITE_HELP, CliError, HelpFormatter
from .flags import add_device_and_threads, apply_threads


def add_parser(sub) -> None:
    p = sub.add_parser(
        "probe",
        help="linear probe and k-NN accuracy of frozen features on an image or keyword (speech) data set",
        description="Freeze a backbone, extract pooled features and score a linear probe and a weighted k-NN "
        "classifier. A good pretrained encoder beats a random one of the same size by a wide margin; compare "
        "with `--init` left out (random init) to see the gain.",
        formatter_class=HelpFormatter,
    )
    p.add_argument("--init", default=None,
                   help="the encoder: a `data2vec pretrain` run folder (or its checkpoint/), a fine-tuned <out>/best "
                   "folder, a HuggingFace vit/beit/data2vec-vision folder; leave out for a random init of --preset")
    p.add_argument("--data", required=True,
                   help="'digits', a CIFAR-10/MNIST folder, or an image folder (<class>/<image> or "
                   "<split>/<class>/<image>); audio: a keyword folder (Speech Commands layout or <split>/<word>/) or "
                   "a corpus built by python -m tasks.audio.corpus")
    p.add_argument("--modality", choices=("vision", "audio"), default="vision",
                   help="vision (images) or audio (keyword recordings: the test split is scored, the train split "
                   "fits the probes; speech features are mean-pooled over the real frames, --pooling cls does not "
                   "apply)")
    p.add_argument("--method", choices=("linear", "knn", "both"), default="both",
                   help="linear: logistic regression on standardised features (C chosen by 3-fold CV); knn: "
                   "DINO's temperature-weighted k-NN on L2-normalised features")
    p.add_argument("--pooling", choices=("mean", "cls"), default="mean",
                   help="mean of patch tokens (data2vec/BEiT features; usually best for masked-prediction "
                   "methods) or the CLS token (DINO's choice)")
    p.add_argument("--layer", default="final",
                   help="which features: 'final' (the encoder's normed output), a block number 1..depth (its output, "
                   "before the final norm; BEiT probes an intermediate block), or 'auto': every block and the final "
                   "output, mean-pooled and CLS (k-NN also centred), chosen per protocol on a validation split of 10%% "
                   "of the training images (at most 5,000), which are then left out of the probe's training set. "
                   "Use auto to compare encoders fairly: a random or young ViT's final mean-pooled tokens can lose "
                   "to raw pixels while a middle block does not")
    p.add_argument("--k", type=int, default=20, help="k-NN neighbours (DINO: 20; use fewer with few labels)")
    p.add_argument("--temperature", type=float, default=0.07,
                   help="k-NN vote weight exp(cos/T) (DINO: 0.07); 0 = plain majority vote")
    p.add_argument("--labels-per-class", type=int, default=None,
                   help="few-label protocol: use only N labelled training images per class (default: all)")
    p.add_argument("--label-seeds", type=int, default=5,
                   help="with --labels-per-class: how many random label subsets to average over")
    p.add_argument("--image-size", type=int, default=None, help="input resolution (default: the encoder's)")
    p.add_argument("--preset", default="mini", help="encoder size without --init: tiny, mini, small, base")
    p.add_argument("--max-train-examples", type=int, default=None, help="use at most this many training images")
    p.add_argument("--max-eval-examples", type=int, default=None, help="use at most this many test images")
    p.add_argument("--batch-size", type=int, default=256, help="images per forward pass during extraction")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the random encoder (without --init), the subsets and the probe's CV folds")
    p.add_argument("--out", default="runs/probe",
                   help="output folder for metrics.json; one that holds a result is refused unless --overwrite")
    p.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    add_device_and_threads(p)
    p.set_defaults(run=run)


def _check_layer(layer: str, depth: int):
    if layer in ("final", "auto"):
        return layer
    if layer.isdigit() and 1 <= int(layer) <= depth:
        return int(layer)
    raise CliError(f"--layer {layer!r} is not a layer of this encoder ({depth} blocks); fix: use 'final', 'auto' or a "
                   f"block number 1..{depth}")


def _features(backbone, dataset, layer, args, device, collate):
    """({name: (N, D)}, labels): the final output with --pooling, one block's with --pooling, or (auto) every
    candidate of `probe.layer_features` (`run` adds the k-NN's centred copies)."""
    from ..probe import extract_features, layer_features

    if layer == "final":
        x, y = extract_features(backbone, _loader(dataset, args.batch_size, collate), args.pooling, device)
        return {f"final/{args.pooling}": x}, y
    feats, y = layer_features(backbone, _loader(dataset, args.batch_size, collate), device)
    if layer != "auto":
        return {f"block{layer}/{args.pooling}": feats[f"block{layer}/{args.pooling}"]}, y
    return feats, y


def _loader(dataset, batch_size: int, collate):
    from torch.utils.data import DataLoader

    return DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate)


def _image_source(args: argparse.Namespace):
    """(init, train split, test split, classes, collate) of an image data set (train without augmentation)."""
    from tasks.vision import image_collate

    from ..study.data import image_splits
    from .common import check_channels, vision_init

    data = str(args.data)
    if data.lower() != "digits" and not Path(data).exists():
        raise CliError(f"--data {data}: no such file or folder; fix: give 'digits' or the path of an image data set")
    init, size = vision_init(data, args.init, args.preset, args.image_size, args.seed)
    train, test, num_classes, chans = image_splits(data, size, args.seed, augment_train=False)
    check_channels(chans, init.encoder_config.in_chans)
    return init, train, test, num_classes, image_collate


def _audio_source(args: argparse.Namespace):
    """(init, train split, test split, classes, collate) of a keyword folder: whole recordings, no crops."""
    from tasks.audio import AudioCollate

    from .common import load_init
    from .finetune_audio import audio_splits

    if args.pooling != "mean":
        raise CliError("--pooling cls: speech encoders have no CLS token; fix: leave --pooling out (mean)")
    args.task = "keywords"
    train, val, test = audio_splits(args, "keywords")
    if test is None:
        raise CliError(f"--data {args.data} has no test split to score; fix: add a test folder (or the Speech "
                       "Commands lists)")
    return load_init(args.init, "audio", args.preset), train, test, len(train.classes), AudioCollate()


def _check_options(args: argparse.Namespace) -> None:
    """Refuse impossible option values before any work (and before --out is claimed)."""
    from .common import choose_device, positive

    args.device = choose_device(args.device)
    apply_threads(args.threads)
    for name in ("k", "batch_size", "label_seeds", "labels_per_class", "max_train_examples", "max_eval_examples"):
        positive(f"--{name.replace('_', '-')}", getattr(args, name))
    if args.temperature < 0:
        raise CliError(f"--temperature must be >= 0 (0 = majority vote), got {args.temperature}; fix: e.g. 0.07 "
                       "(DINO's)")


def run(args: argparse.Namespace) -> int:
    from .common import prepare_run_dir, removed_on_failure

    _check_options(args)
    with removed_on_failure(args.out, "probe"):  # a launch that fails before its result leaves no folder behind
        prepare_run_dir(args.out, "probe", overwrite=args.overwrite)
        return _probe(args)


def _probe(args: argparse.Namespace) -> int:
    """Embed the images, score the probes and write <out>/metrics.json."""
    import torch
    from torch.utils.data import Subset

    from ..checkpoint import set_seed
    from ..probe import choose_features, few_label_eval, few_label_indices, validation_split
    from ..study.data import seeded_subset
    from .common import dataset_labels

    t0 = time.time()
    data = str(args.data)
    set_seed(args.seed)  # without --init, the random encoder's weights come from --seed
    source = _audio_source if args.modality == "audio" else _image_source
    init, train, test, num_classes, collate = source(args)
    cfg = init.encoder_config
    train = seeded_subset(train, args.max_train_examples, args.seed)
    test = seeded_subset(test, args.max_eval_examples, args.seed)
    device = torch.device(args.device)
    backbone = init.backbone.to(device)
    temperature = args.temperature or None
    methods = ("linear", "knn") if args.method == "both" else (args.method,)
    layer = _check_layer(args.layer, cfg.depth)
    labels = dataset_labels(train)
    fit_idx, val_idx = np.arange(len(labels)), np.array([], dtype=int)
    if layer == "auto":  # the choice is made on held-out training images, never on the test split
        fit_idx, val_idx = validation_split(labels, 0.1, seed=args.seed, max_examples=5000)
    subsets = None
    used = fit_idx
    if args.labels_per_class is not None:
        # few labels: draw the subsets from the labels alone, then embed only the images they hold
        subsets = [fit_idx[few_label_indices(labels[fit_idx], args.labels_per_class, seed=args.seed + s)]
                   for s in range(args.label_seeds)]
        used = np.unique(np.concatenate(subsets))  # sorted indices of every image some subset needs
    embedded = np.union1d(used, val_idx)  # sorted: the probe's training images and the validation split
    feats, train_y = _features(backbone, Subset(train, embedded.tolist()), layer, args, device, collate)
    test_feats, test_y = _features(backbone, test, layer, args, device, collate)
    where = lambda idx: np.searchsorted(embedded, idx)  # noqa: E731  (dataset index -> row of the embedded arrays)
    choices = {m: next(iter(feats)) for m in methods}
    if layer == "auto":
        fit_rows, val_rows = where(used), where(val_idx)
        for name in list(feats):  # centred copies for the cosine k-NN (a shared direction swamps the cosine)
            mean = feats[name][fit_rows].mean(axis=0, keepdims=True)
            feats[f"{name}/centred"], test_feats[f"{name}/centred"] = feats[name] - mean, test_feats[name] - mean
        for m in methods:
            pool = {k: v for k, v in feats.items() if m == "knn" or not k.endswith("/centred")}
            choices[m], _ = choose_features({k: v[fit_rows] for k, v in pool.items()}, train_y[fit_rows],
                                            {k: v[val_rows] for k, v in pool.items()}, train_y[val_rows], k=args.k,
                                            temperature=temperature, protocol=m, seed=args.seed)
    rows = [where(used)] if subsets is None else [where(idx) for idx in subsets]
    scores: dict[str, list[float]] = {m: [] for m in methods}
    for i, r in enumerate(rows):
        for m in methods:
            name = choices[m]
            scores[m] += few_label_eval(feats[name][r], train_y[r], test_feats[name], test_y, protocols=(m,),
                                        seeds=(args.seed + i,), k=args.k, temperature=temperature)[m]
    results: dict[str, dict] = {}
    for method, accs in scores.items():
        results[method] = {"accuracy": float(np.mean(accs)), "std": float(np.std(accs)), "runs": accs,
                           "features": choices[method]}
    train_y = train_y[where(used)]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    summary = {"init": init.source, "data": data, "modality": args.modality, "layer": args.layer,
               "pooling": args.pooling, "k": args.k,
               "temperature": temperature, "validation_examples": int(len(val_idx)),
               "labels_per_class": args.labels_per_class, "train_examples": int(len(train_y)),
               "test_examples": int(len(test_y)), "num_classes": num_classes, "results": results,
               "wall_time_s": round(time.time() - t0, 2)}
    (out / "metrics.json").write_text(json.dumps(summary, indent=2))
    for method, r in results.items():
        spread = f" ± {r['std']:.2f}" if len(r["runs"]) > 1 else ""
        print(f"probe {method:6s} accuracy {r['accuracy']:.2f}{spread} %  ({init.source}, features {r['features']}, "
              f"{len(test_y)} test {'recordings' if args.modality == 'audio' else 'images'})")
    print(f"wrote {out / 'metrics.json'}")
    return 0
