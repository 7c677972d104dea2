"""Tokenizers: training both styles, special-token layout, offsets, save/load, official file formats."""

import json

import pytest

from tasks.text.tokenizer import TextTokenizer, load_tokenizer, train_tokenizer

TEXT = (
    "The quick brown fox jumps over the lazy dog.\n"
    "A cat sat on the mat and the dog sat on the log.\n\n"
    "Café naïve résumé: déjà vu.\n"
    "黑豹队的防守丢了多少分 308\n"
    "Der schnelle braune Fuchs springt über den faulen Hund.\n"
)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    p = tmp_path_factory.mktemp("tok") / "corpus.txt"
    p.write_text(TEXT * 20, encoding="utf-8")
    return p


@pytest.fixture(scope="module")
def bpe(corpus):
    return train_tokenizer([corpus], kind="bpe", vocab_size=400)


@pytest.fixture(scope="module")
def wordpiece(corpus):
    return train_tokenizer([corpus], kind="wordpiece", vocab_size=300)


def test_bpe_specials_and_pair_layout(bpe):
    assert bpe.style == "roberta"
    assert (bpe.cls_id, bpe.pad_id, bpe.sep_id, bpe.unk_id, bpe.mask_id) == (0, 1, 2, 3, 4)
    assert set(bpe.special_ids) == {0, 1, 2, 3, 4}
    assert 261 < bpe.vocab_size <= 400  # 256 bytes + 5 specials + merges (fewer if the text runs out)
    a = bpe.encode("the cat", add_special_tokens=False)
    b = bpe.encode("the dog", add_special_tokens=False)
    enc = bpe.encode_pair("the cat", "the dog")
    assert enc.input_ids == [0] + a + [2, 2] + b + [2]  # <s> A </s></s> B </s>
    assert enc.token_type_ids == [0] * len(enc.input_ids)
    assert bpe.encode("the cat") == [0] + a + [2]
    assert bpe.decode(bpe.encode("the cat sat")) == "the cat sat"


def test_wordpiece_specials_and_pair_layout(wordpiece):
    t = wordpiece
    assert t.style == "bert"
    assert (t.pad_id, t.unk_id, t.cls_id, t.sep_id, t.mask_id) == (0, 1, 2, 3, 4)
    a = t.encode("The cat", add_special_tokens=False)
    b = t.encode("the dog sat", add_special_tokens=False)
    enc = t.encode_pair("The cat", "the dog sat")
    assert enc.input_ids == [2] + a + [3] + b + [3]  # [CLS] A [SEP] B [SEP]
    assert enc.token_type_ids == [0] * (len(a) + 2) + [1] * (len(b) + 1)
    assert t.decode(t.encode("The cat sat")) == "the cat sat"  # lower-cased


@pytest.mark.parametrize("style", ["bpe", "wordpiece"])
def test_offsets_point_at_the_original_characters(style, bpe, wordpiece):
    t = bpe if style == "bpe" else wordpiece
    text = "Café  naïve 黑豹队 Fuchs, 308!"
    enc = t.encode_full(text, add_special_tokens=False)
    assert len(enc.offsets) == len(enc.input_ids)
    for s, e in enc.offsets:
        assert 0 <= s <= e <= len(text)
        assert text[s:e] == text[s:e].strip()  # trimmed of white space
    starts = [s for s, _ in enc.offsets]
    assert starts == sorted(starts)  # in text order (byte pieces of one character share its span)
    # every non-space character is covered by some token
    covered = set()
    for s, e in enc.offsets:
        covered.update(range(s, e))
    assert covered == {i for i, c in enumerate(text) if not c.isspace()}
    # with specials, offsets are (0, 0) and sequence ids None on the specials
    full = t.encode_full(text, "Hund")
    special_offsets = [full.offsets[i] for i, s in enumerate(full.sequence_ids) if s is None]
    assert special_offsets == [(0, 0)] * full.sequence_ids.count(None)
    assert full.input_ids[full.sequence_ids.index(1)] == t.encode("Hund", add_special_tokens=False)[0]


def test_mask_token_in_text(bpe):
    ids = bpe.encode("the <mask> sat", add_special_tokens=False)
    assert bpe.mask_id in ids


@pytest.mark.parametrize("style", ["bpe", "wordpiece"])
def test_save_and_load_round_trip(tmp_path, style, bpe, wordpiece):
    t = bpe if style == "bpe" else wordpiece
    path = t.save(tmp_path / "tok")
    assert path.name == "tokenizer.json"
    for src in (tmp_path / "tok", path):
        t2 = load_tokenizer(src)
        assert t2.style == t.style and t2.special_ids == t.special_ids and t2.vocab_size == t.vocab_size
        assert t2.encode_pair("The cat", "the dog").input_ids == t.encode_pair("The cat", "the dog").input_ids


def test_load_roberta_vocab_json_and_merges(tmp_path, bpe):
    folder = tmp_path / "roberta"
    folder.mkdir()
    bpe.tokenizer.model.save(str(folder))  # writes vocab.json + merges.txt, RoBERTa's file format
    assert sorted(p.name for p in folder.iterdir()) == ["merges.txt", "vocab.json"]
    t = load_tokenizer(folder)
    assert t.style == "roberta"
    assert t.mask_id == json.loads((folder / "vocab.json").read_text())["<mask>"]
    assert t.encode("The lazy dog <mask>") == bpe.encode("The lazy dog <mask>")


def test_load_bert_vocab_txt_cased_and_uncased(tmp_path):
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "##s", "sat", "."]
    uncased = tmp_path / "uncased"
    uncased.mkdir()
    (uncased / "vocab.txt").write_text("\n".join(vocab) + "\n")
    t = load_tokenizer(uncased)
    assert t.style == "bert" and (t.cls_id, t.sep_id, t.pad_id, t.mask_id, t.unk_id) == (2, 3, 0, 4, 1)
    assert t.encode("The cats sat.") == [2, 5, 6, 7, 8, 9, 3]
    cased = tmp_path / "cased"
    cased.mkdir()
    (cased / "vocab.txt").write_text("\n".join(vocab + ["The"]) + "\n")
    assert load_tokenizer(cased).encode("The cat", add_special_tokens=False) == [10, 6]
    (cased / "tokenizer_config.json").write_text('{"do_lower_case": true}')
    assert load_tokenizer(cased).encode("The cat", add_special_tokens=False) == [5, 6]


def test_batch_encoding_matches_single(bpe):
    texts = ["the cat", "a dog sat on the log", "黑豹"]
    assert bpe.encode_batch(texts) == [bpe.encode(t) for t in texts]
    full = bpe.encode_batch_full(texts, ["x", "y", "z"])
    assert [f.input_ids for f in full] == [bpe.encode_pair(a, b).input_ids for a, b in zip(texts, "xyz", strict=True)]


def test_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match="vocab.txt"):
        load_tokenizer(tmp_path)
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        train_tokenizer([tmp_path / "missing.txt"])
    with pytest.raises(ValueError, match="kind"):
        train_tokenizer([], kind="sentencepiece")
    assert isinstance(TextTokenizer, type)
