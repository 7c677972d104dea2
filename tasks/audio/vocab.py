"""The character vocabulary of CTC speech recognition: text <-> label ids, with the blank at id 0.

What it implements (wav2vec 2.0, arXiv 2006.11477 section 4 "fine-tuning": a linear layer over characters trained
with CTC; the released LibriSpeech vocabulary of `facebook/wav2vec2-base-960h` and `facebook/data2vec-audio-base-960h`,
whose conventions HF's `Wav2Vec2CTCTokenizer` follows):
- id 0 is `<pad>`, which CTC uses as its blank; then `<s>`, `</s>`, `<unk>`; then `|`, the word separator that
  stands for a space; then the characters. `CharVocab.librispeech()` is the released 32-symbol table in its order
  (upper-case letters by frequency in LibriSpeech, and the apostrophe), so its ids match a released CTC head.
- `encode(text)`: upper-cased, runs of whitespace -> one `|`, trimmed; a character outside the vocabulary becomes
  `<unk>`. `decode(ids)`: the symbols joined, `|` -> space, special symbols dropped (no CTC collapsing here:
  that is `ctc.greedy_decode`, which calls this after collapsing repeats and dropping blanks).
- `CharVocab.from_texts(texts)`: the special symbols and `|`, then every other character of the texts, most
  frequent first (ties by character), as the released table was built.

Differences from the original: the tokenizer trims the text and collapses repeated spaces before encoding (HF keeps
them, so "A  B" gives two `|`); otherwise the same ids as the released vocabulary.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

BLANK, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"  # CTC's blank is the padding symbol, id 0
WORD_SEP = "|"  # stands for a space between words
SPECIALS = (BLANK, BOS, EOS, UNK)
# the released LibriSpeech table after the specials and "|": letters by frequency, the apostrophe among them
_LIBRISPEECH_CHARS = "ETAONIHSRDLUMWCFGYPBVK'XJQZ"


class CharVocab:
    """Symbols in id order; `symbols[0]` must be the blank and every symbol a single character or a special."""

    def __init__(self, symbols: Sequence[str]):
        symbols = list(symbols)
        if symbols[:1] != [BLANK]:
            raise ValueError(f"CharVocab: id 0 must be the blank {BLANK!r}, got {symbols[:1]}; fix: put it first")
        if len(set(symbols)) != len(symbols):
            dup = sorted(s for s, n in Counter(symbols).items() if n > 1)
            raise ValueError(f"CharVocab: symbols repeated: {dup}; fix: list each symbol once")
        bad = [s for s in symbols if len(s) != 1 and s not in SPECIALS]
        if bad:
            raise ValueError(f"CharVocab: {bad} are neither one character nor one of {SPECIALS}; fix: one character "
                             "per symbol")
        if WORD_SEP not in symbols:
            raise ValueError(f"CharVocab: no word separator {WORD_SEP!r}; fix: add it (it stands for the space)")
        self.symbols = symbols
        self.index = {s: i for i, s in enumerate(symbols)}

    @classmethod
    def librispeech(cls) -> CharVocab:
        """The 32 symbols of the released LibriSpeech CTC models, in their order (`|` = 4, E = 5, ..., Z = 31)."""
        return cls([*SPECIALS, WORD_SEP, *_LIBRISPEECH_CHARS])

    @classmethod
    def from_texts(cls, texts: Iterable[str]) -> CharVocab:
        """The specials, `|`, then the texts' characters (upper-cased, spaces excluded), most frequent first."""
        counts = Counter(c for text in texts for c in " ".join(text.upper().split()) if c != " ")
        counts.pop(WORD_SEP, None)
        chars = sorted(counts, key=lambda c: (-counts[c], c))
        return cls([*SPECIALS, WORD_SEP, *chars])

    @classmethod
    def load(cls, path: str | Path) -> CharVocab:
        """A vocab.json as HF writes it ({symbol: id}, ids 0..V-1)."""
        table = json.loads(Path(path).read_text(encoding="utf-8"))
        ordered = sorted(table.items(), key=lambda kv: kv[1])
        if [i for _, i in ordered] != list(range(len(ordered))):
            raise ValueError(f"{path}: ids are not 0..{len(ordered) - 1}; fix: number the symbols from 0 without gaps")
        return cls([s for s, _ in ordered])

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.index, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")

    def __len__(self) -> int:
        return len(self.symbols)

    @property
    def blank_id(self) -> int:
        return 0

    @property
    def word_sep_id(self) -> int:
        return self.index[WORD_SEP]

    def normalise_text(self, text: str) -> str:
        """Upper case, words separated by one space, no leading or trailing space."""
        return " ".join(text.upper().split())

    def encode(self, text: str) -> list[int]:
        """Character ids of the normalised text; a space is `|`, an unknown character `<unk>`."""
        unk = self.index[UNK] if UNK in self.index else None
        ids = []
        for c in self.normalise_text(text):
            symbol = WORD_SEP if c == " " else c
            if symbol not in self.index and unk is None:
                raise ValueError(f"CharVocab.encode: {c!r} is not in the vocabulary and there is no {UNK}; fix: "
                                 "build the vocabulary from these texts (CharVocab.from_texts)")
            ids.append(self.index.get(symbol, unk))
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        """Symbols joined, `|` read as a space, specials dropped, repeated spaces merged (no CTC collapsing)."""
        symbols = [self.symbols[int(i)] for i in ids]
        chars = [" " if s == WORD_SEP else s for s in symbols if s not in SPECIALS]
        return " ".join("".join(chars).split())
