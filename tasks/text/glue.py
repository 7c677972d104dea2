"""GLUE (Wang et al. 2019): the nine tasks read from the official TSV files, encoding and batching.

What it implements
- `GLUE_TASKS`: the 9 task specs (CoLA, SST-2, MRPC, STS-B, QQP, MNLI, QNLI, RTE, WNLI) keyed by the
  lower-case names "cola sst2 mrpc stsb qqp mnli qnli rte wnli"; plus `DIAGNOSTIC` ("ax", unlabeled).
- `load_glue(task, split, data_dir)` -> list of `GlueExample`. `data_dir` is the GLUE root (holding
  `CoLA/`, `SST-2/`, ...) or the task folder itself. Splits are the file names: "train", "dev", "test";
  MNLI has "dev_matched", "dev_mismatched", "test_matched", "test_mismatched" ("dev"/"test" mean the
  matched ones). Each file's quirks, as in the official release (the layout `download_glue_data.py` writes):
  * every file is read with tab separators and NO quote handling (MRPC/MNLI contain lone `"`);
  * CoLA train/dev have no header (source, label, original mark, sentence); CoLA test has `index sentence`;
  * MRPC starts with a UTF-8 byte-order mark; label = `Quality`, texts = `#1 String`, `#2 String`;
  * MNLI: sentence1/sentence2 in columns 8/9 and the gold label last (`gold_label`; dev adds label1..5);
  * QQP has malformed rows (a question broken over lines): they are skipped, as the HuggingFace `datasets`
    GLUE loader does (train 363,846, dev 40,430); see "Malformed rows" below;
  * STS-B: sentence1/2 in columns 7/8, float `score` in 0..5; RTE/QNLI labels are words, WNLI's 0/1.
  Columns are found by header name (falling back to the official positions).
- Encoding (`encode_glue`) for both tokenizer styles with longest-first pair truncation, and a collate
  (`GlueCollator`) padding each batch to its own longest sequence (`padding_mask` True = pad).
- Metrics and the GLUE average: `tasks/text/glue_metrics.py`.

Differences from the originals
- Example ids (`idx`) are the file's `index`/`id` column where it has one, else the 0-based row number.

Malformed rows (our choice)
- A row with the wrong number of tab-separated fields (other than the header's; 4 for header-less CoLA
  train/dev) is skipped and counted: one warning per file gives the count and the first bad line. Skipping,
  because the official QQP release has such rows (a question broken over lines leaves two fragments whose
  text cannot be recovered) and an error would make that file unloadable; counting and reporting, so that a
  damaged file is noticed. A file in which no row is well-formed is a ValueError (wrong file or task).
- A well-formed row whose content is wrong is a ValueError naming the file and line, with the fix: a label
  that is not one of the task's labels, or an STS-B score that is not a finite number. No official file has
  such a row, so it means a corrupted file or another task's file, and skipping it would quietly train or
  evaluate on a different set.
- A file that is not UTF-8 text is a ValueError naming the file.
- Another task's file (its folder is named for that task, or its header and labels are that task's, e.g. SST-2
  pointed at the RTE folder) is a ValueError naming both tasks, before any row is read.
Checked on the official CoLA, SST-2, MRPC, STS-B, QNLI, RTE, WNLI and AX files: every row well-formed, the
same example counts as before this rule (e.g. SST-2 train 67,349, CoLA train 8,551, STS-B train 5,749).
"""

from __future__ import annotations

import csv
import math
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


@dataclass(frozen=True)
class GlueTask:
    """Facts about one GLUE task. `columns` maps field -> (header name, position in the labelled files)."""

    name: str  # lower-case key, e.g. "sst2"
    folder: str  # the official folder name, e.g. "SST-2"
    labels: tuple[str, ...] | None  # label strings in id order; None for the regression task STS-B
    text_a: tuple[str, int]  # (header name, column position) of the first text
    text_b: tuple[str, int] | None  # of the second text; None for single-sentence tasks
    label: tuple[str, int]  # of the label (position -1 = last column)
    metrics: tuple[str, ...]  # what glue_metrics reports
    splits: tuple[str, ...] = ("train", "dev", "test")
    header: bool = True  # CoLA train/dev have none

    @property
    def num_labels(self) -> int:
        return 1 if self.labels is None else len(self.labels)

    @property
    def is_regression(self) -> bool:
        return self.labels is None


