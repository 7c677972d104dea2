"""Pretraining corpora: document splitting, block packing, padding masks, the memmap token cache."""

import types

import numpy as np
import pytest
import torch

from tasks.text.corpus import (
    TokenBlockDataset,
    TokenCache,
    build_token_cache,
    detect_layout,
    glue_corpus,
    iter_sentences,
    make_blocks,
)
from tasks.text.tokenizer import train_tokenizer

FAKE = types.SimpleNamespace(cls_id=0, pad_id=1, sep_id=2)  # only the ids matter to the blocks

PLAIN = "first doc line one\nfirst doc line two\n\n\nsecond doc only line\n\nthird doc a\nthird doc b\nthird doc c\n"
WIKI = (
    " \n = Alpha = \n \n Alpha is a letter . \n \n = = History = = \n \n It is old . \n"
    " \n = Beta = \n \n Beta follows alpha . \n"
)


def test_iter_sentences_plain_and_wikitext(tmp_path):
    p = tmp_path / "plain.txt"
    p.write_text(PLAIN)
    assert detect_layout(p) == "plain"
    got = list(iter_sentences(p))
    assert [s for s, _ in got] == [line for line in PLAIN.splitlines() if line]
    assert [new for _, new in got] == [True, False, True, True, False, False]
    w = tmp_path / "wiki.tokens"
    w.write_text(WIKI)
    assert detect_layout(w) == "wikitext"
    got = list(iter_sentences(w))
    assert [s for s, _ in got] == ["= Alpha =", "Alpha is a letter .", "= = History = =", "It is old .",
                                   "= Beta =", "Beta follows alpha ."]
    assert [new for _, new in got] == [True, False, False, False, True, False]  # sub-headings do not split


def _docs_of(cache):
    """Reference: each document's tokens, from the sentence index."""
    out = {}
    for i, d in enumerate(cache.doc_ids.tolist()):
        out.setdefault(d, []).extend(cache.tokens[cache.bounds[i]:cache.bounds[i + 1]].tolist())
    return out


def _sentence_sets():
    rng = np.random.default_rng(0)
    docs = []
    for _ in range(12):
        docs.append([list(rng.integers(10, 99, size=int(rng.integers(1, 14)))) for _ in range(int(rng.integers(1, 6)))])
    return docs


@pytest.mark.parametrize("break_mode", ["complete_doc", "doc"])
def test_blocks_respect_documents_and_lose_nothing(break_mode):
    docs = _sentence_sets()
    cache = TokenCache.from_documents(docs)
    block = 10
    ds = TokenBlockDataset(cache, FAKE, block, break_mode=break_mode)
    doc_of_token = np.repeat(cache.doc_ids, np.diff(cache.bounds))  # (N,)
    rebuilt: dict = {}
    for i in range(len(ds)):
        item = ds[i]
        ids, pad = item["input_ids"], item["padding_mask"]
        assert ids.dtype == torch.long and pad.dtype == torch.bool and ids.shape == pad.shape == (block,)
        n = int((~pad).sum())
        assert not pad[:n].any() and pad[n:].all()  # True = padding, only at the end
        assert ids[0] == 0 and ids[n - 1] == 2 and (ids[n:] == 1).all()
        s, e = ds.blocks[i]
        assert len(set(doc_of_token[s:e].tolist())) == 1  # never crosses a document boundary
        rebuilt.setdefault(int(doc_of_token[s]), []).extend(ids[1:n - 1].tolist())
    assert rebuilt == _docs_of(cache)  # every token once, in order


def test_complete_doc_keeps_sentences_whole():
    docs = [[[5] * 3, [6] * 4, [7] * 5], [[8] * 2], [[9] * 20, [4] * 3]]
    cache = TokenCache.from_documents(docs)
    blocks = make_blocks(cache, capacity=8).tolist()
    # doc 0: 3+4 fit, 5 starts a new block; doc 1 alone; doc 2: the 20-token sentence is cut 8/8/4 and
    # its 4-token tail shares a block with the next sentence
    assert blocks == [[0, 7], [7, 12], [12, 14], [14, 22], [22, 30], [30, 37]]
    docs = [[[5] * 6, [9] * 20]]  # an over-long sentence first fills the open block
    assert make_blocks(TokenCache.from_documents(docs), 8).tolist() == [[0, 8], [8, 16], [16, 24], [24, 26]]


def test_token_cache_is_memmap_and_reused(tmp_path):
    text = tmp_path / "c.txt"
    text.write_text(PLAIN * 3)
    tok = train_tokenizer([text], kind="wordpiece", vocab_size=120, min_frequency=1)
    cache_dir = tmp_path / "cache"
    c1 = build_token_cache(text, tok, cache_dir=cache_dir, batch_lines=2)  # tiny batches: streaming path
    assert isinstance(c1.tokens, np.memmap) and c1.tokens.dtype == np.uint16
    files = sorted(cache_dir.iterdir())
    stamps = [f.stat().st_mtime_ns for f in files]
    c2 = build_token_cache(text, tok, cache_dir=cache_dir, batch_lines=1000)
    assert [f.stat().st_mtime_ns for f in sorted(cache_dir.iterdir())] == stamps  # not rebuilt
    assert np.array_equal(c1.tokens, c2.tokens) and np.array_equal(c1.bounds, c2.bounds)
    expected = [tok.encode(line, add_special_tokens=False) for line in (PLAIN * 3).splitlines() if line]
    assert c1.tokens.tolist() == [t for ids in expected for t in ids]
    assert c1.num_documents == 3 * 3 - 2  # no blank line between copies: the last and first documents merge
    ds = TokenBlockDataset(text, tok, 16, cache_dir=cache_dir)
    assert len(ds) >= c1.num_documents
    assert ds[0]["input_ids"][0] == tok.cls_id


def test_array_source_and_errors(tmp_path):
    ds = TokenBlockDataset(np.arange(10, 35), FAKE, block_size=12)
    assert len(ds) == 3  # 25 tokens / 10 per block
    assert ds[2]["input_ids"][:7].tolist() == [0, 30, 31, 32, 33, 34, 2]
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        TokenBlockDataset(tmp_path / "nope.txt", FAKE, 12)
    with pytest.raises(ValueError, match="block_size"):
        TokenBlockDataset(np.arange(5), FAKE, 2)


def test_glue_corpus_writes_the_unlabeled_text(tmp_path):
    task = tmp_path / "glue" / "RTE"
    task.mkdir(parents=True)
    (task / "train.tsv").write_text(
        "index\tsentence1\tsentence2\tlabel\n0\tA man  walks.\tSomeone walks.\tentailment\n"
        "1\tIt rains.\tIt is dry.\tnot_entailment\n"
    )
    path = glue_corpus("rte", tmp_path / "glue", path=tmp_path / "rte.txt")
    assert path.read_text().splitlines() == ["A man walks.", "Someone walks.", "It rains.", "It is dry."]
    path = glue_corpus("rte", tmp_path / "glue", path=tmp_path / "rte2.txt", one_document_per_example=True)
    assert [new for _, new in iter_sentences(path)] == [True, False, True, False]
