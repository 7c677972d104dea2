"""The image study's settings: the data, the arms, the shared encoder, the budget, the protocols, and the recipe
each method trains with (`data2vec compare`; the pipeline is `data2vec.study.vision`).

Differences from the papers: every method trains the same small encoder for the same wall-clock budget, from the
registry's reduced presets with the changes in IMAGE_STUDY_RECIPES (docs/design.md section 8).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from .budget import Recipe

# Starting points at reduced scale; the study's README records what was tried on the validation split.
IMAGE_STUDY_RECIPES = {
    "data2vec": Recipe(),  # the registry's reduced vision preset (K scaled with depth, tau ramp 0.3 of the run)
    # data2vec 2.0: M = 4 masks and mask ratio 0.5 at lr 2e-3 were chosen on validation digits
    # (benchmarks/results/v1_vs_v2_select.json); M = 16 (released) costs 4x the student passes per update
    "data2vec2": Recipe(overrides=dict(num_masks=4, mask_ratio=0.5), lr=2e-3),
    # DINO: the registry's reduced preset and lr rule (5e-4 x batch / 256), with a faster teacher (momentum 0.99 from
    # 0.996) and tau_t held at 0.04 (no warm-up to 0.07): the preset sat at the uniform collapse on CIFAR-10's
    # training images (benchmarks/studies/README.md, "What was tried")
    "dino": Recipe(overrides=dict(momentum_base=0.99, teacher_temp=0.04)),
}


@dataclass
class CompareConfig:
    """One comparison: the data, the arms, the shared encoder, the budget and the evaluation protocols."""

    data: str  # 'digits', a CIFAR-10/MNIST folder or an image folder
    out: str  # results folder (JSON per result, table, plots): small, meant to be committed
    runs: str  # run folders (checkpoints): large, keep them out of git
    methods: tuple[str, ...] = ("data2vec", "data2vec2", "dino")  # pretraining arms (registry names)
    budget_minutes: float = 15.0  # pretraining wall-clock per method and seed
    seeds: tuple[int, ...] = (1, 2, 3)  # one pretraining run and one label subset per seed
    preset: str = "mini"  # the registry preset every method's recipe starts from
    dim: int = 128  # encoder width (4 x 128 with 4 px patches: ~1,700 data2vec updates in 15 min on one CPU core)
    depth: int = 4  # encoder blocks
    heads: int = 4  # attention heads
    patch_size: int | None = None  # None = 4 (2 for images under 16 px)
    image_size: int | None = None  # None = the data's (digits 8, CIFAR/MNIST 32)
    batch_size: int = 64  # pretraining and fine-tuning batch
    calibration_steps: int = 6  # timed updates per method (after 2 untimed ones) that fix the step counts
    frozen_fraction: float = 0.01  # the few-label frozen protocols use this fraction of the labels
    finetune_fractions: tuple[float, ...] = (0.01, 0.1)  # fine-tuning label fractions (1.0 with --finetune-full)
    finetune_epochs: dict = field(default_factory=lambda: {0.01: 40, 0.1: 10, 1.0: 5})  # epochs per fraction,
    finetune_min_updates: int = 300  # ... raised to reach at least this many updates (small data sets: digits)
    finetune_lr: float = 1e-3  # one recipe for every arm (AdamW, cosine, warm-up 10%, label smoothing 0.1)
    layer_decay: float = 0.75  # layer-wise lr decay of the fine-tuning recipe (BEiT for shallow models)
    # () = finetune_lr for every arm (the studies so far); else every fine-tuning protocol of every arm runs once per
    # lr and reports the lr whose selection-split accuracy is best (MAE / BEiT sweep the lr per model), at len(grid)
    # times the cost: at 1e-3 a random-init encoder barely trains on 1 % of MNIST (benchmarks/studies/README.md)
    finetune_lr_grid: tuple[float, ...] = ()
    val_fraction: float = 0.1  # validation split carved from the training data
    val_max: int = 5000  # at most this many validation images (frozen probes); fine-tuning selection uses 2,000
    linear_max_iter: int = 300  # L-BFGS iterations of the all-label linear probe (the few-label one uses 1000)
    knn_k: int = 20  # DINO's k
    knn_temperature: float = 0.07  # DINO's T
    device: str = "cpu"
    threads: int | None = None  # torch CPU threads (None = torch's choice); recorded with every result
    precision: str = "fp32"  # "fp32" or "bf16" (autocast) for every arm's pretraining and fine-tuning, resolved from
    #   --precision (data2vec.precision); one precision per table: it changes the seconds per update
    compile: bool = False  # torch.compile the encoders' blocks (the same math; the calibration includes its cost)
    clock: str = "cpu"  # the budget's clock: "cpu" = this process's CPU seconds (CPU runs: immune to other work on
    #   the machine; equal to wall-clock for one thread on an idle core), "wall" = wall-clock (GPU runs)
    quick: bool = False  # the smoke version (digits, seconds per method)
    command: str = ""  # the command line, stored with every result
    # --set METHOD.KEY=VALUE for a tuning run: {method: {field or "lr": value}} on top of RECIPES (its own --out)
    recipe_sets: dict = field(default_factory=dict)
    recipes: ClassVar[dict] = IMAGE_STUDY_RECIPES  # the study's recipe per method (not stored in config.json)
    # fields that define a study: results made with other values must not be mixed into one table
    study_fields: ClassVar[tuple] = ("precision", "data", "budget_minutes", "clock", "preset", "dim", "depth", "heads",
                                     "patch_size", "image_size", "batch_size", "frozen_fraction", "finetune_lr",
                                     "finetune_lr_grid", "layer_decay", "val_fraction", "val_max", "knn_k",
                                     "knn_temperature", "finetune_min_updates", "recipe_sets")
    # values of fields that older studies did not store: a study from before the grid used one lr, from before
    # --set on images none
    study_defaults: ClassVar[dict] = {"finetune_lr_grid": [], "recipe_sets": {}, "precision": "fp32"}
    study_name: ClassVar[str] = "comparison"

    @property
    def arms(self) -> tuple[str, ...]:
        return ("random",) + tuple(self.methods) + ("pixels", "supervised")

    @property
    def budget_s(self) -> float:
        return 60.0 * self.budget_minutes

    def extra_study_changes(self, old: dict) -> list[tuple]:
        """Nothing beyond `study_fields` defines an image study."""
        return []
