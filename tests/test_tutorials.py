"""Execute every tutorial notebook end to end and fail on any error; check the notebooks match their source.

Each notebook runs in a fresh `python3` kernel (this interpreter, through a kernel spec written into
tmp_path, so a machine without a registered kernel works too), with the working directory set to a
temporary folder and `MPLBACKEND=Agg`. The notebooks carry their own asserts (targets vs
`build_targets`, loss by hand vs `regression_loss`, ...), so an assertion failure inside a cell fails here.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nbclient  # the dev extra (pip install -e ".[dev]") installs nbclient, nbformat and ipykernel
import nbformat
import pytest

TUTORIALS = Path(__file__).resolve().parents[1] / "tutorials"
NOTEBOOKS = sorted(TUTORIALS.glob("*.ipynb"))
CELL_TIMEOUT_S = 120


@pytest.fixture
def python3_kernel(tmp_path, monkeypatch):
    """A `python3` kernel spec for this interpreter, found first on JUPYTER_PATH (no user-level install)."""
    from ipykernel.kernelspec import install

    prefix = tmp_path / "jupyter_prefix"
    install(kernel_name="python3", prefix=str(prefix))  # argv: [sys.executable, -m, ipykernel_launcher, ...]
    data_dir = prefix / "share" / "jupyter"
    monkeypatch.setenv("JUPYTER_PATH", os.pathsep.join(filter(None, [str(data_dir), os.environ.get("JUPYTER_PATH")])))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    from jupyter_client.kernelspec import KernelSpecManager

    spec = KernelSpecManager().get_kernel_spec("python3")
    assert Path(spec.resource_dir).resolve().is_relative_to(prefix.resolve())
    return "python3"


def test_there_are_tutorials():
    assert NOTEBOOKS, f"no notebooks in {TUTORIALS}; run python tutorials/make_notebooks.py"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_without_error(path, tmp_path, python3_kernel):
    nb = nbformat.read(path, as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), \
        f"{path.name} is committed with outputs; regenerate it with python tutorials/make_notebooks.py"
    workdir = tmp_path / "run"
    workdir.mkdir()
    client = nbclient.NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name=python3_kernel,
                                     resources={"metadata": {"path": str(workdir)}})
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as err:  # the message holds the cell source and traceback
        pytest.fail(f"{path.name} failed:\n{err}")
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors, f"{path.name}: {errors[0]['ename']}: {errors[0]['evalue']}"


def test_notebooks_match_their_generator():
    """The committed .ipynb files are exactly what tutorials/make_notebooks.py writes."""
    result = subprocess.run([sys.executable, str(TUTORIALS / "make_notebooks.py"), "--check"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
