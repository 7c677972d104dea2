"""Package facts a user relies on: one version number, and every public name importable."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import tomllib

import data2vec

ROOT = Path(__file__).resolve().parents[1]


def test_the_version_is_defined_once():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert "version" not in project and "version" in project["dynamic"]  # read from data2vec.__version__
    assert importlib.metadata.version("data2vec-from-scratch") == data2vec.__version__


def test_every_public_name_exists():
    missing = [name for name in data2vec.__all__ if not hasattr(data2vec, name)]
    assert not missing
