"""`data2vec convert`: HuggingFace-format checkpoints <-> our checkpoint format (docs/design.md section 7).

    data2vec convert --from-hf FOLDER --out DIR
        imports a `save_pretrained` folder (bert, roberta, data2vec-text, vit, beit, data2vec-vision; task
        heads included when they match ours) into our format: DIR/model.safetensors (`backbone.*`,
        `head.*`) + DIR/config.json {"encoder", "family", "head"}; the tokenizer files are copied along.
    data2vec convert --to-hf OURDIR --out FOLDER --family {roberta,data2vec-text,bert,vit,data2vec-vision,beit,
                                                          data2vec-audio}
        exports our checkpoint (a convert output, a `data2vec finetune` best/ folder or a `data2vec pretrain`
        run) so that `transformers`' `AutoModel.from_pretrained(FOLDER)` loads it.

Neither direction touches the network; `data2vec finetune --init` also accepts a HuggingFace folder
directly, so converting first is optional.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .errors import OVERWRITE_HELP, CliError, HelpFormatter

EXPORT_FAMILIES = ("roberta", "data2vec-text", "bert", "vit", "data2vec-vision", "beit", "data2vec-audio")


def add_parser(sub) -> None:
    p = sub.add_parser(
        "convert",
        help="import/export HuggingFace-format checkpoints (bert, roberta, data2vec-text, vit, beit, data2vec-vision, "
        "data2vec-audio)",
        description="Convert between HuggingFace `save_pretrained` folders and our checkpoint format. "
        "Download the official weights yourself (e.g. `huggingface-cli download facebook/data2vec-text-base "
        "--local-dir d2v-text`); nothing here uses the network.",
        formatter_class=HelpFormatter,
    )
    direction = p.add_mutually_exclusive_group(required=True)
    direction.add_argument("--from-hf", metavar="FOLDER",
                           help="a HuggingFace folder (config.json + model.safetensors or pytorch_model.bin)")
    direction.add_argument("--to-hf", metavar="OURDIR",
                           help="our checkpoint folder (convert output, finetune best/, pretrain run or checkpoint/)")
    p.add_argument("--out", required=True,
                   help="output folder (created); one that already holds a checkpoint is refused unless --overwrite")
    p.add_argument("--overwrite", action="store_true", help=OVERWRITE_HELP)
    p.add_argument("--family", choices=EXPORT_FAMILIES, default=None,
                   help="--to-hf layout: roberta/data2vec-text for our text encoders (bert for position_offset 0), "
                   "data2vec-vision/beit for relative-bias + layer-scale encoders, vit for learned positions. "
                   "Default: the family recorded in the checkpoint, else roberta (text) / data2vec-vision (vision)")
    p.add_argument("--tokenizer", default=None,
                   help="--to-hf: folder whose tokenizer files (tokenizer.json, vocab.json+merges.txt, vocab.txt) "
                   "are copied next to the weights (default: those found next to OURDIR)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from .common import prepare_run_dir, removed_on_failure

    source = Path(args.from_hf or args.to_hf)
    if source.exists() and Path(args.out).resolve() in (source.resolve(), source.resolve().parent):
        raise CliError(f"--out {args.out} is the folder being converted; fix: choose another --out")
    with removed_on_failure(args.out, "convert"):  # a conversion that fails leaves no folder or partial files
        out, _ = prepare_run_dir(args.out, "convert", overwrite=args.overwrite)
        return _import_hf(args, out) if args.from_hf else _export_hf(args, out)


def _import_hf(args: argparse.Namespace, out: Path) -> int:
    """--from-hf: a HuggingFace folder -> our format in `out`."""
    from ..hub.files import copy_tokenizer_files
    from ..hub.hf_import import load_hf
    from ..hub.own_format import is_own_format, save_backbone

    src = Path(args.from_hf)
    if not src.is_dir():
        raise CliError(f"--from-hf {src}: no such folder; fix: download the model files into a folder first")
    if is_own_format(src):
        raise CliError(f"--from-hf {src} is already in our format; fix: use it directly or --to-hf to export it")
    model = load_hf(src)
    save_backbone(out, model.backbone, {"family": model.family, "source": str(src)}, head=model.head)
    copied = copy_tokenizer_files(src, out)
    print(f"convert: imported {model.family} from {src} -> {out}")
    print(f"  encoder: {model.encoder_config.depth} x {model.encoder_config.dim}, "
          f"head: {type(model.head).__name__ if model.head is not None else 'none'}")
    print("  " + str(model.report).replace("\n", "\n  "))
    print(f"  tokenizer files: {copied or 'none found (pass --tokenizer to finetune)'}")
    return 0


def _export_hf(args: argparse.Namespace, out: Path) -> int:
    """--to-hf: our checkpoint -> a HuggingFace folder in `out`."""
    from ..hub.files import TOKENIZER_FILES, copy_tokenizer_files
    from ..hub.hf_export import export_hf
    from ..hub.locate import locate_checkpoint
    from ..hub.names import FAMILIES
    from ..hub.own_format import load_own

    if args.tokenizer and not any((Path(args.tokenizer) / name).is_file() for name in TOKENIZER_FILES):
        raise CliError(f"--tokenizer {args.tokenizer}: no tokenizer files ({', '.join(TOKENIZER_FILES[:5])}) "
                       "there; fix: pass the folder that holds tokenizer.json (e.g. <pretrain run>/tokenizer)")
    src, kind = locate_checkpoint(args.to_hf)
    if kind == "huggingface":
        raise CliError(f"--to-hf {args.to_hf} is already a HuggingFace folder; fix: use it as it is, or import it "
                       "with --from-hf")
    model = load_own(src)
    cfg = model.encoder_config
    family = args.family or (model.family if model.family in FAMILIES else None)
    if family is None:  # our own runs record no HF family: pick the layout that holds the encoder
        family = ("bert" if cfg.position_offset == 0 else "roberta") if cfg.modality == "text" else \
            ("vit" if cfg.position == "learned" and cfg.layer_scale is None else "data2vec-vision")
        family = "data2vec-audio" if cfg.modality == "audio" else family
    export_hf(out, model, family)
    candidates = [Path(args.tokenizer)] if args.tokenizer else [src, src / "tokenizer", src.parent,
                                                                  src.parent / "tokenizer"]
    tokenizer_src = None
    for folder in candidates:
        if folder.is_dir() and copy_tokenizer_files(folder, out):
            tokenizer_src = folder
            break
    print(f"convert: exported {src} as {family} -> {out} (head: "
          f"{type(model.head).__name__ if model.head is not None else 'none'}); tokenizer from "
          f"{tokenizer_src or 'nowhere (pass --tokenizer)'}")
    return 0
