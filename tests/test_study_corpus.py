"""The text study's corpus builder, on a tiny fake data folder written here (never ../shared/data).

Checked: WikiText articles split at ` = Title = ` only, GLUE dev/test text never enters, labels dropped,
the held-out slice is disjoint from the corpus, counts equal hand counts, rebuilds are byte-identical,
skipped sources and the errors for bad input.
"""

import json

import pytest
from tokenizers import Tokenizer

from tasks.text import python_docs
from tasks.text.corpus import build_token_cache, detect_layout
from tasks.text.study_corpus import DEFAULT_SOURCES, build_study_corpus, main
from tasks.text.study_sources import wikitext_articles

VOCAB = 300  # tiny: 256 bytes + 5 specials + a few merges keeps each build well under a second

# Hand-written documents: what corpus.txt must hold, one list of lines per document.
VALID_ARTICLES = [
    ["Alpha", "Alpha is the first letter of the Greek alphabet .", "History",
     "It was written in the eighth century BC ."],
    ["Beta", "Beta follows alpha in the alphabet ."],
]
TEST_ARTICLES = [
    ["Gamma", "Gamma is the third letter .", "Use in science", "Gamma rays are light of high energy ."],
    ["Delta", "A delta is where a river meets the sea ."],
    ["Heldoutword", "Heldoutword appears only in the last article .", "Heldoutsection",
     "Its second paragraph is also held out ."],
]
SHAKESPEARE_LINES = ["First Citizen:", "Before we proceed any further, hear me speak.", "All:", "Speak, speak."]
SST2_TRAIN = ["hide new secretions from the parental units", "contains no wit , only labored gags"]
COLA_TRAIN = ["Our friends won't buy this analysis.", "One more pseudo generalization and I'm giving up."]
RTE_TRAIN = [("The cat sat on the mat.", "A cat sat."), ("Rain fell all day in Paris.", "It was dry in Paris.")]


def _wikitext(articles):
    """WikiText-2 token-file layout: ' = Title = ', ' = = Section = = ', blank lines around everything."""
    out = []
    for art in articles:
        out += [" ", f" = {art[0]} = ", " "]
        for line in art[1:]:
            heading = line[0].isupper() and not line.endswith(".")
            out += [f" = = {line} = = ", " "] if heading else [f" {line} ", " "]
    return "\n".join(out) + "\n"


def _fake_root(tmp_path):
    root = tmp_path / "data"
    wiki = root / "wikitext-2-tokens"
    wiki.mkdir(parents=True)
    (wiki / "valid.txt").write_text(_wikitext(VALID_ARTICLES))
    (wiki / "test.txt").write_text(_wikitext(TEST_ARTICLES))
    (root / "tinyshakespeare").mkdir()
    (root / "tinyshakespeare" / "input.txt").write_text(
        "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n")
    glue = root / "glue"
    for folder in ("SST-2", "CoLA", "RTE", "QNLI"):
        (glue / folder).mkdir(parents=True)
    # the marker words zzdev / zztest are in dev and test files only: they must never reach corpus.txt
    (glue / "SST-2" / "train.tsv").write_text("sentence\tlabel\n" + "".join(f"{s} \t{i % 2}\n"
                                                                          for i, s in enumerate(SST2_TRAIN)))
    (glue / "SST-2" / "dev.tsv").write_text("sentence\tlabel\nzzdev a fine film \t1\n")
    (glue / "SST-2" / "test.tsv").write_text("index\tsentence\n0\tzztest unseen words\n")
    (glue / "CoLA" / "train.tsv").write_text("".join(f"gj04\t{i % 2}\t\t{s}\n" for i, s in enumerate(COLA_TRAIN)))
    (glue / "CoLA" / "dev.tsv").write_text("gj04\t1\t\tzzdev the dog barked.\n")
    (glue / "RTE" / "train.tsv").write_text("index\tsentence1\tsentence2\tlabel\n" + "".join(
        f"{i}\t{a}\t{b}\t{'entailment' if i % 2 == 0 else 'not_entailment'}\n" for i, (a, b) in enumerate(RTE_TRAIN)))
    # a dev text equal to a train text: the audit must count it (and only it)
    (glue / "RTE" / "dev.tsv").write_text("index\tsentence1\tsentence2\tlabel\n0\tzzdev new premise.\tA cat sat.\t"
                                          "entailment\n1\tzzdev other premise.\tzzdev other.\tnot_entailment\n")
    (glue / "QNLI" / "dev.tsv").write_text("index\tquestion\tsentence\tlabel\n0\tzzdev why?\tzzdev because.\t"
                                           "entailment\n")  # QNLI without train: skipped
    return root


