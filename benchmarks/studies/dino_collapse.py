"""Why DINO's short runs sit at the uniform collapse, and which recipe change gets them out (CIFAR-10 study).

DINO (Caron et al. 2021, section 3.1) trains the student towards the teacher's centred, sharpened output
P_t(x) = softmax((g_t(x) - c) / tau_t). When the teacher gives every image the same output g_t, the centre c
converges to it and P_t is uniform: H(P_t) = log K, the loss sits at log K and nothing is learned. Two numbers tell
the cases apart (both logged by the method): the mean per-image teacher entropy H(P_t(x)) (log K = uniform) and the
entropy of the batch-mean prediction H(mean_x P_t(x)) (far below log K = one prototype for every image).

This script runs the comparison's DINO arm (`data2vec compare`'s encoder, recipe and the 392-update schedule of the
CIFAR-10 study) for --updates updates with one change and prints both entropies, the loss and the health pass's
online k-NN, and (with --init-only) how image-dependent a freshly initialised encoder is (mean cosine similarity of
the CLS outputs of 250 test images; 1 = the same for every image).

    python benchmarks/studies/dino_collapse.py --data ../shared/data/cifar10-jpeg/CIFAR-10-images-jpeg.tar.gz \
        --overrides '{"momentum_base": 0.99, "teacher_temp": 0.04}' --updates 60
    python benchmarks/studies/dino_collapse.py --data ... --patch-init normal --init-only

`--patch-init normal` re-initialises the patch projection with N(0, 0.02) (the library's init before it
became Xavier-uniform) to reproduce the collapse; `--recipe preset` uses the registry's preset instead of the
comparison's recipe. Results of the runs that chose the recipe are in benchmarks/studies/README.md ("What was
tried"). Each run costs about 3 minutes of one core (batch 64, 2 global + 6 local crops).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from data2vec.checkpoint import set_seed
from data2vec.engine import pretrain, read_metrics
from data2vec.study.budget import Recipe, pretrain_config
from data2vec.study.data import health_knn_probe, image_splits
from data2vec.study.vision import build_arm, data_image_size
from data2vec.study.vision_config import IMAGE_STUDY_RECIPES, CompareConfig


def normal_patch_init_(method) -> None:
    """The old init (N(0, 0.02) on the patch projection), in the student and its teacher copy."""
    weight = method.backbone.embed.proj.weight
    if method.cfg.encoder.init == "beit":  # truncated at 2 std, as data2vec.transformer.init_weights_ draws it
        torch.nn.init.trunc_normal_(weight, std=0.02, a=-0.04, b=0.04)
    else:
        torch.nn.init.normal_(weight, std=0.02)
    method.teacher.module["backbone"].embed.proj.weight.data.copy_(weight.data)  # the teacher starts as the student


def mean_cosine(z: torch.Tensor) -> float:
    """Mean cosine similarity over the distinct pairs of rows of z (N, D)."""
    z = F.normalize(z, dim=-1)
    n = z.shape[0]
    return float(((z @ z.T).sum() - n) / (n * n - n))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, help="the study's --data: CIFAR-10 (the tar.gz or its folder), MNIST, ...")
    p.add_argument("--overrides", default="{}", help="DINO config fields as JSON, on top of the recipe")
    p.add_argument("--lr", type=float, default=None, help="peak lr (default: DINO's rule, 5e-4 x batch / 256)")
    p.add_argument("--recipe", choices=("compare", "preset"), default="compare",
                   help="start from the comparison's DINO recipe or from the registry's preset")
    p.add_argument("--patch-init", choices=("xavier", "normal"), default="xavier")
    p.add_argument("--updates", type=int, default=60, help="updates run (of the --steps schedule)")
    p.add_argument("--steps", type=int, default=392, help="the schedule's length (the CIFAR-10 study: 392)")
    p.add_argument("--init-only", action="store_true", help="only measure the fresh encoder's image dependence")
    p.add_argument("--runs", default="runs/dino-collapse", help="run folder (checkpoint, metrics.jsonl)")
    args = p.parse_args()
    torch.set_num_threads(1)
    base = IMAGE_STUDY_RECIPES["dino"] if args.recipe == "compare" else Recipe()
    IMAGE_STUDY_RECIPES["dino"] = Recipe(overrides={**base.overrides, **json.loads(args.overrides)},
                                        lr=args.lr if args.lr is not None else base.lr)
    cfg = CompareConfig(data=args.data, out=args.runs, runs=args.runs, threads=1)
    size = data_image_size(cfg)  # the study's image side and channels (CIFAR-10: 32 px RGB, MNIST: 28 px grey)
    test = image_splits(args.data, size, seed=0, augment_train=False)[1]
    chans = int(test[0][0].shape[0])
    set_seed(1)
    method, dataset, collate, optim, spec = build_arm(cfg, "dino", size, chans, args.steps)
    if args.patch_init == "normal":
        normal_patch_init_(method)
    shown = ("momentum_base", "teacher_temp_start", "teacher_temp", "teacher_temp_warmup_steps", "out_dim", "n_local",
             "local_scale")
    print({k: getattr(method.cfg, k) for k in shown}, optim, f"patch init {args.patch_init}", flush=True)
    if args.init_only:
        images = torch.stack([test[i][0] for i in range(0, len(test), max(1, len(test) // 250))])  # (250, C, H, W)
        with torch.no_grad():
            tokens = method.backbone(images)  # (250, 1 + N, D)
            print(f"mean cosine: CLS {mean_cosine(tokens[:, 0]):.3f}, mean of patches "
                  f"{mean_cosine(tokens[:, 1:].mean(1)):.3f}, head {mean_cosine(method.head(tokens[:, 0])):.3f}")
        return
    run = Path(args.runs) / "run"
    shutil.rmtree(run, ignore_errors=True)
    knn = health_knn_probe(args.data, size, 256, 1)
    pcfg = pretrain_config(cfg, optim, args.steps, 1, spec, health_every=25, quiet=True)

    def stop_after_updates() -> None:  # SIGTERM: the engine saves and returns, as on a cluster's preemption
        while True:
            time.sleep(2)
            metrics = run / "metrics.jsonl"
            if metrics.is_file() and sum(1 for _ in metrics.open()) >= args.updates:
                os.kill(os.getpid(), signal.SIGTERM)
                return

    threading.Thread(target=stop_after_updates, daemon=True).start()
    pretrain(method, dataset, pcfg, run, collate_fn=collate, health_data=knn)
    log_k = torch.log(torch.tensor(float(method.cfg.out_dim))).item()
    print(f"step  loss  H(P_t(x))  H(mean P_t)  online-kNN   (log K = {log_k:.3f})")
    for r in read_metrics(run / "metrics.jsonl"):
        if r["step"] % 10 == 0 or "health/knn_acc" in r:
            print(f"{r['step']:4d}  {r['loss']:.3f}  {r['teacher_entropy']:.3f}  {r['teacher_batch_entropy']:.3f}"
                  f"  {r.get('health/knn_acc', '')}")


if __name__ == "__main__":
    main()