GLUE_TASKS: dict[str, GlueTask] = {
    t.name: t
    for t in [
        GlueTask("cola", "CoLA", ("0", "1"), ("sentence", 3), None, ("label", 1), ("matthews",), header=False),
        GlueTask("sst2", "SST-2", ("0", "1"), ("sentence", 0), None, ("label", 1), ("accuracy",)),
        GlueTask("mrpc", "MRPC", ("0", "1"), ("#1 String", 3), ("#2 String", 4), ("Quality", 0), ("accuracy", "f1")),
        GlueTask("stsb", "STS-B", None, ("sentence1", 7), ("sentence2", 8), ("score", 9), ("pearson", "spearman")),
        GlueTask("qqp", "QQP", ("0", "1"), ("question1", 3), ("question2", 4), ("is_duplicate", 5), ("accuracy", "f1")),
        GlueTask("mnli", "MNLI", ("entailment", "neutral", "contradiction"), ("sentence1", 8), ("sentence2", 9),
                 ("gold_label", -1), ("accuracy",),
                 splits=("train", "dev_matched", "dev_mismatched", "test_matched", "test_mismatched")),
        GlueTask("qnli", "QNLI", ("entailment", "not_entailment"), ("question", 1), ("sentence", 2), ("label", 3),
                 ("accuracy",)),
        GlueTask("rte", "RTE", ("entailment", "not_entailment"), ("sentence1", 1), ("sentence2", 2), ("label", 3),
                 ("accuracy",)),
        GlueTask("wnli", "WNLI", ("0", "1"), ("sentence1", 1), ("sentence2", 2), ("label", 3), ("accuracy",)),
    ]
}
# The diagnostic set (AX): unlabeled MNLI-style pairs, evaluated with an MNLI model; not one of the 9.
DIAGNOSTIC = GlueTask("ax", "diagnostic", ("entailment", "neutral", "contradiction"), ("sentence1", 1),
                      ("sentence2", 2), ("label", 3), ("matthews",), splits=("test",))
_SPLIT_FILES = {"test": "diagnostic.tsv"}
# Tasks of the paper's average and the names people use for them.
AVERAGE_TASKS = ("mnli", "qnli", "rte", "mrpc", "qqp", "stsb", "cola", "sst2")
_ALIASES = {"sts": "stsb", "mnlim": "mnli", "mnlimatched": "mnli", "diagnostic": "ax"}


@dataclass
class GlueExample:
    idx: int  # the file's index/id column, else the row number
    text_a: str
    text_b: str | None  # None for the single-sentence tasks (CoLA, SST-2)
    label: int | float | None  # class id, STS-B score, or None on test splits


def get_task(task: str) -> GlueTask:
    """Task spec by name, case- and punctuation-insensitive ("SST-2", "sst_2", "STS-B", "MNLI" all work)."""
    key = "".join(c for c in task.lower() if c.isalnum())
    key = _ALIASES.get(key, key)
    if key == "ax":
        return DIAGNOSTIC
    if key not in GLUE_TASKS:
        raise ValueError(f"unknown GLUE task {task!r}; fix: choose one of {', '.join(GLUE_TASKS)} (or 'ax')")
    return GLUE_TASKS[key]


def num_labels(task: str) -> int:
    """Number of output units: classes, or 1 for STS-B regression."""
    return get_task(task).num_labels


def is_regression(task: str) -> bool:
    return get_task(task).is_regression


def split_file(spec: GlueTask, split: str) -> str:
    if spec.name == "mnli" and split in ("dev", "test"):
        split = split + "_matched"
    if split not in spec.splits:
        raise ValueError(f"GLUE {spec.folder} has no split {split!r}; choose one of {', '.join(spec.splits)}")
    return _SPLIT_FILES.get(split, f"{split}.tsv") if spec is DIAGNOSTIC else f"{split}.tsv"


def _task_names(spec: GlueTask) -> set[str]:
    """The folder names that mean a task: "SST-2", "sst2" (any case)."""
    return {spec.folder.lower(), spec.folder.lower().replace("-", ""), spec.name}


def _has_columns(spec: GlueTask, header: list[str]) -> bool:
    """Whether a header names every column a labelled file of the task needs."""
    return all(col[0] in header for col in (spec.text_a, spec.text_b, spec.label) if col is not None)


def other_task(spec: GlueTask, path: Path, header: list[str] | None,
               rows: list[list[str]]) -> tuple[GlueTask, str] | None:
    """The other GLUE task a labelled file evidently belongs to, and the evidence: its folder is named for that
    task, or its header lacks this task's columns and has exactly one other task's, whose labels its rows use."""
    others = [t for t in GLUE_TASKS.values() if t is not spec]
    for t in others:
        if path.parent.name.lower() in _task_names(t):
            return t, f"its folder is named {path.parent.name}"
    if header is None or _has_columns(spec, header):
        return None
    fitting = []
    for t in others:
        if not t.header or not _has_columns(t, header):
            continue
        col = header.index(t.label[0])
        seen = {row[col].strip() for row in rows[:1000] if len(row) > col}
        if t.labels is None or seen <= set(t.labels):
            fitting.append(t)
    if len(fitting) != 1:
        return None
    return fitting[0], f"its header {header} and labels are {fitting[0].folder}'s"