def _expected_documents():
    rte = [t for pair in RTE_TRAIN for t in pair]
    return {"wikitext-2-valid": VALID_ARTICLES, "wikitext-2-test": TEST_ARTICLES[:-1],
            "tinyshakespeare": [SHAKESPEARE_LINES], "glue-cola": [COLA_TRAIN], "glue-sst2": [SST2_TRAIN],
            "glue-rte": [rte]}


def _text(documents):
    return "\n\n".join("\n".join(doc) for doc in documents) + "\n"


@pytest.fixture
def built(tmp_path):
    root = _fake_root(tmp_path)
    out = tmp_path / "out"
    result = build_study_corpus(root, out, vocab_size=VOCAB, heldout_documents=1)
    return root, out, result


def test_wikitext_articles_split_at_titles_only(tmp_path):
    path = tmp_path / "w.txt"
    path.write_text(_wikitext(VALID_ARTICLES))
    assert wikitext_articles(path) == VALID_ARTICLES  # "= = History = =" stays inside Alpha, markup removed


def test_corpus_text_is_exactly_the_training_text(built):
    root, out, result = built
    expected = _expected_documents()
    text = (out / "corpus.txt").read_text()
    assert text == _text([doc for docs in expected.values() for doc in docs])
    for marker in ("zzdev", "zztest", "Heldoutword", "gj04", "entailment", "= "):
        assert marker not in text  # dev/test text, held-out article, CoLA source column, labels, heading markup
    lines = text.splitlines()
    assert not any(line.strip() in ("0", "1") for line in lines)  # SST-2/CoLA labels dropped
    assert detect_layout(out / "corpus.txt") == "plain"  # TokenBlockDataset(layout="auto") keeps the blank lines


def test_heldout_is_the_last_test_article_and_disjoint(built):
    root, out, result = built
    held = (out / "heldout.txt").read_text()
    assert held == _text(TEST_ARTICLES[-1:])
    corpus_lines = set((out / "corpus.txt").read_text().splitlines())
    assert not set(held.splitlines()) & corpus_lines
    assert result["heldout"]["documents"] == 1 and result["heldout"]["lines"] == 4
    assert result["heldout"]["words"] == sum(len(s.split()) for s in TEST_ARTICLES[-1])
    assert result["heldout"]["lines_also_in_corpus"] == 0


def test_counts_equal_hand_counts(built):
    root, out, result = built
    tok = Tokenizer.from_file(str(out / "tokenizer" / "tokenizer.json"))
    expected = _expected_documents()
    total = {"documents": 0, "lines": 0, "words": 0, "tokens": 0}
    for name, docs in expected.items():
        lines = [line for doc in docs for line in doc]
        row = result["sources"][name]
        want = {"documents": len(docs), "lines": len(lines), "words": sum(len(s.split()) for s in lines),
                "tokens": sum(len(tok.encode(s, add_special_tokens=False).ids) for s in lines)}
        assert {k: row[k] for k in want} == want, name
        for k in total:
            total[k] += want[k]
    assert result["total"] == total
    assert result["sources"]["glue-sst2"]["files"] == ["glue/SST-2/train.tsv"]
    assert result["sources"]["glue-qnli"] == {"status": "skipped", "reason": "glue/QNLI/train.tsv not found"}
    assert result["sources"]["glue-mnli"]["status"] == "skipped"
    assert sorted(result["inputs"]) == ["glue/CoLA/train.tsv", "glue/RTE/train.tsv", "glue/SST-2/train.tsv",
                                        "tinyshakespeare/input.txt", "wikitext-2-tokens/test.txt",
                                        "wikitext-2-tokens/valid.txt"]  # no dev or test file among the inputs
    assert result["vocab_size"] == tok.get_vocab_size() <= VOCAB
    # the reader the pretraining uses sees the same documents and tokens
    cache = build_token_cache(out / "corpus.txt", _load(out), cache_dir=out / "cache")
    assert cache.num_documents == total["documents"] and cache.num_tokens == total["tokens"]
    assert json.loads((out / "corpus.json").read_text()) == result


def _load(out):
    from tasks.text.tokenizer import load_tokenizer

    return load_tokenizer(out / "tokenizer")


