"""The tutorials: each `.py` source has its notebook and the notebook is exactly what the source generates;
both run end to end without error.

The source of `tutorials/NN_topic.ipynb` is the jupytext percent-format script `tutorials/NN_topic.py`,
converted by `tutorials/make_notebooks.py`. The sources carry their own asserts (targets vs
`build_targets`, loss by hand vs `regression_loss`, ...), so an assertion failure inside a cell fails here.

Every notebook runs (`slow`) in a fresh process, two at a time, with the working directory set to a temporary
folder, `MPLBACKEND=Agg` and `TUTORIAL_QUICK=1` (each tutorial's parameter cell then picks its reduced size, so the
whole series stays inside the suite's time budget). One notebook (`KERNEL_NOTEBOOK`, which trains nothing) runs in a
real Jupyter `python3` kernel through nbclient (this interpreter, through a kernel spec written into a temporary
folder, so a machine without a registered kernel works too): the path a user's Jupyter takes. The others run cell by
cell in IPython's shell (what the kernel runs them in) inside a process forked from a server that has imported
torch, scikit-learn, matplotlib and transformers once: a fresh process per notebook, as a kernel is, without paying
about 6 CPU-seconds of imports for each (half of the series' cost before). The `.py` sources must also run as plain
scripts (`python tutorials/NN_topic.py`, as the README says): they are compiled here as plain Python, which rejects
IPython-only syntax (magics, shell escapes), and `ruff check tutorials/` (in `.ci/run`) rejects undefined names
such as IPython's `display`; executing each source a second time would double the series' share of the suite.
"""

from __future__ import annotations

import functools
import importlib.util
import multiprocessing
import os
import shutil
import signal
import traceback
from pathlib import Path

import pytest

TUTORIALS = Path(__file__).resolve().parents[1] / "tutorials"
NOTEBOOKS = sorted(TUTORIALS.glob("*.ipynb"))
SOURCES = sorted(TUTORIALS.glob("[0-9][0-9]_*.py"))
CELL_TIMEOUT_S = 120
NOTEBOOK_TIMEOUT_S = 600
KERNEL_NOTEBOOK = "06_three_methods_one_encoder"  # nothing trained: the cheapest run through a real kernel
# imported once by the fork server the notebooks' processes start from (each is a module the tutorials import)
PRELOAD = ["torch", "torch._dynamo", "torchvision", "sklearn.datasets", "sklearn.linear_model",
           "sklearn.decomposition", "sklearn.metrics", "matplotlib.pyplot", "IPython", "transformers", "soundfile"]


