"""Test-session settings shared by every test file.

One torch thread everywhere, in this process and in the subprocesses the end-to-end tests start
(`OMP_NUM_THREADS` is inherited): results that are compared bit for bit (resume equality, 1 vs 2
processes) then come from the same reduction order, and the tiny models of the tests run faster on one
thread than on two when the machine is shared. This is the only place that sets the thread count: a test
file does not pin it again.

The independent references the tests compare against (layer and instance norm, Smooth L1, attention,
the float32 parity tolerance) live in `tests/reference.py`; markers: `slow` (subprocesses, torchrun,
notebooks, multi-second runs; `python -m pytest -m "not slow"` is the fast loop) and `gpu`. `pytest.approx`
refuses a tensor here on every pytest version (below), so a statistic is converted where it leaves the method.
"""

import os

import pytest
import torch

os.environ["OMP_NUM_THREADS"] = "1"
os.environ["MKL_NUM_THREADS"] = "1"
os.environ.setdefault("MPLBACKEND", "Agg")
torch.set_num_threads(1)

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
    torch.set_num_threads(1)