def refuse_other_task(spec: GlueTask, path: Path, header: list[str] | None, rows: list[list[str]]) -> None:
    """A ValueError when a labelled file is another task's (`other_task`): training SST-2 on RTE's file would
    fail on the first word label, or worse, read the wrong columns quietly."""
    found = other_task(spec, path, header, rows) if spec in GLUE_TASKS.values() else None
    if found is not None:
        other, evidence = found
        raise ValueError(f"{path} is {other.folder} data, not {spec.folder} ({evidence}); fix: point --data/--glue at "
                         f"the {spec.folder} folder (or the GLUE root that holds it)")


def find_task_file(task: str, split: str, data_dir: str | Path) -> Path:
    """Path of a task's split file under the GLUE root or the task folder; FileNotFoundError names it."""
    spec = get_task(task)
    fname = split_file(spec, split)
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise FileNotFoundError(f"GLUE data folder not found: {data_dir}; fix: pass the GLUE root or the task's folder")
    wanted = _task_names(spec)
    folders = sorted(p for p in data_dir.iterdir() if p.is_dir() and p.name.lower() in wanted)
    if data_dir.name.lower() in wanted or not folders:
        folders.insert(0, data_dir)  # data_dir is the task folder itself
    for folder in folders:
        if (folder / fname).is_file():
            return folder / fname
    folder = folders[-1] if folders[-1] != data_dir or data_dir.name.lower() in wanted else data_dir / spec.folder
    raise FileNotFoundError(
        f"GLUE {spec.folder} {split}: missing file {folder / fname}; the task folder must hold the official "
        f"{', '.join(split_file(spec, s) for s in spec.splits)}; fix: run GLUE's download_glue_data.py or copy "
        "them there"
    )


def _read_tsv(path: Path) -> list[list[str]]:
    """All rows of a tab-separated file, one per line; a file that is not UTF-8 text is a ValueError."""
    # utf-8-sig drops MRPC's byte-order mark; QUOTE_NONE keeps the texts' quote characters as they are
    with open(path, encoding="utf-8-sig", newline="") as fh:
        reader = csv.reader(fh, delimiter="\t", quoting=csv.QUOTE_NONE)
        try:
            return list(reader)
        except UnicodeDecodeError as error:
            raise ValueError(f"{path}: not UTF-8 text ({error}); fix: re-download the official GLUE file") from None


def load_glue(task: str, split: str, data_dir: str | Path) -> list[GlueExample]:
    """Examples of one split of one task, read from the official TSV layout (see the module docstring)."""
    spec = get_task(task)
    path = find_task_file(task, split, data_dir)
    rows = _read_tsv(path)
    header = None
    has_header = spec.header or split.startswith("test")  # CoLA: only test has a header
    if spec.name == "cola" and rows and not split.startswith("test") and rows[0][1:2] == ["label"]:
        has_header = True  # a CoLA copy written with a header row (not the official layout)
    if has_header and rows:
        header, rows = [c.strip() for c in rows[0]], rows[1:]
    labelled = not split.startswith("test") and spec is not DIAGNOSTIC
    if labelled:
        refuse_other_task(spec, path, header, rows)
    fields = {"text_a": spec.text_a, "text_b": spec.text_b, "label": spec.label if labelled else None}
    cols: dict[str, int] = {}
    for key, name_pos in fields.items():
        if name_pos is None:
            continue
        name, pos = name_pos
        if header is not None and name in header:
            cols[key] = header.index(name)
        elif header is None or labelled:
            cols[key] = pos if pos >= 0 else (len(header) if header else 4) + pos  # official position
        else:
            raise ValueError(f"{path}: header {header} has no column {name!r} for {spec.folder} {split}; fix: use the "
                             f"official {spec.folder} file")
    iidx = None
    if header is not None:
        iidx = next((header.index(n) for n in ("index", "id") if n in header), None)
    needed = max(list(cols.values()) + [iidx or 0]) + 1
    width = len(header) if header is not None else needed  # the number of fields of a well-formed row
    out: list[GlueExample] = []
    malformed: list[int] = []  # file line numbers of rows with the wrong number of fields (skipped)
    first_line = 2 if header is not None else 1
    for n, row in enumerate(rows):
        line = n + first_line  # QUOTE_NONE: one row per line of the file
        if not row:
            continue  # a blank line
        if len(row) != width or len(row) < needed:
            malformed.append(line)  # e.g. QQP: a question broken over two lines makes two short rows
            continue
        label: int | float | None = None
        if labelled:
            raw = row[cols["label"]].strip()
            if spec.is_regression:
                try:
                    label = float(raw)
                except ValueError:
                    label = math.nan
                if not math.isfinite(label):
                    raise ValueError(f"{path} line {line}: score {raw!r} is not a number; fix: correct or delete "
                                     "that row (STS-B scores are numbers in 0..5)")
            else:
                if raw not in spec.labels:
                    raise ValueError(f"{path} line {line}: label {raw!r} is not one of {spec.labels} for "
                                     f"{spec.folder}; fix: correct or delete that row, or use this task's own file")
                label = spec.labels.index(raw)
        idx = n
        if iidx is not None:
            try:
                idx = int(row[iidx])
            except ValueError:
                idx = n
        text_b = row[cols["text_b"]] if "text_b" in cols else None
        out.append(GlueExample(idx, row[cols["text_a"]], text_b, label))
    if malformed and not out:
        raise ValueError(f"{path}: no row has the {width} tab-separated fields {spec.folder} {split} needs (first "
                         f"bad row at line {malformed[0]}); fix: check that this is the official GLUE file")
    if malformed:
        warnings.warn(f"{path}: skipped {len(malformed)} malformed row(s) with a number of fields other than {width} "
                      f"(first at line {malformed[0]}); kept {len(out)}", stacklevel=2)
    return out


