"""A seeded text corpus for the tiny text runs of the command tests: documents of six random sentences (4 to 16
words each), a blank line between documents (the layout `tasks.text.corpus` reads)."""

from __future__ import annotations

import random
from pathlib import Path

WORDS = "the cat sat on a mat while dogs ran over hills and birds sang in green trees near old rivers".split()


def write_word_corpus(path: Path, documents: int, words: list[str] = WORDS) -> Path:
    """Write `documents` documents drawn with seed 0 from `words` to `path`; returns `path`."""
    rng = random.Random(0)
    with open(path, "w") as fh:
        for _ in range(documents):
            for _ in range(6):
                fh.write(" ".join(rng.choice(words) for _ in range(rng.randint(4, 16))).capitalize() + ".\n")
            fh.write("\n")
    return path
