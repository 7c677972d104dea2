"""The one method registry: a method name -> everything the commands need to build and train it.

`data2vec pretrain`, the studies (`data2vec.study`: `data2vec compare` and the demo) and
`benchmarks/methods.py` read `METHODS`; nothing else keeps a table of methods. Adding a method = its module
(with a `Config.preset(modality, name, **overrides)` and a `Method(cfg)` that follows
`data2vec.engine.PretrainMethod`), its test file, and one entry below.

An entry names the config and method classes (imported lazily, so `data2vec --help` stays fast), the
modalities the method trains on, the optimiser defaults per modality (small-scale starting points, with the
paper's values in the comments), and for methods that need their own data pipeline (DINO's multi-crop) a
`views` hook that returns the transform settings, the collate function and the config fields derived from
the run.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class OptimDefaults:
    """The optimiser settings a method uses when the command line leaves them unset."""

    lr: float  # peak learning rate at the CLI's default batch
    weight_decay: float  # AdamW decay (never on biases, norms, tokens, position tables)
    betas: tuple[float, float]  # Adam betas
    clip_norm: float  # gradient-norm clipping (0 = off)
    lr_per_256: bool = False  # True: lr is given per 256 samples and scaled by the global batch (DINO's rule)

    def scaled_lr(self, global_batch: int) -> float:
        """lr for this global batch: DINO's linear scaling rule lr = base * global_batch / 256, else as is."""
        return self.lr * global_batch / 256 if self.lr_per_256 else self.lr


@dataclass(frozen=True)
class Views:
    """A method's own data pipeline for images: a function from the method's built config (its --set and recipe
    overrides included) to keyword arguments of `baselines.multicrop.MultiCropTransform` (None = the standard
    single-view augmentation), the collate function, and config fields derived from the run."""

    multicrop: Callable[[Any], dict] | None = None
    collate: Callable | None = None
    derived: dict = field(default_factory=dict)


@dataclass(frozen=True)
class MethodSpec:
    """Everything the commands need to know about one method."""

    name: str  # the --method value
    summary: str  # one line for --help
    config_path: str  # "module:Class" of the config (lazy import)
    method_path: str  # "module:Class" of the method
    optim: dict[str, OptimDefaults]  # modality -> defaults; its keys are the modalities the method trains on
    needs_labels: bool = False  # True: a supervised floor, not a pretraining method (`pretrain` refuses it)
    find_unused_parameters: bool = False  # DDP: parameters without a gradient in some steps (DINO's frozen last layer)
    views: Callable[[str, int, int], Views] | None = None  # (preset, image_size, steps) -> Views, vision only

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(self.optim)

    @property
    def config_class(self) -> type:
        return _load(self.config_path)

    @property
    def method_class(self) -> type:
        return _load(self.method_path)

    def build(self, modality: str, preset: str, **overrides):
        """`Method(Config.preset(modality, preset, **overrides))`."""
        return self.method_class(self.config_class.preset(modality, preset, **overrides))

    def build_fitted(self, modality: str, preset: str, derived: dict, **overrides):
        """`build` with the `derived` fields (from the data: a tokenizer's ids, the encoder's size) kept only where
        the method's config or the encoder has the field; `overrides` are applied as given, on top."""
        from .config import EncoderConfig, field_names

        known = field_names(self.config_class) | field_names(EncoderConfig)
        return self.build(modality, preset, **{**{k: v for k, v in derived.items() if k in known}, **overrides})


def _load(path: str):
    module, _, name = path.partition(":")
    return getattr(importlib.import_module(module), name)


def dino_crops(cfg) -> dict:
    """DINO's crops as its config states them: a `--set n_local=2` or `local_scale=[0.25,0.6]` reaches the data."""
    return dict(local_size=cfg.local_size, n_local=cfg.n_local, global_scale=cfg.global_scale,
                local_scale=cfg.local_scale)


