"""The offline pretraining text of the text study: corpus.txt, a held-out slice, an 8k BPE.

What it builds, from the shared data folder given as `data_root` (never hard-coded):
- `corpus.txt` in the "plain" layout of `tasks.text.corpus` (one line per line, a blank line between
  documents), from these sources, in this order:
  * WikiText-2 `valid.txt` and `test.txt` (Merity et al. 2016; the train split is not in the folder), one
    document per article. Article boundaries are the level-1 headings ` = Title = ` found by
    `tasks.text.corpus.iter_sentences(layout="wikitext")`; sub-headings ` = = Section = = ` stay inside
    their article. The last `heldout_documents` articles of `test.txt` are left out of the corpus.
  * Tiny Shakespeare `input.txt` (Karpathy 2015): one document, one verse or speaker line per line.
  * The TRAINING sentences of each GLUE task present (Wang et al. 2019), read with `tasks.text.glue`'s
    readers through `tasks.text.corpus.glue_texts` (only `train.tsv`; labels dropped; both sentences of
    a pair on consecutive lines): one document per task. Self-pretraining on the downstream task's own
    unlabeled text is the protocol of Krishna et al. 2022.
  * Optionally (not a default source) the docstrings of this Python's standard library
    (`tasks.text.python_docs`), one document per module.
- `heldout.txt`: those last WikiText-2 test articles, same layout, for the masked-token accuracy of an MLM
  on text it never saw.
- `tokenizer/tokenizer.json`: a byte-level BPE of about `vocab_size` entries trained on corpus.txt only
  (`tasks.text.tokenizer.train_tokenizer`; the `tokenizers` trainer has no randomness, so the same text
  gives the same merges).
- `corpus.json`: per source and in total the files read (relative to `data_root`, with sha256),
  documents, lines, words (whitespace-split) and tokens (trained tokenizer, no specials); the vocabulary
  size; sha256 of corpus.txt, heldout.txt and tokenizer.json; and a contamination audit: how many GLUE
  dev examples (read for the audit only, never written) and how many held-out lines occur verbatim as a
  line of corpus.txt. No time stamps or absolute paths, so rebuilding gives a byte-identical file.

Choices (not from a paper)
- WikiText heading markup is removed (` = Title = ` -> `Title`, ` = = Section = = ` -> `Section`): the
  `=` signs are formatting, not text, and a corpus.txt that kept them would be read as a WikiText file by
  `TokenBlockDataset(layout="auto")`, which then ignores the blank lines between documents. WikiText's own
  tokenisation (`@-@`, `<unk>`, spaces around punctuation) is kept as it is.
- Tiny Shakespeare and each GLUE task are one document each: their natural units (a speech, an example)
  are a few dozen tokens, and `TokenBlockDataset`'s blocks never cross a document, so per-example
  documents would fill most of every block with padding (the default of `glue_corpus` too).
- python-docs is opt-in (`--sources ... python-docs`): its text depends on the Python version, which
  would make the stored counts machine-dependent.

Run: `python -m tasks.text.study_corpus --data ../shared/data --out runs/text-corpus`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import tokenizers

from .glue import find_task_file, load_glue
from .python_docs import NAME as PYTHON_DOCS
from .study_sources import (
    GLUE_DIR,
    GLUE_SOURCES,
    SHAKESPEARE,
    WIKITEXT_TEST,
    WIKITEXT_VALID,
    SourceMissing,
    SourceText,
    read_glue_train,
    read_python_docs,
    read_shakespeare,
    read_wikitext_valid,
    sha256_of,
    split_wikitext_test,
)
from .tokenizer import TextTokenizer, train_tokenizer

DEFAULT_SOURCES: tuple[str, ...] = ("wikitext-2-valid", "wikitext-2-test", "tinyshakespeare", *GLUE_SOURCES)
ALL_SOURCES: tuple[str, ...] = (*DEFAULT_SOURCES, PYTHON_DOCS)
DEFAULT_HELDOUT_DOCUMENTS = 10  # of WikiText-2 test's 62 articles: 27k words, 36k tokens (~5k masked at 15%)
_ENCODE_BATCH = 4096  # lines per tokenizer call when counting tokens


# ---- writing and counting --------------------------------------------------------------------------------




def write_documents(path: Path, documents: Sequence[Sequence[str]]) -> None:
    """Plain layout, atomically: each document's lines, then a blank line before the next document."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", encoding="utf-8", newline="\n") as out:
        for d, doc in enumerate(documents):
            if d:
                out.write("\n")
            out.write("".join(line + "\n" for line in doc))
    os.replace(tmp, path)


