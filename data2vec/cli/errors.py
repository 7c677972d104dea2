"""The one exception type the CLI turns into a one-line error message and exit code 2."""


class CliError(Exception):
    """Bad input from the user: the message names the problem and the fix."""


import argparse  # noqa: E402  (kept next to the one class that needs it)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows `(default: X)` only where the default is a real value the help text does not already state."""

    def _get_help_string(self, action):
        text = action.help or ""
        if action.default is None or action.default is argparse.SUPPRESS or action.default is False \
                or "default" in text.lower() or action.default in ([], ""):
            return text
        return super()._get_help_string(action)