def dino_views(preset: str, image_size: int, steps: int) -> Views:
    """DINO's multi-crop pipeline for a run of `steps` updates at global crop size `image_size`."""
    from baselines.dino import DINOConfig
    from baselines.multicrop import collate_crops

    cfg = DINOConfig.preset("vision", preset, image_size=image_size)
    return Views(
        multicrop=dino_crops,
        collate=collate_crops,
        # DINO's schedules are given in ImageNet steps: scale them to this run
        derived=dict(teacher_temp_warmup_steps=max(1, int(0.3 * steps)),
                     freeze_last_layer_steps=min(cfg.freeze_last_layer_steps, steps // 10)),
    )


METHODS: dict[str, MethodSpec] = {spec.name: spec for spec in (
    MethodSpec(
        name="data2vec",
        summary="regress the EMA teacher's averaged top-K layers at the masked positions (text, vision or audio)",
        config_path="data2vec.v1:Data2VecConfig", method_path="data2vec.v1:Data2Vec",
        optim={
            # paper: 2e-4 at 256 x 512 tokens; Adam (0.9, 0.98); clip 5 (released)
            "text": OptimDefaults(lr=5e-4, weight_decay=0.01, betas=(0.9, 0.98), clip_norm=5.0),
            # released: 2e-3 at batch 2048, AdamW (0.9, 0.999), wd 0.05, clip 3
            "vision": OptimDefaults(lr=1e-3, weight_decay=0.05, betas=(0.9, 0.999), clip_norm=3.0),
            # released audio: 5e-4 (16 GPUs x 3.8M samples), Adam (0.9, 0.98), eps 1e-6, wd 0.01, no clipping
            # given; clip 5 as for text at the CLI's small batches
            "audio": OptimDefaults(lr=5e-4, weight_decay=0.01, betas=(0.9, 0.98), clip_norm=5.0),
        },
    ),
    MethodSpec(
        name="data2vec2",
        summary="data2vec 2.0: a visible-only student with M masks per sample and a conv decoder regresses one "
        "teacher pass (text, vision or audio; --set num_masks=M)",
        config_path="data2vec.v2:Data2Vec2Config", method_path="data2vec.v2:Data2Vec2",
        optim={
            # released text: 2e-4 at 64 x 512 tokens (x 8 masks), Adam (0.9, 0.98), wd 0.01, clip 1;
            # 5e-4 here as for v1 text at the CLI's small batches
            "text": OptimDefaults(lr=5e-4, weight_decay=0.01, betas=(0.9, 0.98), clip_norm=1.0),
            # released images: 1e-3 at batch 256 (x 16 masks), AdamW (0.9, 0.95), wd 0.05, clip 4
            "vision": OptimDefaults(lr=1e-3, weight_decay=0.05, betas=(0.9, 0.95), clip_norm=4.0),
            # released audio: 7.5e-4 cosine, 8k warm-up (8 GPUs x 1M samples x 8 masks), Adam (0.9, 0.98), wd 0.01
            "audio": OptimDefaults(lr=7.5e-4, weight_decay=0.01, betas=(0.9, 0.98), clip_norm=1.0),
        },
    ),
    MethodSpec(
        name="bert",
        summary="masked language modelling with BERT's 80/10/10 corruption and a tied decoder (text)",
        config_path="baselines.bert:BertMLMConfig", method_path="baselines.bert:BertMLM",
        optim={"text": OptimDefaults(lr=5e-4, weight_decay=0.01, betas=(0.9, 0.98), clip_norm=1.0)},  # RoBERTa-style
    ),
    MethodSpec(
        name="dino",
        summary="self-distillation with multi-crop views and a centred, sharpened EMA teacher (vision)",
        config_path="baselines.dino:DINOConfig", method_path="baselines.dino:DINO",
        # main_dino.py: lr 5e-4 per 256 images (linear scaling rule), wd 0.04, clip 3
        optim={"vision": OptimDefaults(lr=5e-4, weight_decay=0.04, betas=(0.9, 0.999), clip_norm=3.0,
                                       lr_per_256=True)},
        find_unused_parameters=True,
        views=dino_views,
    ),
    MethodSpec(
        name="supervised",
        summary="the floor: the same encoder trained on labels only",
        config_path="baselines.supervised:SupervisedConfig", method_path="baselines.supervised:Supervised",
        optim={  # what `data2vec finetune` uses for a random init (RoBERTa GLUE / BEiT recipes, no clipping)
            "text": OptimDefaults(lr=1e-4, weight_decay=0.1, betas=(0.9, 0.98), clip_norm=0.0),
            "vision": OptimDefaults(lr=1e-3, weight_decay=0.05, betas=(0.9, 0.999), clip_norm=0.0),
        },
        needs_labels=True,
    ),
)}

PRETRAINING_METHODS = tuple(name for name, spec in METHODS.items() if not spec.needs_labels)


def get_method(name: str) -> MethodSpec:
    """The registry entry of `name`, or a ValueError listing the known methods."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; fix: use one of {sorted(METHODS)}")
    return METHODS[name]