def count_tokens(lines: Sequence[str], tokenizer: TextTokenizer) -> int:
    """Tokens of the lines without specials (what `build_token_cache` stores for them)."""
    total = 0
    for i in range(0, len(lines), _ENCODE_BATCH):
        total += sum(len(ids) for ids in tokenizer.encode_batch(lines[i:i + _ENCODE_BATCH], add_special_tokens=False))
    return total


def _counts(documents: Sequence[Sequence[str]], tokenizer: TextTokenizer) -> dict:
    lines = [line for doc in documents for line in doc]
    return {"documents": len(documents), "lines": len(lines), "words": sum(len(line.split()) for line in lines),
            "tokens": count_tokens(lines, tokenizer)}


def _dev_overlap(data_root: Path, tasks: Sequence[str], corpus_lines: set[str]) -> dict:
    """Per GLUE task: dev examples with a text that is also a line of corpus.txt (audit only)."""
    out = {}
    for task in tasks:
        try:
            path = find_task_file(task, "dev", data_root / GLUE_DIR)
        except (FileNotFoundError, ValueError):
            continue
        examples = load_glue(task, "dev", data_root / GLUE_DIR)
        hits = sum(any(" ".join(t.split()) in corpus_lines for t in (e.text_a, e.text_b) if t) for e in examples)
        out[f"glue-{task}"] = {"file": path.relative_to(data_root).as_posix(), "dev_examples": len(examples),
                               "dev_examples_with_a_text_in_corpus": hits}
    return out


def _check_sources(sources: Sequence[str]) -> None:
    unknown = [s for s in sources if s not in ALL_SOURCES]
    if unknown:
        raise ValueError(f"unknown corpus source(s) {unknown}; fix: choose from {', '.join(ALL_SOURCES)}")
    if not sources:
        raise ValueError(f"no corpus sources given; fix: choose from {', '.join(ALL_SOURCES)}")


def build_study_corpus(
    data_root: str | Path,
    out_dir: str | Path,
    vocab_size: int = 8192,
    sources: Sequence[str] = DEFAULT_SOURCES,
    heldout_documents: int = DEFAULT_HELDOUT_DOCUMENTS,
    min_frequency: int = 2,
) -> dict:
    """Build corpus.txt, heldout.txt, tokenizer/ and corpus.json under `out_dir`; returns corpus.json's dict.

    data_root: the shared data folder (holding wikitext-2-tokens/, tinyshakespeare/, glue/).
    sources: names from `ALL_SOURCES`; a listed source whose file is missing is recorded as skipped.
    heldout_documents: last WikiText-2 test articles kept out of the corpus for heldout.txt (0: none).
    """
    data_root, out_dir = Path(data_root), Path(out_dir)
    _check_inputs(data_root, sources, heldout_documents, vocab_size)
    used, skipped, heldout, heldout_reason = _read_sources(data_root, sources, heldout_documents)

    out_dir.mkdir(parents=True, exist_ok=True)
    corpus_path = out_dir / "corpus.txt"
    write_documents(corpus_path, [doc for src in used for doc in src.documents])
    tokenizer = train_tokenizer(corpus_path, kind="bpe", vocab_size=vocab_size, min_frequency=min_frequency)
    tokenizer_file = tokenizer.save(out_dir / "tokenizer")

    rows = _source_rows(data_root, used, skipped, tokenizer)
    total = {k: sum(r[k] for r in rows.values() if r["status"] == "used")
             for k in ("documents", "lines", "words", "tokens")}
    corpus_lines = {line for src in used for line in src.lines}
    held = _write_heldout(out_dir / "heldout.txt", heldout, heldout_documents, heldout_reason, tokenizer,
                          corpus_lines)
    input_files = sorted({p for src in used for p in src.files})
    result = {
        "what": "offline pretraining text of the text study (issue 16); built by tasks/text/study_corpus.py",
        "parameters": {"vocab_size": vocab_size, "min_frequency": min_frequency, "sources": list(sources),
                       "heldout_documents": heldout_documents, "tokenizers_version": tokenizers.__version__},
        "inputs": {p.relative_to(data_root).as_posix(): sha256_of(p) for p in input_files},
        "sources": rows,
        "total": total,
        "vocab_size": tokenizer.vocab_size,
        "corpus": {"file": "corpus.txt", "sha256": sha256_of(corpus_path), "bytes": corpus_path.stat().st_size},
        "tokenizer": {"file": "tokenizer/tokenizer.json", "sha256": sha256_of(tokenizer_file)},
        "heldout": held,
        "dev_overlap": _dev_overlap(data_root, [GLUE_SOURCES[s.name] for s in used if s.name in GLUE_SOURCES],
                                    corpus_lines),
    }
    (out_dir / "corpus.json").write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    return result


