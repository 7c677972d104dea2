"""`data2vec compare --modality text`: BERT-MLM, data2vec and data2vec 2.0 on one text corpus at an equal wall-clock
budget, fine-tuned on GLUE tasks against random initialisation and the majority class (issue 16; being built)."""

from __future__ import annotations

import argparse

from .errors import CliError


def add_text_arguments(parser: argparse.ArgumentParser) -> None:
    """The text comparison's own flags, added to `data2vec compare`."""
    group = parser.add_argument_group("text (--modality text)")
    group.add_argument("--glue", default=None, help="text: the GLUE root folder (one sub-folder per task)")


def run_text(args: argparse.Namespace) -> int:
    raise CliError("--modality text is not built yet; fix: use --modality vision")
