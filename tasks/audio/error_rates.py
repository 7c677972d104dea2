"""Word and character error rates of speech recognition, from the Levenshtein distance.

What it implements (the metric of every LibriSpeech result in data2vec, arXiv 2202.03555 table 2, and of
wav2vec 2.0; Levenshtein 1966): the edit distance d(r, h) between a reference sequence r and a hypothesis h is the
fewest substitutions S, deletions D and insertions I, each of cost 1, that turn r into h, by dynamic programming:
  d[i][0] = i,  d[0][j] = j,
  d[i][j] = min(d[i-1][j] + 1, d[i][j-1] + 1, d[i-1][j-1] + [r_i != h_j])
and over a corpus of utterances
  WER = sum_u d(words(r_u), words(h_u)) / sum_u |words(r_u)|   (S + D + I over the reference's N words)
  CER = the same over characters, spaces between words included (jiwer's and torchmetrics' convention).
The rates are corpus-level (edits summed before dividing), as fairseq and the papers report them, not a mean of
per-utterance rates; texts are compared as given after collapsing runs of whitespace (normalise case first if
it should not count). A rate can exceed 1 when the hypothesis has many insertions.

Differences from the original: fairseq computes the distance with the `editdistance` package; this is the same
recurrence written out (two rows of the table, O(|r| |h|) time).
"""

from __future__ import annotations

from collections.abc import Sequence


def edit_distance(ref: Sequence, hyp: Sequence) -> int:
    """Levenshtein distance: the fewest unit-cost substitutions, deletions and insertions turning ref into hyp."""
    previous = list(range(len(hyp) + 1))  # d[0][j] = j
    for i, r in enumerate(ref, start=1):
        current = [i]  # d[i][0] = i
        for j, h in enumerate(hyp, start=1):
            current.append(min(previous[j] + 1,  # delete r_i
                               current[j - 1] + 1,  # insert h_j
                               previous[j - 1] + (r != h)))  # substitute (free when equal)
        previous = current
    return previous[-1]


def _check(refs: Sequence[str], hyps: Sequence[str]) -> None:
    if isinstance(refs, str) or isinstance(hyps, str):
        raise TypeError("pass lists of utterances, not one string; fix: wrap it, [text]")
    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses; fix: one hypothesis per reference")


def word_errors(refs: Sequence[str], hyps: Sequence[str]) -> tuple[int, int]:
    """(edits summed over the utterances, reference words summed): WER's numerator and denominator."""
    _check(refs, hyps)
    edits = sum(edit_distance(r.split(), h.split()) for r, h in zip(refs, hyps, strict=True))
    return edits, sum(len(r.split()) for r in refs)


def char_errors(refs: Sequence[str], hyps: Sequence[str]) -> tuple[int, int]:
    """(character edits, reference characters), single spaces between words counted as characters."""
    _check(refs, hyps)
    refs, hyps = [" ".join(r.split()) for r in refs], [" ".join(h.split()) for h in hyps]
    edits = sum(edit_distance(r, h) for r, h in zip(refs, hyps, strict=True))
    return edits, sum(len(r) for r in refs)


def _rate(edits: int, total: int, unit: str) -> float:
    if total == 0:
        raise ValueError(f"the references hold no {unit}, so the error rate is undefined; fix: drop empty references")
    return edits / total


def word_error_rate(refs: Sequence[str], hyps: Sequence[str]) -> float:
    """Corpus WER = sum of word edit distances / number of reference words."""
    return _rate(*word_errors(refs, hyps), "words")


def char_error_rate(refs: Sequence[str], hyps: Sequence[str]) -> float:
    """Corpus CER = sum of character edit distances / number of reference characters."""
    return _rate(*char_errors(refs, hyps), "characters")