def _check_inputs(data_root: Path, sources: Sequence[str], heldout_documents: int, vocab_size: int) -> None:
    """Refuse bad arguments before any reading, so a typo fails at once."""
    if not data_root.is_dir():
        raise FileNotFoundError(f"data folder not found: {data_root}; fix: pass --data the shared data folder "
                                "(e.g. ../shared/data)")
    _check_sources(sources)
    if heldout_documents < 0:
        raise ValueError(f"heldout_documents must be >= 0, got {heldout_documents}; fix: pass 0 or more")
    if vocab_size <= 256 + 5:
        raise ValueError(f"byte-level BPE needs vocab_size > 261 (256 bytes + 5 specials), got {vocab_size}; "
                         "fix: pass --vocab-size 8192 or another value above 261")


def _read_sources(data_root: Path, sources: Sequence[str], heldout_documents: int):
    """Every requested source in the fixed order of `ALL_SOURCES`, whatever the order given.
    -> (used sources, {skipped name: reason}, held-out documents or None, why none were held out or None)."""
    readers: dict[str, Callable[[], SourceText]] = {
        "wikitext-2-valid": lambda: read_wikitext_valid(data_root),
        "tinyshakespeare": lambda: read_shakespeare(data_root),
        PYTHON_DOCS: read_python_docs,
        **{src: (lambda task=task: read_glue_train(data_root, task)) for src, task in GLUE_SOURCES.items()},
    }
    used: list[SourceText] = []
    skipped: dict[str, str] = {}
    heldout: list[list[str]] | None = None
    heldout_reason = "wikitext-2-test not among the sources" if "wikitext-2-test" not in sources else None
    for name in ALL_SOURCES:
        if name not in sources:
            continue
        try:
            if name == "wikitext-2-test":
                src, heldout = split_wikitext_test(data_root, heldout_documents)
            else:
                src = readers[name]()
        except SourceMissing as missing:
            skipped[name] = str(missing)
            if name == "wikitext-2-test":
                heldout_reason = str(missing)
            continue
        used.append(src)
    if not any(src.documents for src in used):
        raise FileNotFoundError(
            f"{data_root}: no corpus text found (looked for {WIKITEXT_VALID}, {WIKITEXT_TEST}, {SHAKESPEARE}, "
            f"{GLUE_DIR}/<Task>/train.tsv); fix: pass --data the shared data folder that holds them "
            "(e.g. ../shared/data)")
    return used, skipped, heldout, heldout_reason


def _source_rows(data_root: Path, used: list[SourceText], skipped: dict[str, str], tokenizer) -> dict[str, dict]:
    """corpus.json's row per source: its files and counts, or why it was skipped."""
    rows: dict[str, dict] = {}
    for name in ALL_SOURCES:
        src = next((s for s in used if s.name == name), None)
        if src is not None:
            rows[name] = {"status": "used", "files": [p.relative_to(data_root).as_posix() for p in src.files],
                          **_counts(src.documents, tokenizer)}
            if src.note:
                rows[name]["note"] = src.note
        elif name in skipped:
            rows[name] = {"status": "skipped", "reason": skipped[name]}
    return rows


