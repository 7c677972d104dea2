"""The espeak-ng program, run as a subprocess: finding it, its version, and synthesising one utterance to a WAV.

What it implements: the command line of espeak-ng (https://github.com/espeak-ng/espeak-ng, `espeak-ng --help`):
  espeak-ng -v <voice>+<variant> -s <words per minute> -p <pitch 0-99> -w <out.wav> "<text>"
which writes a mono 16-bit WAV at the synthesiser's rate (22,050 Hz for espeak-ng's own voices), and
`espeak-ng --version`, whose first line ("eSpeak NG text-to-speech: 1.51  Data at: ...") names the version the
corpus manifest records, since another version may pronounce the same text differently.

Differences from the original: none (espeak-ng is called as a user would; nothing is linked to its library).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

INSTALL_FIX = ("install it: sudo apt-get install espeak-ng (Debian/Ubuntu), brew install espeak-ng (macOS), or the "
               "espeak-ng .msi from https://github.com/espeak-ng/espeak-ng/releases (Windows, then add its folder to "
               "PATH); or pass --espeak /path/to/espeak-ng")


class EspeakNotFound(FileNotFoundError):
    """No espeak-ng program where it was looked for; the message names the install fix."""


class EspeakFailed(RuntimeError):
    """espeak-ng ran and failed (an unknown voice, a full disk): the message holds the command and its stderr."""


def find_espeak(program: str = "espeak-ng") -> str:
    """The path of the espeak-ng program: `program` itself if it is a path to an executable, else found on PATH."""
    path = shutil.which(program)
    if path is None:
        where = "at that path" if os.sep in program or (os.altsep and os.altsep in program) else "on PATH"
        raise EspeakNotFound(f"{program} not found {where} (the speech synthesiser that builds the corpus); "
                             f"fix: {INSTALL_FIX}")
    return path


def _run(command: list[str]) -> subprocess.CompletedProcess:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise EspeakFailed(f"{' '.join(command)} could not run ({error}); fix: check the espeak-ng install") from error
    if done.returncode != 0:
        message = (done.stderr or done.stdout).strip().splitlines()
        raise EspeakFailed(f"{' '.join(command)} failed (exit {done.returncode}: "
                           f"{message[-1] if message else 'no message'}); fix: check the voice and the install")
    return done


def espeak_version(binary: str) -> str:
    """The first line of `espeak-ng --version`, with the data path (machine-specific) cut off."""
    first = _run([binary, "--version"]).stdout.strip().splitlines()
    return re.split(r"\s+Data at:", first[0])[0].strip() if first else "unknown"


def synthesis_args(voice: str, variant: str, speed: int, pitch: int) -> list[str]:
    """The settings part of the command line (what the manifest records for each file)."""
    return ["-v", f"{voice}+{variant}", "-s", str(speed), "-p", str(pitch)]


def synthesise(binary: str, args: list[str], text: str, out_wav: Path) -> None:
    """Run espeak-ng with the settings `args` to write `text` as speech into `out_wav`."""
    _run([binary, *args, "-w", str(out_wav), text])
    if not Path(out_wav).is_file():
        raise EspeakFailed(f"{binary} exited without writing {out_wav}; fix: check the espeak-ng install")