# ---- encoding and batching -------------------------------------------------------------------------


def encode_glue(examples: Sequence[GlueExample], tokenizer, max_length: int = 512) -> list[dict]:
    """Encode examples: dicts with input_ids, token_type_ids (lists) and labels (int/float; -1 if unlabeled).

    Pairs are truncated longest-first (one token at a time from the longer text) to fit `max_length`
    with the specials, as BERT's `_truncate_seq_pair` does.
    """
    out = []
    a_ids = tokenizer.encode_batch([e.text_a for e in examples], add_special_tokens=False)
    pair = any(e.text_b is not None for e in examples)
    b_ids = tokenizer.encode_batch([e.text_b or "" for e in examples], add_special_tokens=False) if pair else None
    for i, ex in enumerate(examples):
        a = list(a_ids[i])
        b = list(b_ids[i]) if ex.text_b is not None else None
        if b is None:
            a = a[: max_length - 2]
        else:
            budget = max_length - tokenizer.num_special_tokens_pair
            if budget < 2:
                raise ValueError(f"max_length={max_length} leaves no room for a pair; fix: raise --max-length")
            while len(a) + len(b) > budget:
                if len(a) >= len(b):
                    a.pop()
                else:
                    b.pop()
        enc = tokenizer.build_inputs(a, b)
        label = ex.label if ex.label is not None else -1
        out.append({"input_ids": enc.input_ids, "token_type_ids": enc.token_type_ids, "labels": label})
    return out


class GlueDataset(torch.utils.data.Dataset):
    """Encoded examples of one split, ready for `GlueCollator`."""

    def __init__(self, examples: Sequence[GlueExample], tokenizer, max_length: int = 512):
        self.examples = list(examples)
        self.features = encode_glue(self.examples, tokenizer, max_length)

    def __len__(self) -> int:
        return len(self.features)

    def __getitem__(self, i: int) -> dict:
        return self.features[i]


@dataclass
class GlueCollator:
    """Dynamic padding: pads a batch to its longest sequence with `pad_id`.

    Returns input_ids (B, T) long, token_type_ids (B, T) long, padding_mask (B, T) bool True = pad,
    labels (B,) long (float for regression).
    """

    pad_id: int
    regression: bool = False
    pad_to_multiple_of: int | None = None

    def __call__(self, batch: Sequence[dict]) -> dict[str, torch.Tensor]:
        T = max(len(f["input_ids"]) for f in batch)
        if self.pad_to_multiple_of:
            T = math.ceil(T / self.pad_to_multiple_of) * self.pad_to_multiple_of
        B = len(batch)
        ids = torch.full((B, T), self.pad_id, dtype=torch.long)  # (B, T)
        types = torch.zeros((B, T), dtype=torch.long)  # (B, T)
        padding_mask = torch.ones((B, T), dtype=torch.bool)  # (B, T) True = pad
        for i, f in enumerate(batch):
            n = len(f["input_ids"])
            ids[i, :n] = torch.tensor(f["input_ids"], dtype=torch.long)
            types[i, :n] = torch.tensor(f["token_type_ids"], dtype=torch.long)
            padding_mask[i, :n] = False
        labels = torch.tensor([f["labels"] for f in batch], dtype=torch.float if self.regression else torch.long)
        return {"input_ids": ids, "token_type_ids": types, "padding_mask": padding_mask, "labels": labels}


def glue_collate(batch: Sequence[dict], pad_id: int, regression: bool = False) -> dict[str, torch.Tensor]:
    return GlueCollator(pad_id, regression)(batch)
