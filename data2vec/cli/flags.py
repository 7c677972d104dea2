"""The flags every running command shares (`pretrain`, `finetune`, `probe`, `demo`, `compare`): one definition,
one default, one help text, so `--device` and `--threads` mean the same everywhere.

Light on purpose (no torch at import): `data2vec --help` builds every subcommand's parser.
"""

from __future__ import annotations

import argparse

from .errors import CliError

DEVICE_HELP = ("auto (a GPU when one is visible, else the CPU), cpu, cuda or cuda:N; under torchrun a plain cuda is "
               "each rank's own GPU")
THREADS_HELP = ("torch CPU threads (default: torch's choice, usually one per core); pin it (e.g. --threads 1) when "
                "other work shares the machine, so timings and budgets hold")


def add_device_and_threads(p: argparse.ArgumentParser, threads_help: str = THREADS_HELP) -> None:
    """--device (default auto) and --threads (default: torch's choice)."""
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.add_argument("--threads", type=int, default=None, help=threads_help)


def apply_threads(threads: int | None) -> None:
    """Set torch's CPU thread count from --threads (None leaves torch's choice)."""
    if threads is None:
        return
    if threads < 1:
        raise CliError(f"--threads must be >= 1, got {threads}; fix: pass a positive count, e.g. --threads 1")
    import torch

    torch.set_num_threads(threads)
