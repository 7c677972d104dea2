"""Pretraining corpora: text files -> a memory-mapped token cache -> fixed-length token blocks.

What it implements
- Reading text files line by line (never a whole file in memory) in two layouts:
  * "plain": a non-empty line is a sentence; one or more blank lines end a document (Tiny Shakespeare,
    one-sentence-per-line corpora, BERT's pretraining text format);
  * "wikitext": WikiText-2/103 files; a level-1 heading line ` = Title = ` starts a new article
    (document) and the heading is kept as the article's first sentence; blank lines and sub-headings
    (` = = Section = = `) do not split documents.
  "auto" picks "wikitext" when a level-1 heading appears among the first 200 non-empty lines.
- `build_token_cache`: encodes the files in batches of lines and appends the ids to a flat binary file
  read back as a `numpy.memmap` (uint16 when the vocabulary fits, else uint32), plus an index of
  sentence boundaries and document ids. Cached under a key made of the tokenizer and the files' paths,
  sizes and modification times, so it is built once.
- `TokenBlockDataset`: fairseq's `TokenBlockDataset` with `break_mode="complete_doc"` (the RoBERTa
  pretraining setting, Liu et al. 2019 section 4.2 "FULL-SENTENCES"/"DOC-SENTENCES"): blocks hold whole
  sentences of one document, so a block never crosses a document boundary; each block is
  `<s> tokens </s>` (or `[CLS] tokens [SEP]`) padded to `block_size`, with `padding_mask` True on the pads.
  `break_mode="doc"` fills blocks completely with the tokens of one document, splitting sentences.
- `glue_corpus`: the unlabeled text of a GLUE task written as a plain-layout text file, for
  self-pretraining on the downstream corpus (Krishna et al. 2022).

Differences from the originals
- fairseq's "complete" modes keep an over-long sentence whole in one over-long block; here a sentence
  longer than `block_size - 2` tokens is cut: its head fills the open block, then full blocks, and its
  tail opens the next block. Sentences that fit in a block are never cut.
- fairseq adds `<s>`/`</s>` per sentence in some preprocessing recipes; here only the block is framed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from .tokenizer import TextTokenizer

_WIKITEXT_TITLE = re.compile(r"^= (?!=).*(?<!=) =$")  # " = Title = " stripped; not " = = Section = = "


def default_cache_dir() -> Path:
    """`$DATA2VEC_CACHE` or `~/.cache/data2vec`."""
    return Path(os.environ.get("DATA2VEC_CACHE", Path.home() / ".cache" / "data2vec"))


def detect_layout(path: str | Path, probe_lines: int = 200) -> str:
    """'wikitext' if a level-1 ` = Title = ` heading appears among the first non-empty lines, else 'plain'."""
    seen = 0
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            if _WIKITEXT_TITLE.match(line):
                return "wikitext"
            seen += 1
            if seen >= probe_lines:
                break
    return "plain"


def iter_sentences(path: str | Path, layout: str = "auto") -> Iterator[tuple[str, bool]]:
    """Yield (sentence, starts_new_document) for each non-empty line of a text file, streaming."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"corpus file not found: {path}; fix: pass the path of a text file")
    if layout == "auto":
        layout = detect_layout(path)
    if layout not in ("plain", "wikitext"):
        raise ValueError(f"layout must be 'auto', 'plain' or 'wikitext', got {layout!r}")
    new_doc = True  # the first sentence of a file always starts a document
    with open(path, encoding="utf-8", errors="replace") as fh:
        for raw in fh:
            line = raw.strip()
            if not line:
                if layout == "plain":
                    new_doc = True
                continue
            if layout == "wikitext" and _WIKITEXT_TITLE.match(line):
                new_doc = True
            yield line, new_doc
            new_doc = False


@dataclass
class TokenCache:
    """A flat token array with sentence boundaries and the document id of each sentence.

    tokens: (N,) ids; sentence i is tokens[bounds[i]:bounds[i+1]] and belongs to document doc_ids[i].
    """

    tokens: np.ndarray  # (N,) uint16/uint32, usually a read-only memmap
    bounds: np.ndarray  # (S + 1,) int64, non-decreasing, bounds[0] = 0, bounds[-1] = N
    doc_ids: np.ndarray  # (S,) int64, non-decreasing

    @property
    def num_tokens(self) -> int:
        return int(self.bounds[-1])

    @property
    def num_sentences(self) -> int:
        return len(self.doc_ids)

    @property
    def num_documents(self) -> int:
        return int(self.doc_ids[-1]) + 1 if len(self.doc_ids) else 0

    @classmethod
    def from_documents(cls, documents: Sequence[Sequence[Sequence[int]]]) -> TokenCache:
        """In-memory cache from documents given as lists of sentences of token ids."""
        flat, bounds, doc_ids = [], [0], []
        for d, doc in enumerate(documents):
            for sent in doc:
                flat.extend(int(t) for t in sent)
                bounds.append(len(flat))
                doc_ids.append(d)
        return cls(np.asarray(flat, dtype=np.int64), np.asarray(bounds, dtype=np.int64),
                   np.asarray(doc_ids, dtype=np.int64))


