"""The flags every running command shares (`pretrain`, `finetune`, `probe`, `demo`, `compare`): one definition,
one default, one help text, so `--device` and `--threads` mean the same everywhere.

Light on purpose (no torch at import): `data2vec --help` builds every subcommand's parser.
"""

from __future__ import annotations

import argparse

from .errors import CliError

DEVICE_HELP = ("auto (a GPU when one is visible, else the CPU), cpu, cuda or cuda:N; under torchrun a plain cuda is "
               "each rank's own GPU")
THREADS_HELP = ("CPU threads, for torch and for numpy/scipy (default: one per core); pin it (e.g. --threads 1) when "
                "other work shares the machine, so timings and budgets hold")


def add_device_and_threads(p: argparse.ArgumentParser, threads_help: str = THREADS_HELP) -> None:
    """--device (default auto) and --threads (default: torch's choice)."""
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.add_argument("--threads", type=int, default=None, help=threads_help)


def apply_threads(threads: int | None) -> None:
    """Set the CPU thread count from --threads: torch's and numpy's / scipy's pools (None leaves the defaults)."""
    if threads is None:
        return
    if threads < 1:
        raise CliError(f"--threads must be >= 1, got {threads}; fix: pass a positive count, e.g. --threads 1")
    from ..devices import set_threads

    set_threads(threads)


def add_precision(p: argparse.ArgumentParser, compile_help: str | None = None) -> None:
    """--precision (auto, fp32, bf16; default auto), --bf16 (the same as --precision bf16) and --compile."""
    from ..precision import PRECISION_HELP, PRECISIONS  # torch-free names: see precision.py's imports

    p.add_argument("--precision", choices=PRECISIONS, default="auto", help=PRECISION_HELP)
    p.add_argument("--bf16", action="store_true", help="the same as --precision bf16")
    p.add_argument("--compile", action="store_true", help=compile_help or (
        "torch.compile the encoders' Transformer blocks (one compilation serves every block): the same math, "
        "fused element-wise kernels; the first updates pay the compilation (tens of seconds on a CPU), so it pays "
        "in runs of many minutes, on a GPU more than on a CPU (docs/performance.md)"))


def resolve_precision(args: argparse.Namespace, device, quiet: bool = False, resumed: bool | None = None):
    """The run's `precision.Precision` from --precision / --bf16 on `device`, printed unless quiet. `resumed`: the
    bf16 setting of the run being resumed (None for a new run), which --precision auto keeps, so a run continued on
    another machine computes as it began. A contradiction is a CliError."""
    from ..precision import Precision, choose_precision

    requested = args.precision
    if getattr(args, "bf16", False):
        if requested == "fp32":
            raise CliError("--bf16 and --precision fp32 contradict each other; fix: pass one of them")
        requested = "bf16"
    if requested == "auto" and resumed is not None:
        choice = Precision("bf16" if resumed else "fp32", "auto: the precision the resumed run started with")
    else:
        try:
            choice = choose_precision(requested, device)
        except ValueError as error:
            raise CliError(str(error)) from None
    if not quiet:
        print(choice.describe(), flush=True)
    return choice
