"""The SQuAD / XQuAD flags of `data2vec compare --modality text` and their check (the protocol itself is
`data2vec.study.squad`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..study.squad import XQUAD_LANGUAGES
from ..study.text_config import TextCompareConfig
from .errors import CliError


def default(name: str):
    """A TextCompareConfig field's default (the recipe's values and their reasons live there)."""
    return TextCompareConfig.__dataclass_fields__[name].default


def add_squad_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group(
        "SQuAD / XQuAD (--modality text, with --squad)",
        "SQuAD v1.1 dev split by article into a training half and an evaluation half (the XQuAD paragraphs removed "
        "from the training half), the epoch chosen on validation articles carved from the training half; EM/F1 on "
        "the evaluation half and zero-shot XQuAD. Cost (an estimate: ~4 CPU-seconds per update of 32 windows of 256 "
        "tokens and ~0.9 s per 32 windows scored, measured for 4 x 256 on one shared core and extrapolated): one "
        "epoch of the 4,284 fine-tuning questions (5.9k windows at 256 tokens) is ~184 updates, ~12 min; scoring the "
        "validation articles ~1 min per epoch, the 4,645 evaluation questions ~3 min (twice: selected and last "
        "epoch), XQuAD en/de/es ~1-2 min each (German and Spanish need twice the windows of English with the English "
        "BPE); so ~50 min per arm and seed at 3 epochs (4 arms x 3 seeds: ~10 h on one core). Narrow --squad-arms "
        "or cap --squad-max-questions to fit a budget")
    g.add_argument("--squad", default=None,
                   help="SQuAD v1.1 dev-v1.1.json: turns the held-out-article protocol on (without it the comparison "
                   "is GLUE only and its results are unchanged)")
    g.add_argument("--xquad", default=None,
                   help="folder of XQuAD's xquad.<lang>.json (needs --squad): zero-shot scores with the SQuAD "
                   "weights; its question ids decide which SQuAD paragraphs leave the training half")
    g.add_argument("--xquad-languages", default=",".join(XQUAD_LANGUAGES),
                   help="comma-separated XQuAD languages; Latin-script ones suit the English BPE (en, de, es, also "
                   "ro, tr, vi); other scripts fall apart into byte tokens with an English BPE")
    g.add_argument("--squad-arms", default=None,
                   help="comma-separated arms fine-tuned on SQuAD (default: random and every --methods entry); "
                   "at least random and the best pretrained method (known after GLUE) make the comparison")
    g.add_argument("--squad-epochs", type=int, default=default("squad_epochs"),
                   help="fine-tuning epochs (the best on the validation articles is kept); BERT uses 2-3 on 88k "
                   "questions; with the 4.3k here more epochs may help, and the validation articles choose among "
                   "them; each epoch ~12 min per arm on one core")
    g.add_argument("--squad-lr", type=float, default=default("squad_lr"),
                   help="peak lr of every arm (small encoders: 1e-4 to 3e-4; 110M-parameter models 3e-5)")
    g.add_argument("--squad-max-length", type=int, default=None,
                   help="tokens per window (question + context); default 384 capped at the encoder's positions "
                   "(mini: 256). Shorter windows are cheaper per update but cut contexts into more windows")
    g.add_argument("--squad-max-questions", type=int, default=None,
                   help="a seeded subset of the training-half questions (the same for every arm) to fit a CPU "
                   "budget; default all (5,290, of which the validation articles take ~1k); fewer questions make "
                   "every arm's F1 lower and noisier")


def squad_values(args: argparse.Namespace, arms: tuple[str, ...]) -> dict:
    """The flags checked and turned into TextCompareConfig fields (bad input is a one-line CliError)."""
    if args.xquad and not args.squad:
        raise CliError("--xquad needs --squad (XQuAD is scored with the weights fine-tuned on the SQuAD training "
                       "half); fix: add --squad dev-v1.1.json")
    if args.squad and not Path(args.squad).is_file():
        raise CliError(f"--squad {args.squad}: no such file; fix: give SQuAD v1.1 dev-v1.1.json")
    if args.xquad and not Path(args.xquad).is_dir():
        raise CliError(f"--xquad {args.xquad}: no such folder; fix: give the folder holding xquad.<lang>.json")
    languages = tuple(x.strip() for x in args.xquad_languages.split(",") if x.strip())
    if args.xquad and not languages:
        raise CliError("--xquad-languages is empty; fix: e.g. --xquad-languages en,de,es")
    chosen = None
    if args.squad_arms is not None:
        chosen = tuple(a.strip() for a in args.squad_arms.split(",") if a.strip())
        for a in chosen:
            if a not in arms:
                raise CliError(f"--squad-arms: {a} is not an arm of this comparison; fix: use some of "
                               f"{', '.join(arms)}")
        if not chosen:
            raise CliError("--squad-arms is empty; fix: e.g. --squad-arms random,bert (or leave it out: every arm)")
    for flag in ("squad_epochs", "squad_max_questions", "squad_max_length"):
        value = getattr(args, flag)
        if value is not None and value < 1:
            raise CliError(f"--{flag.replace('_', '-')} must be >= 1, got {value}; fix: pass 1 or more")
    if args.squad_lr <= 0:
        raise CliError(f"--squad-lr must be > 0, got {args.squad_lr}; fix: e.g. 1e-4")
    return dict(squad=args.squad, xquad=args.xquad, xquad_languages=languages, squad_arms=chosen,
                squad_epochs=args.squad_epochs, squad_lr=args.squad_lr, squad_max_length=args.squad_max_length,
                squad_max_questions=args.squad_max_questions)
