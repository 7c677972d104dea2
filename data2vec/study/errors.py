"""The two ways a study stops early: bad input (`StudyError`) and a signal (`StudyInterrupted`).

Both carry a one-line message that names the problem and its fix. `StudyError` is a ValueError, so any caller
that reports the library's own checks reports it too; the `data2vec` command turns `StudyInterrupted` into the
exit status of the signal (130 for SIGINT, 143 for SIGTERM) after the study saved what it had.
"""

import signal


class StudyError(ValueError):
    """Bad input to a study or its data: the message names the problem and the fix."""


class StudyInterrupted(StudyError):
    """A study stopped by SIGINT/SIGTERM after saving what it had; the message says how to continue."""

    def __init__(self, message: str, signal_name: str):
        super().__init__(message)
        self.signal_name = signal_name  # "SIGINT" or "SIGTERM"
        self.exit_code = 128 + int(signal.Signals[signal_name])  # what a shell reports for a process it ended
