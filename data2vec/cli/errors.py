"""The one exception type the CLI turns into a one-line error message and exit code 2, the exit status of a
command stopped by a signal (`Interrupted`, `signal_exit_code`), and the help texts the subcommands share (kept
here, away from torch, so that `data2vec --help` stays fast)."""

import signal

# the help of --overwrite, the same on every command that refuses an --out holding a result
OVERWRITE_HELP = ("replace the result already in --out: the files this command writes there are deleted first "
                  "(other files are left alone); without it such a folder is refused")


class CliError(Exception):
    """Bad input from the user: the message names the problem and the fix."""


def signal_exit_code(signal_name: str) -> int:
    """128 + the signal's number (SIGINT 130, SIGTERM 143): the status a shell reports for a process ended by that
    signal, so that `data2vec pretrain ... && data2vec finetune ...` stops after an interrupted run."""
    return 128 + int(signal.Signals[signal_name])


class Interrupted(CliError):
    """A command stopped by SIGINT/SIGTERM after saving what it had; the message says how to continue, the exit
    status is `signal_exit_code` (a CliError, so callers that catch those still stop on it)."""

    def __init__(self, message: str, signal_name: str):
        super().__init__(message)
        self.exit_code = signal_exit_code(signal_name)


def with_fix(message: str, fix: str) -> str:
    """`message`, with "; fix: <fix>" added when it does not name a fix yet (a library error passed on)."""
    return message if "fix:" in message else f"{message}; fix: {fix}"


def config_refusal(error: ValueError, owner: str, flags: dict[str, str] | None = None) -> CliError:
    """A config's "Owner.field: problem; fix: ..." (`config.config_error`) as the command's one-line refusal,
    naming the flag: `--field-name`, or `flags[field]` where the flag is spelled differently."""
    message = str(error)
    where, sep, rest = message.partition(": ")
    if sep and where.startswith(owner + "."):
        field = where[len(owner) + 1:]
        message = f"{(flags or {}).get(field, '--' + field.replace('_', '-'))}: {rest}"
    return CliError(message)


import argparse  # noqa: E402  (kept next to the one class that needs it)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows `(default: X)` only where the default is a real value the help text does not already state."""

    def _get_help_string(self, action):
        text = action.help or ""
        if action.default is None or action.default is argparse.SUPPRESS or action.default is False \
                or "default" in text.lower() or action.default in ([], ""):
            return text
        return super()._get_help_string(action)
