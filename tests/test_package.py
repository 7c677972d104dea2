"""Package facts a user relies on: one version number, and every public name importable."""

from __future__ import annotations

import importlib.metadata
import re
from pathlib import Path

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
