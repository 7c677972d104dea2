"""Our own checkpoint format: `model.safetensors` with the state-dict keys of a `TaskModel` (`backbone.*`,
`head.*`) and `config.json` = {"encoder": EncoderConfig.to_dict(), "family": ..., "head": ...}.
`save_backbone` writes it, `load_own` reads it back strictly, and also reads the `checkpoint/` or `best/` folder
of a `data2vec pretrain` / `finetune` run (their config.json holds the run's configuration around the encoder).

Differences from a HuggingFace folder: the encoder is described by our own `EncoderConfig`, so every variant
the library builds (pre-LN text, relative positions in any family, ...) round-trips, not only those a
`transformers` family can express.
"""

from __future__ import annotations

import json
from pathlib import Path

from torch import Tensor, nn

from ..backbone import build_backbone
from ..config import EncoderConfig
from ..heads import (
    AudioClassificationHead,
    CTCHead,
    ImageClassificationHead,
    QuestionAnsweringHead,
    SequenceClassificationHead,
)
from .files import fit_tensor, read_json, read_weights
from .pretrained import PretrainedModel


def head_spec(head: nn.Module | None) -> dict | None:
    """A JSON description of a head from which `head_from_spec` rebuilds it."""
    if head is None:
        return None
    if isinstance(head, SequenceClassificationHead):
        return {"type": "sequence", "num_labels": head.num_labels, "style": head.style, "dropout": head.dropout.p}
    if isinstance(head, QuestionAnsweringHead):
        return {"type": "qa"}
    if isinstance(head, ImageClassificationHead):
        return {"type": "image", "num_classes": head.num_classes, "pooling": head.pooling,
                "norm": head.norm is not None, "eps": head.norm.eps if head.norm is not None else 1e-6}
    if isinstance(head, CTCHead):
        return {"type": "ctc", "vocab_size": head.vocab_size, "dropout": head.dropout.p}
    if isinstance(head, AudioClassificationHead):
        return {"type": "audio", "num_classes": head.num_classes, "proj_dim": head.proj_dim}
    raise ValueError(f"cannot save a head of type {type(head).__name__}; use one of data2vec.heads")


def head_from_spec(spec: dict | None, dim: int) -> nn.Module | None:
    if spec is None:
        return None
    kind = spec.get("type")
    if kind == "sequence":
        return SequenceClassificationHead(dim, spec["num_labels"], style=spec["style"], dropout=spec["dropout"])
    if kind == "qa":
        return QuestionAnsweringHead(dim)
    if kind == "image":
        return ImageClassificationHead(dim, spec["num_classes"], pooling=spec["pooling"], norm=spec["norm"],
                                       eps=spec["eps"])
    if kind == "ctc":
        return CTCHead(dim, spec["vocab_size"], dropout=spec["dropout"])
    if kind == "audio":
        return AudioClassificationHead(dim, spec["num_classes"], proj_dim=spec["proj_dim"])
    raise ValueError(f"config.json head type {kind!r} is unknown; expected 'sequence', 'qa', 'image', 'ctc' or "
                     "'audio'")


def save_backbone(path: str | Path, backbone: nn.Module, extra_config: dict | None = None,
                  head: nn.Module | None = None) -> Path:
    """Write our format: model.safetensors (TaskModel keys: `backbone.*`, `head.*`) + config.json, which
    `data2vec finetune --init` and `load_pretrained` read."""
    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    state = {f"backbone.{k}": v.detach().contiguous().cpu() for k, v in backbone.state_dict().items()}
    if head is not None:
        state.update({f"head.{k}": v.detach().contiguous().cpu() for k, v in head.state_dict().items()})
    config = {"family": None, **(extra_config or {}), "encoder": backbone.cfg.to_dict(), "head": head_spec(head)}
    save_file(state, str(path / "model.safetensors"))
    with open(path / "config.json", "w") as f:
        json.dump(config, f, indent=2)
    return path


def find_encoder_dict(config) -> dict | None:
    """The EncoderConfig fields inside a saved config: top-level "encoder", or nested in a run config
    (`data2vec pretrain` / `data2vec finetune` write the method's or fine-tuning's config around it)."""
    fields = set(EncoderConfig.__dataclass_fields__)
    if isinstance(config, dict):
        if "modality" in config and "dim" in config and set(config) <= fields:
            return config
        for value in ([config["encoder"]] if isinstance(config.get("encoder"), dict) else []) + list(config.values()):
            found = find_encoder_dict(value)
            if found is not None:
                return found
    return None


