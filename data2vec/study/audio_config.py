"""The speech study's settings: the keyword corpus, the arms, the shared encoder, the budget, the protocols, and the
recipe each method trains with (`data2vec compare --modality audio`; the pipeline is `data2vec.study.audio`).

Differences from the papers: data2vec-audio pretrains a 12 x 768 encoder on 960 h of LibriSpeech for 400k updates;
here every method trains the same 4 x 128 encoder (a 64-channel feature encoder) for the same CPU-minutes on the
training split of a keyword corpus (its keyword clips and sentences), from the registry's reduced audio presets with
the changes in AUDIO_STUDY_RECIPES (docs/design.md sections 8 and 10). The closest published small-scale result is
Bovbjerg & Tan 2022 (data2vec on Speech Commands with 20 % of the labels, docs/design.md section 10).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from .budget import Recipe

AUDIO_METHODS = ("data2vec", "data2vec2")  # registry names this study pretrains (BERT and DINO have no speech input)

# Starting points at reduced scale: the registry's reduced audio presets, whose mask settings are the released ones
# (v1: spans of 10 frames, p 0.65; v2: spans of 5, p 0.5). A 1 s clip has 49 frames, so a v1 row holds about 3 spans
AUDIO_STUDY_RECIPES = {
    "data2vec": Recipe(),  # K = 2/3 of the blocks, instance norm, tau 0.99 -> 0.999 over 30 % of the run
    "data2vec2": Recipe(),  # `mini`: 4 clones, top 3 of 4 blocks, a 128-wide 4-block conv decoder
}


@dataclass
class AudioCompareConfig:
    """One speech comparison: the keyword corpus, the arms, the shared encoder, the budget and the protocols."""

    data: str  # a keyword folder (Speech Commands layout or <split>/<word>/) or a corpus built by tasks.audio.corpus
    out: str  # results folder (JSON per result, table, plots): small, meant to be committed
    runs: str  # run folders (checkpoints): large, keep them out of git
    methods: tuple[str, ...] = AUDIO_METHODS  # pretraining arms (registry names)
    budget_minutes: float = 15.0  # pretraining CPU-minutes per method and seed
    seeds: tuple[int, ...] = (1, 2, 3)  # one pretraining run and one label subset per seed
    preset: str = "mini"  # the registry preset every method's recipe starts from
    dim: int = 128  # encoder width (4 x 128: ~0.9 s per data2vec update at batch 32 on one CPU core, ~1,000 in 15 min)
    depth: int = 4  # encoder blocks
    heads: int = 4  # attention heads
    conv_dim: int = 64  # channels of the 7-layer feature encoder (released 512; `mini` 128, twice the cost)
    batch_size: int = 32  # pretraining and fine-tuning batch (clips of crop_seconds)
    crop_seconds: float = 1.0  # pretraining crops and the evaluation window (Speech Commands' clips are 1 s)
    calibration_steps: int = 6  # timed updates per method (after 2 untimed ones) that fix the step counts
    frozen_fraction: float = 0.1  # the few-label frozen protocols use this fraction of the labels
    finetune_fractions: tuple[float, ...] = (0.01, 0.1)  # fine-tuning label fractions (1.0 with --finetune-full)
    finetune_epochs: dict = field(default_factory=lambda: {0.01: 40, 0.1: 15, 1.0: 5})  # epochs per fraction,
    finetune_min_updates: int = 200  # ... raised to reach at least this many updates (1 % is ~1 clip per class)
    finetune_lr: float = 5e-4  # one recipe for every arm (AdamW, cosine, warm-up 10 %, label smoothing 0.1); a
    #   starting point, not tuned (benchmarks/studies/README.md, "What was tried")
    layer_decay: float = 0.75  # layer-wise lr decay of the fine-tuning recipe (the image study's)
    time_shift: float = 0.1  # fine-tuning augmentation: every clip shifted by up to this many seconds (Speech
    #   Commands' baselines: 100 ms), the same for every arm and the supervised floor
    val_fraction: float = 0.1  # validation speakers carved from the training split (about this share of its clips)
    knn_k: int = 20  # DINO's k
    knn_temperature: float = 0.07  # DINO's T
    linear_max_iter: int = 300  # L-BFGS iterations of the all-label linear probe
    device: str = "cpu"
    threads: int | None = None  # torch CPU threads (None = torch's choice); recorded with every result
    precision: str = "fp32"  # "fp32" or "bf16" (autocast) for every arm's pretraining and fine-tuning (one per table)
    compile: bool = False  # torch.compile the encoders' blocks (the same math; the calibration includes its cost)
    clock: str = "cpu"  # the budget's clock: "cpu" = this process's CPU seconds, "wall" = wall-clock (GPU runs)
    quick: bool = False  # the smoke version (a synthesised tone folder, seconds per method)
    command: str = ""  # the command line, stored with every result
    # --set METHOD.KEY=VALUE for a tuning run: {method: {field or "lr": value}} on top of AUDIO_STUDY_RECIPES
    recipe_sets: dict = field(default_factory=dict)
    recipes: ClassVar[dict] = AUDIO_STUDY_RECIPES  # the study's recipe per method (not stored in config.json)
    # fields that define a speech study: results made with other values must not be mixed into one table
    study_fields: ClassVar[tuple] = ("precision", "data", "budget_minutes", "clock", "preset", "dim", "depth", "heads",
                                     "conv_dim", "batch_size", "crop_seconds", "frozen_fraction", "finetune_lr",
                                     "layer_decay", "time_shift", "val_fraction", "knn_k", "knn_temperature",
                                     "finetune_min_updates", "recipe_sets")
    study_defaults: ClassVar[dict] = {}  # every field was stored from the first speech study on
    study_name: ClassVar[str] = "speech comparison"

    @property
    def arms(self) -> tuple[str, ...]:
        return ("random",) + tuple(self.methods) + ("features", "supervised")

    @property
    def budget_s(self) -> float:
        return 60.0 * self.budget_minutes

    @property
    def window(self) -> int:
        """Samples per clip (16 kHz)."""
        return int(round(self.crop_seconds * 16_000))

    def extra_study_changes(self, old: dict) -> list[tuple]:
        """Nothing beyond `study_fields` defines a speech study."""
        return []
