"""Modality plug-ins: everything that differs between text, images and speech, for data2vec v1 and data2vec 2.0.

data2vec's thesis (arXiv 2202.03555, section 1; data2vec 2.0, arXiv 2212.07525, section 3) is one learning
objective for every modality: only the input encoder and the masking are modality-specific. The released
data2vec 2.0 code keeps those in `modalities/{audio,images,text}.py` and the method in one modality-free
file; so does this package, for both methods (`v1.py`, `v2.py` call the modality object, never branch).

Each module holds one modality (`base.Modality` lists what it provides): reading a batch, the v1 and v2 masks
(the mask math stays in `masking.py`), the student and teacher inputs, the target settings that differ by
modality and their recipe rows (the paper's / released values, then what the reduced sizes change).
Adding a modality = one module here, one test file, one entry in `REGISTRY`.
"""

from __future__ import annotations

from .audio import AUDIO
from .base import Modality
from .text import TEXT
from .vision import VISION

__all__ = ["AUDIO", "Modality", "REGISTRY", "TEXT", "VISION", "get", "names"]

REGISTRY: dict[str, Modality] = {modality.name: modality for modality in (TEXT, VISION, AUDIO)}


def names() -> tuple[str, ...]:
    return tuple(REGISTRY)


def get(name: str) -> Modality:
    """The plug-in of modality `name` ("text", "vision", "audio")."""
    if name not in REGISTRY:
        raise ValueError(f"unknown modality {name!r}; use one of {names()}")
    return REGISTRY[name]
