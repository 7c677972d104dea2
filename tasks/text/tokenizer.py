"""Tokenizers: train a byte-level BPE (RoBERTa style) or a WordPiece (BERT style), save/load them, and load
the official tokenizer files offline.

What it implements
- `train_tokenizer(files, kind="bpe"|"wordpiece", vocab_size, min_frequency)`: trains with HuggingFace
  `tokenizers` on text files (or an iterator of strings).
  * "bpe": byte-level BPE as in GPT-2/RoBERTa (Radford et al. 2019; Liu et al. 2019, section 4.4): no
    normalisation, ByteLevel pre-tokenizer without prefix space, specials `<s> <pad> </s> <unk> <mask>`
    with ids 0..4. Pairs are encoded `<s> A </s></s> B </s>`, token types all 0.
  * "wordpiece": BERT's WordPiece (Devlin et al. 2019, section 3): BertNormalizer (lower case, strip
    accents, split CJK characters), BertPreTokenizer, specials `[PAD] [UNK] [CLS] [SEP] [MASK]` with ids
    0..4. Pairs are encoded `[CLS] A [SEP] B [SEP]` with token types 0 for A (and the first two
    specials) and 1 for B and its final `[SEP]`.
- `load_tokenizer(path)`: a `tokenizer.json` file, or a folder with `tokenizer.json`, RoBERTa's
  `vocab.json` + `merges.txt`, or BERT's `vocab.txt`. Never touches the network.
- `TextTokenizer`: a thin wrapper giving the project one interface for both styles: ids of the special
  tokens, plain/pair/batch encoding, character offsets (for SQuAD), `build_inputs` (adds the specials
  around already-tokenised pieces, used by GLUE truncation and SQuAD windows), `decode`, `save`.

Differences from the originals
- Our trained vocabularies put the five specials first (ids 0..4); the official RoBERTa vocabulary has
  `<mask>` last (50264) and BERT's has `[PAD]=0 [UNK]=100 [CLS]=101 [SEP]=102 [MASK]=103`. Code must
  always use the `*_id` attributes, never literal ids.
- Character offsets are always trimmed of surrounding white space (RoBERTa's `trim_offsets`) and refer
  to the original, un-normalised text, so `text[start:end]` is the token's surface form.
- A BERT `vocab.txt` without a `tokenizer_config.json` is treated as lower-casing unless the vocabulary
  contains upper-case word pieces (cased models do, uncased ones do not).
- Truncation and padding settings stored in a loaded `tokenizer.json` are removed: truncation and
  padding are done explicitly by the callers (GLUE, SQuAD, corpus) so they are visible in the code.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

ROBERTA_SPECIALS = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")  # cls/bos, pad, sep/eos, unk, mask
BERT_SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


@dataclass
class Encoded:
    """One encoded text or text pair.

    `offsets[i]` is the (start, end) character span of token i in its own text (text A or B, see
    `sequence_ids`); special tokens have (0, 0). `sequence_ids[i]` is 0 for text A, 1 for text B and
    None for special tokens.
    """

    input_ids: list[int]
    token_type_ids: list[int]
    offsets: list[tuple[int, int]]
    sequence_ids: list[int | None]

    def __len__(self) -> int:
        return len(self.input_ids)


def _trim_offsets(text: str, offsets: Sequence[tuple[int, int]]) -> list[tuple[int, int]]:
    """Shrink each (start, end) span so it neither starts nor ends with white space."""
    out = []
    for start, end in offsets:
        while start < end and text[start].isspace():
            start += 1
        while end > start and text[end - 1].isspace():
            end -= 1
        out.append((start, end))
    return out


def _read_texts(files: Iterable[str | Path] | str | Path) -> Iterator[str]:
    """Stream the lines of text files (no file is read into memory at once)."""
    if isinstance(files, (str, Path)):
        files = [files]
    for f in files:
        path = Path(f)
        if not path.is_file():
            raise FileNotFoundError(f"tokenizer training file not found: {path}; fix: pass existing text files")
        with open(path, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                line = line.strip()
                if line:
                    yield line


class TextTokenizer:
    """A `tokenizers.Tokenizer` plus the facts the project needs: style and the special-token ids."""

    def __init__(self, tokenizer: Tokenizer, style: str | None = None):
        vocab = tokenizer.get_vocab(with_added_tokens=True)
        if style is None:
            if all(t in vocab for t in ("<s>", "</s>", "<pad>")):
                style = "roberta"
            elif all(t in vocab for t in ("[CLS]", "[SEP]", "[PAD]")):
                style = "bert"
            else:
                raise ValueError(
                    "cannot tell the tokenizer style: its vocabulary has neither <s> </s> <pad> (RoBERTa) "
                    "nor [CLS] [SEP] [PAD] (BERT); pass style='roberta' or style='bert'"
                )
        if style not in ("roberta", "bert"):
            raise ValueError(f"style must be 'roberta' or 'bert', got {style!r}")
        self.style = style
        names = ROBERTA_SPECIALS if style == "roberta" else BERT_SPECIALS
        missing = [t for t in names if t not in vocab]
        if missing:
            raise ValueError(f"{style} tokenizer lacks the special tokens {missing}")
        if style == "roberta":
            cls, pad, sep, unk, mask = names
        else:
            pad, unk, cls, sep, mask = names
        # "<mask>" in a text maps to the mask id (RoBERTa's <mask> also swallows the space before it)
        tokenizer.add_special_tokens([AddedToken(t, lstrip=(t == "<mask>"), normalized=False) for t in names])
        self.cls_token, self.pad_token, self.sep_token, self.unk_token, self.mask_token = cls, pad, sep, unk, mask
        self.cls_id, self.pad_id, self.sep_id = vocab[cls], vocab[pad], vocab[sep]
        self.unk_id, self.mask_id = vocab[unk], vocab[mask]
        self.bos_id, self.eos_id = self.cls_id, self.sep_id  # fairseq names
        self.special_ids: tuple[int, ...] = (self.cls_id, self.pad_id, self.sep_id, self.unk_id, self.mask_id)
        tokenizer.no_truncation()
        tokenizer.no_padding()
        if tokenizer.post_processor is None:
            tokenizer.post_processor = _post_processor(style, self.cls_id, self.sep_id)
        self.tokenizer = tokenizer

    # ---- facts -------------------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size(with_added_tokens=True)

    def __len__(self) -> int:
        return self.vocab_size

    @property
    def num_special_tokens_pair(self) -> int:
        """How many specials a pair adds: 4 for `<s> A </s></s> B </s>`, 3 for `[CLS] A [SEP] B [SEP]`."""
        return 4 if self.style == "roberta" else 3

    def token_to_id(self, token: str) -> int | None:
        return self.tokenizer.token_to_id(token)

    def id_to_token(self, idx: int) -> str | None:
        return self.tokenizer.id_to_token(idx)

    # ---- encoding ----------------------------------------------------------------------------------
    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """Token ids of one text, `<s> ... </s>` / `[CLS] ... [SEP]` around it unless told otherwise."""
        return self.tokenizer.encode(text, add_special_tokens=add_special_tokens).ids

    def encode_pair(self, text_a: str, text_b: str) -> Encoded:
        """A text pair with specials and token types (see the module docstring for the two layouts)."""
        return self.encode_full(text_a, text_b)

    def encode_full(self, text: str, pair: str | None = None, add_special_tokens: bool = True) -> Encoded:
        """Ids, token types, trimmed character offsets and sequence ids of a text or a text pair."""
        if not add_special_tokens:
            if pair is not None:
                raise ValueError("encode_full: a pair needs add_special_tokens=True; encode the texts separately")
            return self._plain(text)
        a = self._plain(text)
        b = self._plain(pair) if pair is not None else None
        return self.build_inputs(a, b)

    def encode_batch(self, texts: Sequence[str], add_special_tokens: bool = True) -> list[list[int]]:
        """Token ids of many texts at once (parallel in the Rust library)."""
        return [e.ids for e in self.tokenizer.encode_batch(list(texts), add_special_tokens=add_special_tokens)]

    def encode_batch_full(
        self, texts: Sequence[str], pairs: Sequence[str] | None = None, add_special_tokens: bool = True
    ) -> list[Encoded]:
        """`encode_full` for many texts (or pairs)."""
        plain = self._plain_batch(texts)
        if not add_special_tokens:
            if pairs is not None:
                raise ValueError("encode_batch_full: pairs need add_special_tokens=True")
            return plain
        plain_b = self._plain_batch(pairs) if pairs is not None else [None] * len(plain)
        if len(plain_b) != len(plain):
            raise ValueError(f"encode_batch_full: {len(texts)} texts but {len(pairs)} pair texts")
        return [self.build_inputs(a, b) for a, b in zip(plain, plain_b, strict=True)]  # lengths checked above

    def _plain(self, text: str) -> Encoded:
        return self._plain_batch([text])[0]

    def _plain_batch(self, texts: Sequence[str]) -> list[Encoded]:
        out = []
        encodings = self.tokenizer.encode_batch(list(texts), add_special_tokens=False)  # one per text
        for text, e in zip(texts, encodings, strict=True):
            n = len(e.ids)
            out.append(Encoded(list(e.ids), [0] * n, _trim_offsets(text, e.offsets), [0] * n))
        return out

    def build_inputs(self, a: Encoded | Sequence[int], b: Encoded | Sequence[int] | None = None) -> Encoded:
        """Add the style's special tokens around already tokenised pieces (without specials).

        RoBERTa: `<s> A </s>` and `<s> A </s></s> B </s>`, token types all 0.
        BERT:    `[CLS] A [SEP]` and `[CLS] A [SEP] B [SEP]`, token types 0 up to the first [SEP], 1 after.
        Plain id lists are accepted too (their offsets are then (0, 0)).
        """

        def as_enc(x):
            if isinstance(x, Encoded):
                return x
            ids = list(x)
            return Encoded(ids, [0] * len(ids), [(0, 0)] * len(ids), [0] * len(ids))

        a = as_enc(a)
        ids = [self.cls_id] + a.input_ids + [self.sep_id]
        seq: list[int | None] = [None] + [0] * len(a) + [None]
        offs = [(0, 0)] + list(a.offsets) + [(0, 0)]
        types = [0] * len(ids)
        if b is not None:
            b = as_enc(b)
            lead = [self.sep_id] if self.style == "roberta" else []
            ids += lead + b.input_ids + [self.sep_id]
            seq += [None] * len(lead) + [1] * len(b) + [None]
            offs += [(0, 0)] * len(lead) + list(b.offsets) + [(0, 0)]
            second = 0 if self.style == "roberta" else 1
            types += [second] * (len(lead) + len(b) + 1)
        return Encoded(ids, types, offs, seq)

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=skip_special_tokens)

    # ---- persistence -------------------------------------------------------------------------------
    def save(self, folder: str | Path) -> Path:
        """Write `tokenizer.json` into `folder` (created if needed); returns the file path."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "tokenizer.json"
        self.tokenizer.save(str(path))
        return path

    def __repr__(self) -> str:
        return f"TextTokenizer(style={self.style!r}, vocab_size={self.vocab_size})"


