"""The `data2vec` command: one subcommand per module of this package.

Each subcommand module (`pretrain`, `finetune`, `probe`, `compare`, `demo`, `convert`) defines
`add_parser(subparsers)` and `run(args) -> int`. This file is the only place that lists them. The CLI
layer is where the library (`data2vec/`), the reference methods (`baselines/`) and the data (`tasks/`)
are wired together; nothing else in `data2vec/` imports `tasks/` or `baselines/`.

Bad input never ends in a bare traceback: a `CliError` (or a ValueError / FileNotFoundError raised by
the library's own checks) is printed as one line `data2vec <command>: error: ...` naming the problem and
its fix, and the exit code is 2.
A command stopped by Ctrl-C (SIGINT) or SIGTERM exits 130 or 143 (128 + the signal's number), after saving
what it can: pretraining finishes its update and saves a checkpoint; elsewhere the signal stops the command
where it is (fine-tuning keeps the checkpoint of its last evaluated epoch).

Run folders (`common.prepare_run_dir`, `common.removed_on_failure`): no command replaces a result already in
its --out unless asked (`--overwrite`; `--resume` continues a checkpoint where the command has it), and a
launch that fails before training removes what it created, so a typo leaves no empty folder behind.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import signal
import sys
import threading
from contextlib import contextmanager

from .errors import CliError, Interrupted, signal_exit_code

SUBCOMMANDS = ("pretrain", "finetune", "probe", "compare", "demo", "convert")


def _available_modules():
    for name in SUBCOMMANDS:
        qualified = f"{__name__}.{name}"
        if importlib.util.find_spec(qualified) is not None:
            yield name, importlib.import_module(qualified)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="data2vec",
        description="data2vec from scratch: self-supervised pretraining (data2vec, BERT, DINO), fine-tuning "
        "and probing on one Transformer core. Run `data2vec demo` for a tour on the CPU (a few minutes, no download).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for _name, module in _available_modules():
        module.add_parser(sub)
    return parser


def one_line(error: BaseException) -> str:
    """The message of an error for the one-line report. An error raised inside a DataLoader worker arrives
    re-raised with the worker's traceback in its message: only its last line (the original message) is kept."""
    text = str(error)
    if "in DataLoader worker process" in text:
        last = text.strip().splitlines()[-1]
        text = last.split(": ", 1)[1] if ": " in last and last.split(": ", 1)[0].endswith("Error") else last
    return text


class Terminated(KeyboardInterrupt):
    """SIGTERM raised as an exception, as Python raises Ctrl-C: the command stops where it is, its `finally`
    blocks run, and `main` exits 143. The pretraining loop installs its own handler (finish the update, save)."""


def _raise_terminated(signum, frame):
    raise Terminated


@contextmanager
def sigterm_raises():
    """Within the block, SIGTERM raises `Terminated` (only the main thread can install a handler)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # the command line as given (stored with results)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        with sigterm_raises():
            return int(args.run(args) or 0)
    except Interrupted as error:  # stopped by a signal after saving: the message says how to continue
        print(f"data2vec {args.command}: {one_line(error)}", file=sys.stderr)
        return error.exit_code
    except (CliError, ValueError, FileNotFoundError, NotADirectoryError, PermissionError) as error:
        print(f"data2vec {args.command}: error: {one_line(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as error:
        name = "SIGTERM" if isinstance(error, Terminated) else "SIGINT"
        print(f"data2vec {args.command}: interrupted ({name})", file=sys.stderr)
        return signal_exit_code(name)
