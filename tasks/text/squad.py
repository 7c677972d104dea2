"""SQuAD v1.1 (Rajpurkar et al. 2016) and XQuAD (Artetxe et al. 2020): reading, features, answer
extraction, and the official exact-match / F1.

What it implements
- `load_squad(path)`: the parsed JSON ({"version", "data": [{"title", "paragraphs": [{"context", "qas"}]}]}),
  checked for that structure. XQuAD files use the same layout (one file per language).
- `read_examples(dataset)`: one `SquadExample` per question.
- `prepare_features(examples, tokenizer, max_length=384, doc_stride=128, max_query_length=64)`: the
  question and a window of the context encoded as a pair (`<s> Q </s></s> C </s>` or `[CLS] Q [SEP] C [SEP]`).
  Long contexts are cut into windows as in BERT's `run_squad.py`: consecutive windows start `doc_stride`
  tokens apart (so they overlap by `window - doc_stride` tokens). Each feature keeps the character offsets
  of its context tokens (None elsewhere) and the gold start/end token positions of the first answer
  (0, the `<s>`/`[CLS]` token, when the answer is not fully inside the window).
- `postprocess_predictions(...)`: for each question, the `n_best` highest start and end logits of each
  of its windows, kept only when both tokens are context tokens, end >= start and the span has at most
  `max_answer_length` tokens; the best start+end score wins and its text is cut from the context by
  character offsets (so the answer is the exact original characters, whatever the language).
- `SquadCollator(pad_id)`: pads a batch of features for the span head; `limit_questions(articles, n, seed)`:
  a seeded random subset of n questions (for quick runs), articles and paragraphs trimmed to match.
- `squad_scores(dataset, predictions)`: the official v1.1 evaluation script (`evaluate-v1.1.py`)
  re-implemented: answers normalised by lower-casing, removing ASCII punctuation, removing the
  articles a/an/the as whole words, and collapsing white space; EM and token F1 take the maximum over the
  gold answers; an unanswered question scores 0; results in percent. XQuAD is scored with this same
  script (as its authors do) for every language.

Differences from the originals
- BERT keeps, for a token seen in several windows, only the window where it has the most context;
  we keep every window and take the best-scoring span (as HuggingFace's `run_qa.py` does).
- Offsets come from the tokenizer on the raw context (no whitespace pre-splitting), which works for
  languages written without spaces (Chinese, Thai).
"""

from __future__ import annotations

import json
import re
import string
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# ---- the official evaluation (evaluate-v1.1.py) ---------------------------------------------------------

_PUNCT = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize_answer(s: str) -> str:
    """Lower case, drop ASCII punctuation, drop the words a/an/the, collapse white space (official order)."""
    s = s.lower()
    s = "".join(ch for ch in s if ch not in _PUNCT)
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


def exact_match_score(prediction: str, ground_truth: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(ground_truth))


def f1_score(prediction: str, ground_truth: str) -> float:
    """Token F1 over normalised white-space tokens (bag of words with counts)."""
    pred, gold = normalize_answer(prediction).split(), normalize_answer(ground_truth).split()
    common = Counter(pred) & Counter(gold)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(gold)
    return 2 * precision * recall / (precision + recall)


def squad_scores(dataset, predictions: Mapping[str, str]) -> dict[str, float]:
    """{"exact_match", "f1"} in percent over every question of `dataset` (the parsed JSON, its "data"
    list, or a path); `predictions` maps question id -> answer text; missing ids score 0."""
    if isinstance(dataset, (str, Path)):
        dataset = load_squad(dataset)
    articles = dataset["data"] if isinstance(dataset, Mapping) else dataset
    em = f1 = 0.0
    total = 0
    for article in articles:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                total += 1
                if qa["id"] not in predictions:
                    continue  # the official script prints a message and scores it 0
                golds = [a["text"] for a in qa["answers"]]
                pred = predictions[qa["id"]]
                em += max(exact_match_score(pred, g) for g in golds)
                f1 += max(f1_score(pred, g) for g in golds)
    if total == 0:
        raise ValueError("squad_scores: the dataset has no questions")
    return {"exact_match": 100.0 * em / total, "f1": 100.0 * f1 / total}


# ---- reading -----------------------------------------------------------------------------------------