def test_dev_overlap_audit_counts_shared_texts(built):
    root, out, result = built
    audit = result["dev_overlap"]
    assert audit["glue-rte"]["dev_examples"] == 2
    assert audit["glue-rte"]["dev_examples_with_a_text_in_corpus"] == 1  # "A cat sat." is in train too
    assert audit["glue-sst2"]["dev_examples_with_a_text_in_corpus"] == 0
    assert "glue-qnli" not in audit  # not a used source


def test_rebuild_is_byte_identical(built, tmp_path):
    root, out, result = built
    again = tmp_path / "again"
    assert build_study_corpus(root, again, vocab_size=VOCAB, heldout_documents=1) == result
    for name in ("corpus.txt", "heldout.txt", "corpus.json", "tokenizer/tokenizer.json"):
        assert (again / name).read_bytes() == (out / name).read_bytes(), name


def test_sources_order_is_fixed_and_missing_sources_are_skipped(tmp_path):
    root = tmp_path / "data"
    (root / "tinyshakespeare").mkdir(parents=True)
    (root / "tinyshakespeare" / "input.txt").write_text("All:\nSpeak, speak.\n\nFirst:\nWe are accounted poor.\n")
    result = build_study_corpus(root, tmp_path / "out", vocab_size=VOCAB,
                                sources=list(reversed(DEFAULT_SOURCES)))
    assert list(result["sources"])[0] == "wikitext-2-valid"
    assert result["sources"]["wikitext-2-test"] == {"status": "skipped",
                                                    "reason": "wikitext-2-tokens/test.txt not found"}
    assert result["heldout"]["status"] == "skipped" and not (tmp_path / "out" / "heldout.txt").exists()
    assert result["total"]["lines"] == 4 and result["total"]["documents"] == 1


def test_python_docs_source_is_opt_in(tmp_path, monkeypatch):
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "mod.py").write_text('"""This module explains how the fake standard library writes its own prose."""\n')
    monkeypatch.setattr(python_docs, "stdlib_dir", lambda: lib)
    root = _fake_root(tmp_path)
    result = build_study_corpus(root, tmp_path / "out", vocab_size=VOCAB, sources=["python-docs"],
                                heldout_documents=0)
    assert result["sources"]["python-docs"]["lines"] == 1 and result["sources"]["python-docs"]["words"] == 12
    assert (tmp_path / "out" / "corpus.txt").read_text() == ("This module explains how the fake standard library "
                                                             "writes its own prose.\n")
    assert "python-docs" not in DEFAULT_SOURCES


def test_errors_are_one_line_and_name_the_fix(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    looked = r"no corpus text found \(looked for wikitext-2-tokens/valid.txt.*fix: pass --data"
    with pytest.raises(FileNotFoundError, match=looked):
        build_study_corpus(empty, tmp_path / "out", vocab_size=VOCAB)
    assert main(["--data", str(empty), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "tinyshakespeare/input.txt" in err
    with pytest.raises(FileNotFoundError, match="data folder not found"):
        build_study_corpus(tmp_path / "nowhere", tmp_path / "out")
    root = _fake_root(tmp_path)
    with pytest.raises(ValueError, match="has 3 articles, cannot hold out 3; fix: pass --heldout-documents below 3"):
        build_study_corpus(root, tmp_path / "out", vocab_size=VOCAB, heldout_documents=3)
    with pytest.raises(ValueError, match="unknown corpus source"):
        build_study_corpus(root, tmp_path / "out", sources=["wikitext-103"])
    with pytest.raises(ValueError, match="vocab_size > 261"):
        build_study_corpus(root, tmp_path / "out", vocab_size=100, heldout_documents=1)
    with pytest.raises(ValueError, match="heldout_documents must be >= 0"):
        build_study_corpus(root, tmp_path / "out", vocab_size=VOCAB, heldout_documents=-1)


def test_cli_prints_the_table(tmp_path, capsys):
    root = _fake_root(tmp_path)
    out = tmp_path / "out"
    assert main(["--data", str(root), "--out", str(out), "--vocab-size", str(VOCAB), "--heldout-documents", "1"]) == 0
    printed = capsys.readouterr().out
    total = json.loads((out / "corpus.json").read_text())["total"]
    assert f"{total['words']:>10}" in printed.splitlines()[-4]  # the total row, before heldout and vocabulary lines
    assert "glue-qnli          skipped: glue/QNLI/train.tsv not found" in printed