def _cache_key(paths: Sequence[Path], tokenizer: TextTokenizer, layout: str) -> str:
    h = hashlib.sha1(tokenizer.tokenizer.to_str().encode("utf-8"))
    h.update(layout.encode())
    for p in paths:
        st = p.stat()
        h.update(f"{p.resolve()}|{st.st_size}|{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def build_token_cache(
    paths: str | Path | Sequence[str | Path],
    tokenizer: TextTokenizer,
    cache_dir: str | Path | None = None,
    layout: str = "auto",
    batch_lines: int = 2048,
) -> TokenCache:
    """Encode text files into a memory-mapped token cache (built once, then reused).

    Files are streamed `batch_lines` lines at a time; every file starts a new document. Only the
    sentence index (two int64 per sentence) is kept in memory while building.
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    paths = [Path(p) for p in paths]
    for p in paths:
        if not p.is_file():
            raise FileNotFoundError(f"corpus file not found: {p}; fix: pass the path of a text file")
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir() / "tokens"
    cache_dir.mkdir(parents=True, exist_ok=True)
    key = _cache_key(paths, tokenizer, layout)
    meta_path, tok_path, idx_path = (cache_dir / f"{key}.{ext}" for ext in ("json", "bin", "npz"))
    dtype = np.uint16 if tokenizer.vocab_size <= 65536 else np.uint32
    if not (meta_path.is_file() and tok_path.is_file() and idx_path.is_file()):
        bounds, doc_ids = array("q", [0]), array("q")
        doc, total = -1, 0
        tmp_tok = tok_path.with_suffix(".bin.tmp")
        with open(tmp_tok, "wb") as out:

            def flush(batch: list[tuple[str, bool]]):
                nonlocal doc, total
                encoded = tokenizer.encode_batch([s for s, _ in batch], add_special_tokens=False)
                for (_, starts_doc), ids in zip(batch, encoded, strict=True):  # one encoding per sentence
                    doc += int(starts_doc)
                    np.asarray(ids, dtype=dtype).tofile(out)
                    total += len(ids)
                    bounds.append(total)
                    doc_ids.append(doc)

            for p in paths:
                batch: list[tuple[str, bool]] = []
                for sent, starts_doc in iter_sentences(p, layout):
                    batch.append((sent, starts_doc))
                    if len(batch) >= batch_lines:
                        flush(batch)
                        batch = []
                if batch:
                    flush(batch)
        np.savez(idx_path, bounds=np.frombuffer(bounds, dtype=np.int64), doc_ids=np.frombuffer(doc_ids, dtype=np.int64))
        os.replace(tmp_tok, tok_path)
        meta = {"dtype": np.dtype(dtype).name, "num_tokens": total, "files": [str(p) for p in paths], "layout": layout}
        meta_path.write_text(json.dumps(meta, indent=1))
    meta = json.loads(meta_path.read_text())
    idx = np.load(idx_path)
    if meta["num_tokens"] == 0:
        tokens = np.zeros(0, dtype=meta["dtype"])
    else:
        tokens = np.memmap(tok_path, dtype=meta["dtype"], mode="r", shape=(meta["num_tokens"],))
    return TokenCache(tokens, idx["bounds"], idx["doc_ids"])


def make_blocks(cache: TokenCache, capacity: int, break_mode: str = "complete_doc") -> np.ndarray:
    """(num_blocks, 2) [start, end) token ranges of at most `capacity` tokens, never crossing documents.

    complete_doc: greedy packing of whole sentences; a sentence longer than `capacity` (which must be cut
    anyway) first fills the open block, then full blocks, and its tail opens the next block.
    doc: each document's tokens cut into consecutive chunks of `capacity`.
    """
    if capacity < 1:
        raise ValueError(f"block capacity must be >= 1 token, got {capacity}")
    bounds, docs = cache.bounds, cache.doc_ids
    blocks = array("q")  # flat [start0, end0, start1, end1, ...]: 16 bytes a block, even for huge corpora
    if break_mode == "doc":
        if len(docs) == 0:
            return np.zeros((0, 2), dtype=np.int64)
        first = np.flatnonzero(np.r_[True, docs[1:] != docs[:-1]])  # first sentence of each document
        starts = bounds[first]
        ends = np.r_[bounds[first[1:]], bounds[-1]]
        for s, e in zip(starts.tolist(), ends.tolist(), strict=True):  # one start and one end per document
            for c in range(s, e, capacity):
                blocks.extend((c, min(c + capacity, e)))
    elif break_mode == "complete_doc":
        cur_start, cur_end, cur_doc = -1, -1, -1
        for s, e, d in zip(bounds[:-1].tolist(), bounds[1:].tolist(), docs.tolist(), strict=True):  # S sentences
            if e == s:
                continue
            if cur_start >= 0 and d != cur_doc:
                blocks.extend((cur_start, cur_end))
                cur_start = -1
            if cur_start >= 0 and e - cur_start > capacity:
                if e - s > capacity:  # must be cut anyway: its head fills the current block (s == cur_end)
                    blocks.extend((cur_start, cur_start + capacity))
                    s = cur_start + capacity
                else:
                    blocks.extend((cur_start, cur_end))
                cur_start = -1
            if cur_start < 0:
                n_full = (e - s) // capacity if e - s > capacity else 0
                for k in range(n_full):
                    blocks.extend((s + k * capacity, s + (k + 1) * capacity))
                s += n_full * capacity
                if s == e:
                    continue
                cur_start, cur_doc = s, d
            cur_end = e
        if cur_start >= 0:
            blocks.extend((cur_start, cur_end))
    else:
        raise ValueError(f"break_mode must be 'complete_doc' or 'doc', got {break_mode!r}")
    return np.frombuffer(blocks, dtype=np.int64).reshape(-1, 2).copy()  # (num_blocks, 2)


class TokenBlockDataset(Dataset):
    """Fixed-length pretraining blocks: {"input_ids": LongTensor(T), "padding_mask": BoolTensor(T)}.

    source: a text file, a list of text files, a `TokenCache`, a 1-D integer array (one document), or a
    list of documents each a list of sentences of token ids.
    Each block is `<s> tokens </s>` (`[CLS] tokens [SEP]`) + pads, T = block_size, padding_mask True = pad.
    """

    def __init__(
        self,
        source,
        tokenizer: TextTokenizer,
        block_size: int = 512,
        break_mode: str = "complete_doc",
        cache_dir: str | Path | None = None,
        layout: str = "auto",
    ):
        if block_size < 3:
            raise ValueError(f"block_size must be >= 3 (two specials + one token), got {block_size}; fix: use longer "
                             "blocks (--seq-len), e.g. 128")
        if isinstance(source, TokenCache):
            cache = source
        elif isinstance(source, (str, Path)) or (
            isinstance(source, (list, tuple)) and source and isinstance(source[0], (str, Path))
        ):
            cache = build_token_cache(source, tokenizer, cache_dir=cache_dir, layout=layout)
        elif isinstance(source, (np.ndarray, torch.Tensor)) or (
            isinstance(source, (list, tuple)) and source and isinstance(source[0], (int, np.integer))
        ):
            arr = np.asarray(source).reshape(-1)  # (N,)
            cache = TokenCache(arr, np.array([0, len(arr)], dtype=np.int64), np.zeros(1, dtype=np.int64))
        elif isinstance(source, (list, tuple)):
            cache = TokenCache.from_documents(source)
        else:
            raise ValueError(f"TokenBlockDataset: unsupported source of type {type(source).__name__}")
        self.cache = cache
        self.block_size = block_size
        self.cls_id, self.sep_id, self.pad_id = tokenizer.cls_id, tokenizer.sep_id, tokenizer.pad_id
        self.blocks = make_blocks(cache, block_size - 2, break_mode)  # (num_blocks, 2)

    def __len__(self) -> int:
        return len(self.blocks)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        s, e = self.blocks[i]
        n = int(e - s) + 2
        ids = torch.full((self.block_size,), self.pad_id, dtype=torch.long)  # (T,)
        ids[0] = self.cls_id
        ids[1 : n - 1] = torch.from_numpy(np.asarray(self.cache.tokens[s:e], dtype=np.int64))
        ids[n - 1] = self.sep_id
        padding_mask = torch.zeros(self.block_size, dtype=torch.bool)  # (T,) True = padding
        padding_mask[n:] = True
        return {"input_ids": ids, "padding_mask": padding_mask}


def glue_texts(task: str, data_dir: str | Path, splits: Sequence[str] = ("train",)) -> Iterator[list[str]]:
    """The unlabeled text of a GLUE task: one list of 1 or 2 sentences per example."""
    from .glue import load_glue

    for split in splits:
        for ex in load_glue(task, split, data_dir):
            yield [t for t in (ex.text_a, ex.text_b) if t]


def glue_corpus(
    task: str,
    data_dir: str | Path,
    splits: Sequence[str] = ("train",),
    path: str | Path | None = None,
    one_document_per_example: bool = False,
) -> Path:
    """Write the labels-dropped text of a GLUE task as a plain-layout corpus file; returns its path.

    One sentence per line. By default all examples form one document, so short sentences from
    different examples are packed into the same block (far fewer pads for SST-2/CoLA); with
    `one_document_per_example=True` a blank line separates examples and blocks never mix them.
    Use only "train" (the default) when the corpus is for pretraining before dev evaluation.
    """
    if path is None:
        path = default_cache_dir() / "glue_corpus" / f"{task.lower()}_{'+'.join(splits)}.txt"
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", encoding="utf-8") as out:
        for sents in glue_texts(task, data_dir, splits):
            for s in sents:
                out.write(" ".join(s.split()) + "\n")
            if one_document_per_example:
                out.write("\n")
    os.replace(tmp, path)
    return path