def load_squad(path: str | Path) -> dict:
    """Parse a SQuAD-v1.1-format JSON file (SQuAD, XQuAD) and check its structure."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"SQuAD file not found: {path}; fix: give a SQuAD v1.1-format JSON file")
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except json.JSONDecodeError as error:  # a ValueError, but one that does not name the file
        raise ValueError(f"{path}: not valid JSON ({error.msg} at line {error.lineno} column {error.colno}); fix: "
                         "re-download the file or pass the SQuAD/XQuAD .json itself") from None
    except UnicodeDecodeError as error:
        raise ValueError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start}); fix: pass the SQuAD/XQuAD "
                         ".json file (UTF-8 JSON)") from None
    fix = "fix: pass a SQuAD v1.1 / XQuAD file ({'data': [{'title', 'paragraphs': [{'context', 'qas'}]}]})"
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise ValueError(f"{path}: not SQuAD format (no top-level object with a 'data' list of articles); {fix}")
    for k, article in enumerate(data["data"]):
        if not isinstance(article, dict) or not isinstance(article.get("paragraphs"), list):
            raise ValueError(f"{path}: article {k} of 'data' has no 'paragraphs' list; {fix}")
        for paragraph in article["paragraphs"]:
            if not isinstance(paragraph, dict) or not isinstance(paragraph.get("context"), str) \
                    or not isinstance(paragraph.get("qas"), list):
                raise ValueError(f"{path}: a paragraph of {article.get('title')!r} lacks 'context' or 'qas'; {fix}")
            for qa in paragraph["qas"]:
                answers = qa.get("answers", []) if isinstance(qa, dict) else None  # test files may have none
                well_formed = isinstance(answers, list) and "id" in qa and "question" in qa and all(
                    isinstance(a, dict) and "text" in a and "answer_start" in a for a in answers)
                if not well_formed:
                    qid = qa.get("id") if isinstance(qa, dict) else None
                    raise ValueError(f"{path}: question {qid!r} of {article.get('title')!r} lacks 'id', 'question' or "
                                     f"answers with 'text' and 'answer_start'; {fix}")
    return data


@dataclass
class SquadExample:
    id: str
    question: str
    context: str
    answers: list[str]  # gold answer texts (several on dev)
    answer_starts: list[int]  # their character positions in context
    title: str = ""


def read_examples(dataset) -> list[SquadExample]:
    """One example per question, in file order (`dataset`: parsed JSON, a path, or examples)."""
    if isinstance(dataset, (str, Path)):
        dataset = load_squad(dataset)
    if isinstance(dataset, list) and (not dataset or isinstance(dataset[0], SquadExample)):
        return dataset
    articles = dataset["data"] if isinstance(dataset, Mapping) else dataset
    out = []
    for article in articles:
        for paragraph in article["paragraphs"]:
            for qa in paragraph["qas"]:
                out.append(SquadExample(
                    id=qa["id"], question=qa["question"], context=paragraph["context"],
                    answers=[a["text"] for a in qa.get("answers", [])],
                    answer_starts=[int(a["answer_start"]) for a in qa.get("answers", [])],
                    title=article.get("title", ""),
                ))
    return out


def count_questions(dataset) -> int:
    articles = dataset["data"] if isinstance(dataset, Mapping) else dataset
    return sum(len(p["qas"]) for a in articles for p in a["paragraphs"])


# ---- features ----------------------------------------------------------------------------------------


@dataclass
class SquadFeature:
    example_index: int  # position of the example in the list given to prepare_features
    example_id: str
    input_ids: list[int]
    token_type_ids: list[int]
    offsets: list[tuple[int, int] | None]  # (start, end) in the context for context tokens, else None
    start_position: int = 0  # gold start token (0 = no answer in this window)
    end_position: int = 0

    @property
    def context_mask(self) -> list[bool]:
        """True = a context token (the only tokens an answer may start or end on)."""
        return [o is not None for o in self.offsets]


def _answer_char_span(ex: SquadExample) -> tuple[int, int] | None:
    """[start, end) characters of the first gold answer, re-found nearby if answer_start is off."""
    if not ex.answers:
        return None
    text, start = ex.answers[0], ex.answer_starts[0]
    if ex.context[start : start + len(text)] != text:
        found = [m.start() for m in re.finditer(re.escape(text), ex.context)]
        if not found:
            return None
        start = min(found, key=lambda s: abs(s - start))
    return start, start + len(text)


def prepare_features(
    examples,
    tokenizer,
    max_length: int = 384,
    doc_stride: int = 128,
    max_query_length: int = 64,
) -> list[SquadFeature]:
    """Question + context windows as model inputs (see the module docstring); `examples` may be the
    parsed JSON or a list of `SquadExample`."""
    examples = read_examples(examples)
    questions = tokenizer.encode_batch_full([e.question for e in examples], add_special_tokens=False)
    contexts = tokenizer.encode_batch_full([e.context for e in examples], add_special_tokens=False)
    specials = tokenizer.num_special_tokens_pair
    features: list[SquadFeature] = []
    for i, (ex, q, c) in enumerate(zip(examples, questions, contexts, strict=True)):  # one encoding per example
        q_ids = q.input_ids[:max_query_length]
        window = max_length - len(q_ids) - specials  # context tokens per window
        if window < 1:
            raise ValueError(
                f"max_length={max_length} leaves no room for the context after a {len(q_ids)}-token question"
            )
        span = _answer_char_span(ex)
        tok_start = tok_end = None
        if span is not None:  # tokens overlapping the answer's characters
            inside = [k for k, (s, e) in enumerate(c.offsets) if s < span[1] and e > span[0]]
            if inside:
                tok_start, tok_end = inside[0], inside[-1]
        start = 0
        while True:
            end = min(start + window, len(c.input_ids))
            enc = tokenizer.build_inputs(q_ids, c.input_ids[start:end])
            first = enc.sequence_ids.index(1) if end > start else len(enc.input_ids) - 1  # first context token
            offsets: list[tuple[int, int] | None] = [None] * len(enc.input_ids)
            offsets[first : first + end - start] = c.offsets[start:end]
            sp = ep = 0
            if tok_start is not None and start <= tok_start and tok_end < end:
                sp, ep = first + tok_start - start, first + tok_end - start
            features.append(SquadFeature(i, ex.id, enc.input_ids, enc.token_type_ids, offsets, sp, ep))
            if end >= len(c.input_ids):
                break
            start += min(doc_stride, window)
    return features


# ---- post-processing ---------------------------------------------------------------------------------


def postprocess_predictions(
    examples,
    features: Sequence[SquadFeature],
    start_logits,
    end_logits,
    n_best: int = 20,
    max_answer_length: int = 30,
    return_nbest: bool = False,
):
    """Best answer text per question id from start/end logits.

    start_logits/end_logits: one row per feature, (F, T) padded arrays or a list of (T_f,) arrays.
    Returns {qid: text} ("" when no valid span exists), and with return_nbest=True also
    {qid: [(text, score), ...]} sorted by score.
    """
    examples = read_examples(examples)
    if len(start_logits) != len(features) or len(end_logits) != len(features):
        raise ValueError(f"postprocess_predictions: {len(features)} features but {len(start_logits)} start "
                         f"and {len(end_logits)} end logit rows")
    candidates: dict[int, list[tuple[float, int, int]]] = {}  # example index -> (score, char start, char end)
    for f, feat in enumerate(features):
        T = len(feat.input_ids)
        s_log = np.asarray(start_logits[f], dtype=np.float64)[:T]  # (T,)
        e_log = np.asarray(end_logits[f], dtype=np.float64)[:T]  # (T,)
        top_s = np.argsort(-s_log, kind="stable")[:n_best]
        top_e = np.argsort(-e_log, kind="stable")[:n_best]
        cands = candidates.setdefault(feat.example_index, [])
        for s in top_s.tolist():
            if feat.offsets[s] is None:
                continue
            for e in top_e.tolist():
                if feat.offsets[e] is None or e < s or e - s + 1 > max_answer_length:
                    continue
                cands.append((float(s_log[s] + e_log[e]), feat.offsets[s][0], feat.offsets[e][1]))
    answers: dict[str, str] = {}
    nbest: dict[str, list[tuple[str, float]]] = {}
    for i, ex in enumerate(examples):
        cands = sorted(candidates.get(i, []), key=lambda c: -c[0])
        answers[ex.id] = ex.context[cands[0][1] : cands[0][2]] if cands else ""
        if return_nbest:
            seen, lst = set(), []
            for score, cs, ce in cands:
                if (cs, ce) not in seen:
                    seen.add((cs, ce))
                    lst.append((ex.context[cs:ce], score))
                if len(lst) == n_best:
                    break
            nbest[ex.id] = lst
    return (answers, nbest) if return_nbest else answers


# ---- batches and subsets for fine-tuning --------------------------------------------------------------


@dataclass
class SquadCollator:
    """Pads SQuAD features to the batch's longest: input_ids, token_type_ids, padding_mask (True = pad),
    start_positions, end_positions."""

    pad_id: int

    def __call__(self, feats: Sequence[SquadFeature]) -> dict:
        import torch

        T = max(len(f.input_ids) for f in feats)
        B = len(feats)
        ids = torch.full((B, T), self.pad_id, dtype=torch.long)  # (B, T)
        types = torch.zeros((B, T), dtype=torch.long)  # (B, T)
        pad = torch.ones((B, T), dtype=torch.bool)  # (B, T) True = pad
        for i, f in enumerate(feats):
            n = len(f.input_ids)
            ids[i, :n] = torch.tensor(f.input_ids)
            types[i, :n] = torch.tensor(f.token_type_ids)
            pad[i, :n] = False
        return {"input_ids": ids, "token_type_ids": types, "padding_mask": pad,
                "start_positions": torch.tensor([f.start_position for f in feats]),
                "end_positions": torch.tensor([f.end_position for f in feats])}


def limit_questions(articles: list, n: int | None, seed: int) -> list:
    """A seeded random subset of n questions (all when n is None or larger); articles and paragraphs left
    without a question are dropped. The input is not modified."""
    import copy
    import random

    if n is None:
        return articles
    ids = [qa["id"] for a in articles for p in a["paragraphs"] for qa in p["qas"]]
    if n >= len(ids):
        return articles
    keep = set(random.Random(seed).sample(ids, n))
    out = []
    for article in articles:
        a = copy.deepcopy(article)
        a["paragraphs"] = [dict(p, qas=[qa for qa in p["qas"] if qa["id"] in keep]) for p in a["paragraphs"]]
        a["paragraphs"] = [p for p in a["paragraphs"] if p["qas"]]
        if a["paragraphs"]:
            out.append(a)
    return out