def load_generator():
    """tutorials/make_notebooks.py as a module (the folder is not a package)."""
    spec = importlib.util.spec_from_file_location("make_notebooks", TUTORIALS / "make_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def read_notebook(path: Path):
    import nbformat  # the dev extra (pip install -e ".[dev]") installs nbclient, nbformat, ipykernel and IPython;
    # imported here, by the tests that use them, rather than by every worker that collects this file

    nb = nbformat.read(path, as_version=4)
    if any(c.get("outputs") for c in nb.cells if c.cell_type == "code"):
        raise ValueError(f"{path.name} is committed with outputs; regenerate it with "
                         "python tutorials/make_notebooks.py")
    return nb


def execute_in_kernel(path: Path, workdir: Path, cell_timeout: int = CELL_TIMEOUT_S) -> str | None:
    """Run one notebook in a fresh Jupyter `python3` kernel; None, or the error (cell source and traceback)."""
    import nbclient

    nb = read_notebook(path)
    client = nbclient.NotebookClient(nb, timeout=cell_timeout, kernel_name="python3",
                                     resources={"metadata": {"path": str(workdir)}})
    try:
        client.execute()
    except nbclient.exceptions.CellExecutionError as err:  # the message holds the cell source and traceback
        return f"{path.name} failed:\n{err}"
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    return f"{path.name}: {errors[0]['ename']}: {errors[0]['evalue']}" if errors else None


def execute_in_shell(path: Path, workdir: Path, cell_timeout: int = CELL_TIMEOUT_S) -> str | None:
    """Run one notebook's code cells in order in an IPython shell of this process (a fresh one from the fork
    server); None, or the failing cell's source and traceback. A cell running longer than `cell_timeout` seconds
    fails with TimeoutError, as nbclient's timeout fails it in a kernel."""
    from IPython.core.interactiveshell import InteractiveShell

    def out_of_time(signum, frame):
        raise TimeoutError(f"the cell ran longer than {cell_timeout} s")

    nb = read_notebook(path)
    os.chdir(workdir)
    shell = InteractiveShell.instance()
    signal.signal(signal.SIGALRM, out_of_time)
    code_cells = [c for c in nb.cells if c.cell_type == "code"]
    for number, cell in enumerate(code_cells, start=1):
        signal.alarm(cell_timeout)
        result = shell.run_cell(cell.source, store_history=True)
        signal.alarm(0)
        if not result.success:
            error = result.error_before_exec or result.error_in_exec
            trace = "".join(traceback.format_exception(error))
            return f"{path.name} failed in code cell {number} of {len(code_cells)}:\n{cell.source}\n\n{trace}"
    return None


def execute_notebook(path: Path, workdir: Path, cell_timeout: int = CELL_TIMEOUT_S) -> str | None:
    try:
        run = execute_in_kernel if path.stem == KERNEL_NOTEBOOK else execute_in_shell
        return run(path, workdir, cell_timeout)
    except ValueError as err:
        return str(err)


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    """Every notebook executed once, two at a time (separate processes, so the suite's second core does half the
    work), each in its own temporary working directory: `KERNEL_NOTEBOOK` in a fresh `python3` kernel for this
    interpreter, found first on JUPYTER_PATH (no user-level install), the others in a fresh process from a fork
    server that has imported `PRELOAD`."""
    from concurrent.futures import ProcessPoolExecutor

    from ipykernel.kernelspec import install
    from jupyter_client.kernelspec import KernelSpecManager

    prefix = tmp_path_factory.mktemp("jupyter_prefix")
    install(kernel_name="python3", prefix=str(prefix))  # argv: [sys.executable, -m, ipykernel_launcher, ...]
    data_dir = prefix / "share" / "jupyter"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("JUPYTER_PATH", os.pathsep.join(filter(None, [str(data_dir), os.environ.get("JUPYTER_PATH")])))
        mp.setenv("MPLBACKEND", "Agg")
        mp.setenv("OMP_NUM_THREADS", "1")
        mp.setenv("TUTORIAL_QUICK", "1")  # the reduced size of every tutorial
        mp.setenv("IPYTHONDIR", str(tmp_path_factory.mktemp("ipython")))  # the shells' history: not in ~/.ipython
        spec = KernelSpecManager().get_kernel_spec("python3")
        assert Path(spec.resource_dir).resolve().is_relative_to(prefix.resolve())
        workdirs = [tmp_path_factory.mktemp(path.stem) for path in NOTEBOOKS]
        # the fork server starts with the environment above; a worker per notebook (max_tasks_per_child), so no
        # notebook sees what another left behind
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(PRELOAD)
        with ProcessPoolExecutor(max_workers=2, mp_context=context, max_tasks_per_child=1) as pool:
            futures = [pool.submit(execute_notebook, path, workdir) for path, workdir in zip(NOTEBOOKS, workdirs,
                                                                                            strict=True)]
            return {path: future.result(timeout=NOTEBOOK_TIMEOUT_S) for path, future in zip(NOTEBOOKS, futures,
                                                                                             strict=True)}


def test_there_are_tutorials():
    assert SOURCES, f"no tutorial sources tutorials/NN_topic.py in {TUTORIALS}"


def test_every_notebook_has_its_source_and_every_source_its_notebook():
    notebooks, sources = {p.stem for p in NOTEBOOKS}, {p.stem for p in SOURCES}
    assert not notebooks - sources, f"notebooks without a tutorials/NN_topic.py source: {sorted(notebooks - sources)}"
    assert not sources - notebooks, \
        f"sources without a notebook: {sorted(sources - notebooks)}; run python tutorials/make_notebooks.py"


def test_notebooks_match_their_source(capsys):
    """The committed .ipynb files are exactly what tutorials/make_notebooks.py writes from the .py files."""
    assert load_generator().main(["--check"]) == 0, capsys.readouterr().err


def test_generator_is_deterministic_and_strips_outputs():
    import nbformat

    generator = load_generator()
    for source in SOURCES:
        text = generator.notebook_text(source)
        assert generator.notebook_text(source) == text, f"{source.name}: two conversions differ"
        nb = nbformat.reads(text, as_version=4)
        ids = [cell.id for cell in nb.cells]
        assert len(set(ids)) == len(ids), f"{source.name}: repeated cell ids"
        code = [cell for cell in nb.cells if cell.cell_type == "code"]
        assert code and all(not cell.outputs and cell.execution_count is None for cell in code)
        assert "jupytext" not in nb.metadata  # the pairing header of a .py saved from Jupyter is not copied


def test_check_names_each_stale_missing_or_orphan_notebook(tmp_path, monkeypatch, capsys):
    """--check fails, naming the notebook, for each way a notebook can drift from its source."""
    generator = load_generator()
    source = tmp_path / "01_topic.py"
    source.write_text("# %% [markdown]\n# # A title\n\n# %%\nx = 1\n", encoding="utf-8")
    monkeypatch.setattr(generator, "HERE", tmp_path)
    assert generator.main(["--check"]) == 1 and "01_topic.ipynb is missing" in capsys.readouterr().err
    assert generator.main([]) == 0
    assert generator.main(["--check"]) == 0
    with source.open("a", encoding="utf-8") as f:
        f.write("y = 2\n")
    assert generator.main(["--check"]) == 1
    assert "01_topic.ipynb differs from 01_topic.py" in capsys.readouterr().err
    generator.main([])
    shutil.copy(tmp_path / "01_topic.ipynb", tmp_path / "02_orphan.ipynb")
    assert generator.main(["--check"]) == 1
    assert "02_orphan.ipynb has no source 02_orphan.py" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_without_error(path, executed):
    error = executed[path]
    if error is not None:
        pytest.fail(error)


@pytest.mark.slow
def test_a_failing_cell_is_reported_with_its_number_source_and_traceback(tmp_path, monkeypatch):
    """The shell path fails where a kernel would: an assertion in a cell, a name no cell defined, a syntax error, a
    cell over its time limit; the cells after a failure do not run."""
    from concurrent.futures import ProcessPoolExecutor

    import nbformat

    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))  # if this test starts the fork server

    cases = {"assert x == 2, 'x is not 2'": "AssertionError: x is not 2", "y = undefined_name": "NameError",
             "def f(:\n    pass": "SyntaxError",
             "import time\ntime.sleep(30)": "TimeoutError: the cell ran longer than 1 s"}
    paths = []
    for i, failing in enumerate(cases):
        nb = nbformat.v4.new_notebook()
        nb.cells = [nbformat.v4.new_code_cell("x = 1"), nbformat.v4.new_markdown_cell("text"),
                    nbformat.v4.new_code_cell(failing), nbformat.v4.new_code_cell("open('ran', 'w').close()")]
        paths.append(tmp_path / f"9{i}_failing.ipynb")
        nbformat.write(nb, paths[-1])
    with ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("forkserver"),
                             max_tasks_per_child=1) as pool:
        errors = list(pool.map(functools.partial(execute_notebook, cell_timeout=1), paths, [tmp_path] * len(paths)))
    for path, (failing, name), error in zip(paths, cases.items(), errors, strict=True):
        assert error.startswith(f"{path.name} failed in code cell 2 of 3:\n{failing}\n") and name in error, error
    assert not (tmp_path / "ran").exists()


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.stem)
def test_source_is_plain_python(path):
    """`python tutorials/NN_topic.py` must work: no IPython-only syntax (a magic or `!cmd` is a SyntaxError here)."""
    try:
        compile(path.read_text(encoding="utf-8"), str(path), "exec")
    except SyntaxError as err:
        pytest.fail(f"{path.name} is not plain Python (line {err.lineno}: {err.msg}); tutorials must run as scripts")

