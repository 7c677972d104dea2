"""`python -m tasks.inventory PATH`: load every data set found under a folder and print its row counts.

One line per data set and split: `<data set> <split> <count> <unit>`, the data set named by its path
relative to PATH. Recognised (each through the same loaders the project trains with):
- GLUE task folders (CoLA, SST-2, MRPC, STS-B, QQP, MNLI, QNLI, RTE, WNLI, diagnostic): examples per split
  file present, via `tasks.text.glue.load_glue`;
- SQuAD-format JSON (SQuAD v1.1, XQuAD): questions, via `tasks.text.squad`;
- MNIST IDX folders, CIFAR-10 pickle folders, image folders with train/test sub-folders: images;
- tar archives of image folders (`<top>/<split>/<class>/<image>`): images counted from the archive's
  member list without extracting (`--extract` extracts to the cache and loads them instead);
- text corpora (`.txt`, `.tokens`, `.raw`): non-empty lines and documents, via `tasks.text.corpus`.
Files named README*/LICENSE* and text files inside GLUE task folders are not corpora and are skipped.
Exit status 1 if any data set failed to load (the error is printed on stderr).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tarfile
from collections import Counter
from pathlib import Path

from tasks.text.corpus import iter_sentences
from tasks.text.glue import DIAGNOSTIC, GLUE_TASKS, load_glue, split_file
from tasks.text.squad import count_questions
from tasks.vision.datasets import (
    IMAGE_EXTENSIONS,
    find_cifar_pickle_dir,
    find_idx,
    find_split_folder,
    is_archive,
    load_cifar10,
    load_image_folder,
    load_mnist,
)

_GLUE_FOLDERS = {t.folder.lower(): t for t in list(GLUE_TASKS.values()) + [DIAGNOSTIC]}
_TEXT_SUFFIXES = (".txt", ".tokens", ".raw")


def _idx_here(d: Path, prefix: str) -> bool:
    p = find_idx(d, f"{prefix}-images-idx3-ubyte")
    return p is not None and p.parent == d


def _glue_rows(folder: Path):
    spec = _GLUE_FOLDERS[folder.name.lower()]
    for split in spec.splits:
        if (folder / split_file(spec, split)).is_file():
            yield split, len(load_glue(spec.name, split, folder)), "examples"


def _split_of(name: str) -> str:
    low = name.lower()
    for s in ("train", "dev", "valid", "test"):
        if s in low:
            return s
    return "all"


def _squad_rows(path: Path):
    with open(path, encoding="utf-8") as fh:
        data = json.load(fh)
    if not (isinstance(data, dict) and isinstance(data.get("data"), list) and data["data"]
            and "paragraphs" in data["data"][0]):
        return
    yield _split_of(path.name), count_questions(data), "questions"


def _archive_rows(path: Path, extract: bool):
    if extract:
        for split in ("train", "test"):
            yield split, len(load_cifar10(path, split)), "images"
        return
    counts: Counter = Counter()
    with tarfile.open(path) as tar:
        for m in tar:
            parts = Path(m.name).parts
            if not m.isfile() or Path(m.name).suffix.lower() not in IMAGE_EXTENSIONS:
                continue
            for p in parts[:-2]:  # .../<split>/<class>/<image>
                if p.lower() in ("train", "test", "val", "valid", "validation"):
                    counts[p.lower()] += 1
                    break
    for split in sorted(counts, key=lambda s: (s != "train", s)):
        yield split, counts[split], "images"


def _text_rows(path: Path):
    lines = docs = 0
    for _, new_doc in iter_sentences(path):
        lines += 1
        docs += int(new_doc)
    yield "all", lines, f"lines ({docs} documents)"


def scan(root: Path, extract: bool = False):
    """Yield (name, split, count, unit) for every data set under root; (name, None, error, None) on failure."""
    for dirpath, dirnames, filenames in os.walk(root):
        d = Path(dirpath)
        rel = d.relative_to(root).as_posix() if d != root else d.name
        dirnames.sort()
        handler = None
        if d.name.lower() in _GLUE_FOLDERS and any(f.endswith(".tsv") for f in filenames):
            handler = _glue_rows(d)
        elif find_cifar_pickle_dir(d) == d:
            handler = ((s, len(load_cifar10(d, s)), "images") for s in ("train", "test"))
        elif _idx_here(d, "train") or _idx_here(d, "t10k"):
            handler = ((s, len(load_mnist(d, s)), "images") for s in ("train", "test")
                       if _idx_here(d, "train" if s == "train" else "t10k"))
        elif (d / "train").is_dir() and find_split_folder(d, "train") == d / "train":
            handler = ((s, len(load_image_folder(d / s)), "images") for s in sorted(dirnames) if
                       s in ("train", "test", "val", "valid", "validation"))
        if handler is not None:
            dirnames.clear()  # the data set owns this folder
            try:
                for split, count, unit in handler:
                    yield rel, split, count, unit
            except Exception as err:  # report and go on with the other data sets
                yield rel, None, f"{type(err).__name__}: {err}", None
            continue
        for f in sorted(filenames):
            p = d / f
            name = p.relative_to(root).as_posix()
            if f.upper().startswith(("README", "LICENSE")):
                continue
            rows = None
            if f.endswith(".json"):
                rows = _squad_rows(p)
            elif is_archive(p):
                rows = _archive_rows(p, extract)
            elif f.endswith(_TEXT_SUFFIXES):
                rows = _text_rows(p)
            if rows is None:
                continue
            try:
                for split, count, unit in rows:
                    yield name, split, count, unit
            except Exception as err:
                yield name, None, f"{type(err).__name__}: {err}", None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tasks.inventory", description=__doc__.split("\n")[0])
    ap.add_argument("path", type=Path, help="folder to scan (e.g. ../shared/data)")
    ap.add_argument("--extract", action="store_true", help="extract image archives to the cache and load them")
    args = ap.parse_args(argv)
    if not args.path.is_dir():
        print(f"error: {args.path} is not a folder", file=sys.stderr)
        return 2
    failed = 0
    for name, split, count, unit in scan(args.path, args.extract):
        if split is None:
            failed += 1
            print(f"ERROR {name}: {count}", file=sys.stderr)
        else:
            print(f"{name:<42} {split:<16} {count:>8} {unit}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