def _post_processor(style: str, cls_id: int, sep_id: int):
    if style == "roberta":
        # trim_offsets drops the leading-space byte from offsets; add_prefix_space matches the pre-tokenizer
        return processors.RobertaProcessing(("</s>", sep_id), ("<s>", cls_id), trim_offsets=True,
                                            add_prefix_space=False)
    return processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )


def _bpe_skeleton(model) -> Tokenizer:
    tok = Tokenizer(model)
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return tok


def _wordpiece_skeleton(model, lowercase: bool) -> Tokenizer:
    tok = Tokenizer(model)
    tok.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True,
                                                strip_accents=None, lowercase=lowercase)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece(prefix="##")
    return tok


def train_tokenizer(
    files: Iterable[str | Path] | str | Path,
    kind: str = "bpe",
    vocab_size: int = 8000,
    min_frequency: int = 2,
    lowercase: bool = True,
) -> TextTokenizer:
    """Train a tokenizer on text files, streamed line by line.

    kind: "bpe" (byte-level BPE, RoBERTa specials) or "wordpiece" (BERT specials).
    vocab_size: includes the 5 specials (and, for BPE, the 256 byte symbols, so it must exceed 261).
    min_frequency: a pair/piece must occur this often to be merged.
    lowercase: WordPiece only (BERT-uncased style); byte-level BPE never normalises.
    """
    if kind == "bpe":
        if vocab_size <= 256 + len(ROBERTA_SPECIALS):
            raise ValueError(f"byte-level BPE needs vocab_size > 261 (256 bytes + 5 specials), got {vocab_size}; "
                             "fix: ask for more tokens (--vocab-size), e.g. 1000")
        tok = _bpe_skeleton(models.BPE(unk_token=None))
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                      special_tokens=list(ROBERTA_SPECIALS),
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
        style = "roberta"
    elif kind == "wordpiece":
        tok = _wordpiece_skeleton(models.WordPiece(unk_token="[UNK]"), lowercase)
        trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                            special_tokens=list(BERT_SPECIALS), show_progress=False)
        style = "bert"
    else:
        raise ValueError(f"kind must be 'bpe' or 'wordpiece', got {kind!r}")
    tok.train_from_iterator(_read_texts(files), trainer=trainer)
    return TextTokenizer(tok, style)


