"""Test-session settings shared by every test file.

One thread everywhere (torch's pool and numpy's / scipy's BLAS pools, `devices.set_threads`), in this process and
in the subprocesses the end-to-end tests start (`OMP_NUM_THREADS` and `OPENBLAS_NUM_THREADS` are inherited):
results that are compared bit for bit (resume equality, 1 vs 2 processes) then come from the same reduction
order, and the tiny models and probes of the tests run faster on one thread than on two when the machine is shared.
This is the only place that sets the thread count: a test file does not pin it again.

The independent references the tests compare against (layer and instance norm, Smooth L1, attention,
the float32 parity tolerance) live in `tests/reference.py`; markers: `slow` (subprocesses, torchrun,
notebooks, multi-second runs; `python -m pytest -m "not slow"` is the fast loop) and `gpu`. `pytest.approx`
refuses a tensor here on every pytest version (below), so a statistic is converted where it leaves the method.

Tests write only under `tmp_path`: a session that leaves a `runs/` folder in the checkout (or the working
directory) where there was none fails, naming it (a command run with its default --out).
"""

import os
from pathlib import Path

import pytest
import torch

from data2vec.devices import set_threads

set_threads(1)  # torch's pool and numpy's / scipy's BLAS pools; the environment variables it sets reach subprocesses
os.environ.setdefault("MPLBACKEND", "Agg")

_approx = pytest.approx


def approx_of_host_values(expected, *args, **kwargs):
    """`pytest.approx` that refuses a tensor on every pytest version, as pytest 9.2 and newer do (with a less
    telling "iteration over a 0-d tensor"): a suite that passes on an older pytest then passes on today's too.
    Convert a method's statistics first (`reference.host_values`, or `.item()`)."""
    values = expected.values() if isinstance(expected, dict) else expected if isinstance(expected, list | tuple) \
        else [expected]
    if any(torch.is_tensor(v) for v in values):
        raise TypeError("pytest.approx got a tensor; fix: convert it to a float first (reference.host_values)")
    return _approx(expected, *args, **kwargs)


pytest.approx = approx_of_host_values


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Re-pin after every test: a command run in-process (the demo, a benchmark's main) may set its own thread
    count, and a later bitwise comparison in this process would then see another reduction order."""
    yield
    if torch.get_num_threads() != 1:  # a command's --threads sets torch's and the BLAS pools together
        set_threads(1)


# ---- tests write only under tmp_path ---------------------------------------------------------------------------
_NEW_RUNS = pytest.StashKey[list]()


def _runs_folders(config) -> set[Path]:
    """Where a command's default --out (runs/...) would land: the checkout and the working directory."""
    return {Path(config.rootpath) / "runs", Path.cwd() / "runs"}


def pytest_sessionstart(session):
    session.config.stash[_NEW_RUNS] = [p for p in _runs_folders(session.config) if not p.exists()]


def pytest_sessionfinish(session, exitstatus):
    """Fail the session when a test wrote a runs/ folder outside tmp_path. Checked once, by the process that starts
    before and ends after every test: the only one without `workerinput` (pytest-xdist's workers have it)."""
    if hasattr(session.config, "workerinput"):
        return
    appeared = [p for p in session.config.stash.get(_NEW_RUNS, []) if p.exists()]
    if appeared:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        message = (f"a test wrote {appeared[0]} (files outside tmp_path); fix: pass --out under tmp_path to the "
                   "command that wrote it, then delete that folder")
        if reporter is not None:
            reporter.write_line("\n" + message, red=True)  # on its own line after the progress dots
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
