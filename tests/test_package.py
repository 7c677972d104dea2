"""Package facts a user relies on: one version number, every public name importable, a help that answers at once;
and the test session's own guard on `pytest.approx`."""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import data2vec

ROOT = Path(__file__).resolve().parents[1]


def test_the_version_is_defined_once():
    text = (ROOT / "pyproject.toml").read_text()
    project = text[text.index("[project]"):].split("\n[", 1)[0]  # the [project] table (tomllib needs 3.11)
    assert not re.search(r"^version\s*=", project, flags=re.M)
    assert re.search(r'^dynamic\s*=\s*\[\s*"version"\s*\]', project, flags=re.M)  # from data2vec.__version__
    assert importlib.metadata.version("data2vec-from-scratch") == data2vec.__version__


def test_every_public_name_exists():
    missing = [name for name in data2vec.__all__ if not hasattr(data2vec, name)]
    assert not missing


def test_the_command_line_help_does_not_import_torch():
    """`data2vec --help` and every subcommand's parser are built without torch (seconds to import): the
    library's re-exports are lazy and each subcommand imports what it runs inside `run`."""
    code = ("import sys, data2vec, data2vec.cli\n"
            "data2vec.cli.build_parser()\n"
            "heavy = sorted(m for m in ('torch', 'tasks', 'baselines', 'sklearn') if m in sys.modules)\n"
            "assert not heavy, heavy\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_a_public_name_resolves_to_its_module_once():
    from data2vec.v2 import Data2Vec2

    assert data2vec.Data2Vec2 is Data2Vec2 and "Data2Vec2" in dir(data2vec)
    with pytest.raises(AttributeError, match="no attribute 'NotAName'"):
        data2vec.NotAName  # noqa: B018


def test_approx_refuses_a_tensor_on_every_pytest_version():
    """The guard in conftest.py: a statistic must be converted to a float before `pytest.approx` sees it."""
    with pytest.raises(TypeError, match="convert it to a float"):
        pytest.approx(torch.tensor(1.0))
    with pytest.raises(TypeError, match="convert it to a float"):
        pytest.approx({"loss": torch.tensor(1.0)})
    assert 1.0 == pytest.approx(1.0 + 1e-9)