def _write_heldout(path: Path, heldout, heldout_documents: int, reason: str | None, tokenizer,
                   corpus_lines: set[str]) -> dict:
    """heldout.txt and its record, or the record of why there is none (a stale file is removed)."""
    if heldout is not None and heldout:
        write_documents(path, heldout)
        return {"status": "written", "file": "heldout.txt", "source": WIKITEXT_TEST,
                "articles": f"last {heldout_documents}", **_counts(heldout, tokenizer),
                "sha256": sha256_of(path),
                "lines_also_in_corpus": sum(line in corpus_lines for doc in heldout for line in doc)}
    path.unlink(missing_ok=True)  # never leave a stale slice from an earlier build
    return {"status": "skipped", "reason": reason or "heldout_documents is 0"}


def format_table(result: dict) -> str:
    """The counts as a small text table (skipped sources with their reason)."""
    head = f"{'source':<18} {'docs':>6} {'lines':>8} {'words':>10} {'tokens':>10}"
    rows = [head, "-" * len(head)]
    for name, r in result["sources"].items():
        if r["status"] == "used":
            rows.append(f"{name:<18} {r['documents']:>6} {r['lines']:>8} {r['words']:>10} {r['tokens']:>10}")
        else:
            rows.append(f"{name:<18} skipped: {r['reason']}")
    t = result["total"]
    rows += ["-" * len(head), f"{'total':<18} {t['documents']:>6} {t['lines']:>8} {t['words']:>10} {t['tokens']:>10}"]
    h = result["heldout"]
    if h["status"] == "written":
        rows.append(f"{'heldout':<18} {h['documents']:>6} {h['lines']:>8} {h['words']:>10} {h['tokens']:>10}")
    else:
        rows.append(f"{'heldout':<18} skipped: {h['reason']}")
    rows.append(f"vocabulary: {result['vocab_size']} tokens; corpus.txt sha256 {result['corpus']['sha256'][:16]}...")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m tasks.text.study_corpus",
        description="Build the text study's offline pretraining corpus (corpus.txt, heldout.txt, a BPE "
                    "tokenizer and corpus.json with the counts) from the shared data folder.")
    ap.add_argument("--data", type=Path, required=True,
                    help="the shared data folder holding wikitext-2-tokens/, tinyshakespeare/ and glue/ "
                         "(on our machines ../shared/data)")
    ap.add_argument("--out", type=Path, required=True,
                    help="output folder (e.g. runs/text-corpus); its corpus.txt, heldout.txt, tokenizer/ and "
                         "corpus.json are replaced")
    ap.add_argument("--vocab-size", type=int, default=8192,
                    help="BPE vocabulary size including 256 bytes and 5 specials (default 8192). With ~2M words "
                         "of text, 8k keeps most frequent words whole; much larger vocabularies leave rare "
                         "tokens with too few training examples for a small encoder")
    ap.add_argument("--sources", nargs="+", default=list(DEFAULT_SOURCES), choices=ALL_SOURCES, metavar="SOURCE",
                    help=f"sources to include (default: all but {PYTHON_DOCS}); choose from {', '.join(ALL_SOURCES)}. "
                         f"{PYTHON_DOCS} adds about 170k words but depends on the Python version, so counts then "
                         "differ between machines")
    ap.add_argument("--heldout-documents", type=int, default=DEFAULT_HELDOUT_DOCUMENTS,
                    help="last WikiText-2 test articles kept out of the corpus and written to heldout.txt, for "
                         f"masked-token accuracy on unseen text (default {DEFAULT_HELDOUT_DOCUMENTS}: 27k words, about "
                         "5k masked tokens at a 15%% mask ratio; 0 writes none)")
    args = ap.parse_args(argv)
    try:
        result = build_study_corpus(args.data, args.out, vocab_size=args.vocab_size, sources=args.sources,
                                    heldout_documents=args.heldout_documents)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(format_table(result))
    print(f"written: {args.out / 'corpus.txt'}, {args.out / 'heldout.txt'}, {args.out / 'tokenizer'}, "
          f"{args.out / 'corpus.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