def is_pretraining_run(config: dict) -> bool:
    """A checkpoint written by `data2vec pretrain` (its config.json holds the method's configuration)."""
    return config.get("command") == "pretrain" or isinstance(config.get("method_config"), dict)


def is_own_format(folder: str | Path) -> bool:
    path = Path(folder) / "config.json"
    return path.is_file() and "model_type" not in read_json(path) and find_encoder_dict(read_json(path)) is not None


def infer_head(head_state: dict[str, Tensor], cfg: EncoderConfig) -> nn.Module | None:
    """Rebuild a head from its tensors when config.json does not describe it (a `data2vec finetune` best/
    folder): dense+out = sequence head (bert style for position_offset 0, else roberta), qa = span head,
    projector + classifier = speech keyword head, classifier (+ norm) = image head (norm -> mean pooling, no norm ->
    CLS), proj = CTC head."""
    if not head_state:
        return None
    if {"dense.weight", "out.weight"} <= set(head_state):
        style = "bert" if cfg.position_offset == 0 else "roberta"
        return SequenceClassificationHead(cfg.dim, head_state["out.weight"].shape[0], style=style)
    if "qa.weight" in head_state:
        return QuestionAnsweringHead(cfg.dim)
    if "projector.weight" in head_state:  # before "classifier": the speech head has both
        return AudioClassificationHead(cfg.dim, head_state["classifier.weight"].shape[0],
                                       proj_dim=head_state["projector.weight"].shape[0])
    if "classifier.weight" in head_state:
        norm = "norm.weight" in head_state
        return ImageClassificationHead(cfg.dim, head_state["classifier.weight"].shape[0],
                                       pooling="mean" if norm else "cls", norm=norm, eps=cfg.norm_eps)
    if "proj.weight" in head_state:
        return CTCHead(cfg.dim, head_state["proj.weight"].shape[0])
    raise ValueError(f"head tensors {sorted(head_state)[:4]} match none of data2vec.heads")


def load_own(folder: str | Path) -> PretrainedModel:
    """Read our format back (strict: every key must match). Also reads the `checkpoint/` or `best/` folder
    of a `data2vec pretrain` / `finetune` run (student backbone under `backbone.` or `student.backbone.`)."""
    folder = Path(folder)
    config = read_json(folder / "config.json")
    encoder = find_encoder_dict(config)
    if encoder is None:
        raise ValueError(f"{folder}/config.json names no encoder configuration: it is not a data2vec checkpoint "
                         f"(a HuggingFace folder has 'model_type'; see load_pretrained)")
    cfg = EncoderConfig.from_dict(encoder)
    backbone = build_backbone(cfg)
    state = read_weights(folder)
    head_state = {k[len("head."):]: v for k, v in state.items() if k.startswith("head.")}
    prefixes = sorted({k[:k.index("backbone.") + len("backbone.")] for k in state if "backbone." in k}, key=len)
    if prefixes:  # TaskModel / method layout: the (shortest, i.e. student) `...backbone.` prefix
        body_state = {k[len(prefixes[0]):]: v for k, v in state.items() if k.startswith(prefixes[0])}
    else:  # a bare backbone state dict
        body_state = {k: v for k, v in state.items() if not k.startswith("head.")}
    _strict_load(backbone, body_state, folder)
    if is_pretraining_run(config):
        spec = None  # the method's own heads (regression, MLM, DINO) are not task heads: fine-tuning adds one
        head_state = {}
    else:
        spec = config.get("head") if "head" in config else "infer"
    head = infer_head(head_state, cfg) if spec == "infer" else head_from_spec(spec, cfg.dim)
    if head is not None:
        _strict_load(head, head_state, folder, prefix="head.")
    elif head_state:
        raise ValueError(f"{folder} holds head weights {sorted(head_state)[:4]} but config.json has head: null")
    extra = {k: v for k, v in config.items() if k not in ("encoder", "head")}
    family = config.get("family") if isinstance(config.get("family"), str) else cfg.modality
    return PretrainedModel(backbone, head, family, extra=extra).eval()


def _strict_load(module: nn.Module, state: dict[str, Tensor], folder: Path, prefix: str = "") -> None:
    expected = module.state_dict()
    missing = [prefix + k for k in expected if k not in state]
    unexpected = [prefix + k for k in state if k not in expected]
    if missing or unexpected:
        raise ValueError(f"{folder}/model.safetensors does not fit config.json: missing {missing[:8]}, "
                         f"unexpected {unexpected[:8]}")
    for k, v in state.items():
        fit_tensor(prefix + k, v, expected[k])
    module.load_state_dict(state)