def _bert_lowercase(folder: Path, vocab: Iterable[str]) -> bool:
    cfg = folder / "tokenizer_config.json"
    if cfg.is_file():
        data = json.loads(cfg.read_text(encoding="utf-8"))
        if "do_lower_case" in data:
            return bool(data["do_lower_case"])
    # uncased vocabularies have no upper-case pieces outside the [SPECIAL] tokens
    return not any(any(c.isupper() for c in t) for t in vocab if not (t.startswith("[") and t.endswith("]")))


def load_tokenizer(path: str | Path) -> TextTokenizer:
    """Load a tokenizer from `tokenizer.json` (file or folder), RoBERTa `vocab.json` + `merges.txt`, or
    BERT `vocab.txt` (all offline)."""
    path = Path(path)
    if path.is_file():
        if path.suffix != ".json":
            raise ValueError(f"load_tokenizer: expected a tokenizer.json file or a folder, got {path}")
        return TextTokenizer(Tokenizer.from_file(str(path)))
    if not path.is_dir():
        raise FileNotFoundError(f"load_tokenizer: no such file or folder: {path}")
    if (path / "tokenizer.json").is_file():
        return TextTokenizer(Tokenizer.from_file(str(path / "tokenizer.json")))
    if (path / "vocab.json").is_file() and (path / "merges.txt").is_file():
        model = models.BPE.from_file(str(path / "vocab.json"), str(path / "merges.txt"))
        return TextTokenizer(_bpe_skeleton(model), "roberta")
    if (path / "vocab.txt").is_file():
        vocab_file = path / "vocab.txt"
        with open(vocab_file, encoding="utf-8") as fh:
            pieces = [line.rstrip("\n") for line in fh]
        model = models.WordPiece.from_file(str(vocab_file), unk_token="[UNK]")
        return TextTokenizer(_wordpiece_skeleton(model, _bert_lowercase(path, pieces)), "bert")
    raise FileNotFoundError(
        f"load_tokenizer: {path} has none of tokenizer.json, vocab.json + merges.txt (RoBERTa) or "
        "vocab.txt (BERT); save a trained tokenizer with TextTokenizer.save(folder) or copy the official files there"
    )
