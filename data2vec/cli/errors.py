"""The one exception type the CLI turns into a one-line error message and exit code 2."""


class CliError(Exception):
    """Bad input from the user: the message names the problem and the fix."""
