"""SQuAD/XQuAD: official EM/F1 on worked examples, windowed features, offsets, answer extraction."""

import json

import numpy as np
import pytest

from tasks.text.squad import (
    SquadExample,
    exact_match_score,
    f1_score,
    load_squad,
    normalize_answer,
    postprocess_predictions,
    prepare_features,
    read_examples,
    squad_scores,
)
from tasks.text.tokenizer import train_tokenizer


def _dataset(items):
    """SQuAD v1.1 JSON from (qid, question, context, [(answer, start), ...])."""
    paragraphs = [{"context": c, "qas": [{"id": q, "question": qq,
                                          "answers": [{"text": t, "answer_start": s} for t, s in ans]}]}
                  for q, qq, c, ans in items]
    return {"version": "1.1", "data": [{"title": "T", "paragraphs": paragraphs}]}


def test_normalisation_worked_examples():
    assert normalize_answer("The  Denver Broncos!") == "denver broncos"
    assert normalize_answer("an apple, a pear and THE plum.") == "apple pear and plum"
    assert normalize_answer("theatre another") == "theatre another"  # articles only as whole words
    assert normalize_answer("U.S.A.") == "usa"
    assert normalize_answer("  «Привет»,  мир ") == "«привет» мир"  # only ASCII punctuation is removed


def test_em_and_f1_worked_examples():
    assert exact_match_score("the Denver Broncos.", "Denver Broncos") == 1.0
    assert f1_score("Denver", "Denver Broncos") == pytest.approx(2 * 1 * 0.5 / 1.5)  # P=1, R=1/2
    # P=2/3, R=2/3
    assert f1_score("the cat sat on", "a cat on the mat") == pytest.approx(2 * (2 / 3) * (2 / 3) / (4 / 3))
    assert f1_score("a the", "the") == 0.0  # both normalise to nothing: no common token


def test_squad_scores_max_over_gold_answers_and_missing_ids(tmp_path):
    data = _dataset([
        ("q1", "Who won?", "The Denver Broncos won.",
         [("Denver Broncos", 4), ("Broncos", 11), ("The Denver Broncos", 0)]),
        ("q2", "Who lost?", "Carolina Panthers lost.", [("Carolina Panthers", 0), ("Panthers", 9)]),
        ("q3", "When?", "In 2016.", [("2016", 3)]),
    ])
    preds = {"q1": "the broncos", "q2": "Carolina"}  # q3 unanswered -> 0
    # q1: EM 1 ("broncos" == "Broncos"); q2: EM 0, F1 max(2*1*.5/1.5, 0) = 2/3
    scores = squad_scores(data, preds)
    assert scores["exact_match"] == pytest.approx(100 * 1 / 3)
    assert scores["f1"] == pytest.approx(100 * (1 + 2 / 3 + 0) / 3)
    path = tmp_path / "d.json"
    path.write_text(json.dumps(data))
    assert squad_scores(path, preds) == scores
    perfect = {"q1": "Denver Broncos", "q2": "Panthers", "q3": "2016"}
    assert squad_scores(load_squad(path)["data"], perfect) == {"exact_match": 100.0, "f1": 100.0}


def test_load_squad_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.json"):
        load_squad(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text('{"version": "1.1"}')
    with pytest.raises(ValueError, match=r"bad\.json: not SQuAD format .*'data' list.*fix:"):
        load_squad(tmp_path / "bad.json")
    # not JSON at all: a truncated download, an HTML error page, a file that is not UTF-8
    for name, raw in (("cut.json", b'{"data": [{"title": "x", "paragraphs": ['), ("page.json", b"<html>404</html>"),
                      ("latin.json", b'{"data": [], "title": "caf\xe9"}')):
        (tmp_path / name).write_bytes(raw)
        pattern = rf"{name.replace('.', '[.]')}: not (valid JSON|UTF-8 text).*fix:"
        with pytest.raises(ValueError, match=pattern) as caught:
            load_squad(tmp_path / name)
        assert "\n" not in str(caught.value) and caught.value.__cause__ is None
    with pytest.raises(ValueError, match=r"line 1 column 1"):
        load_squad(tmp_path / "page.json")
    # JSON, but not the SQuAD layout below "data"
    bad_layouts = {
        "list.json": [{"context": "c", "qas": []}],
        "no_paragraphs.json": {"data": [{"title": "t"}]},
        "no_qas.json": {"data": [{"title": "t", "paragraphs": [{"context": "c"}]}]},
        "no_question.json": {"data": [{"title": "t", "paragraphs": [{"context": "c", "qas": [{"id": "q1"}]}]}]},
        "bad_answer.json": {"data": [{"title": "t", "paragraphs": [{"context": "c", "qas": [
            {"id": "q1", "question": "?", "answers": [{"text": "c"}]}]}]}]},
    }
    expected = {"list.json": "no top-level object", "no_paragraphs.json": "article 0 of 'data' has no 'paragraphs'",
                "no_qas.json": "a paragraph of 't' lacks", "no_question.json": "question 'q1' of 't' lacks",
                "bad_answer.json": "question 'q1' of 't' lacks"}
    for name, content in bad_layouts.items():
        (tmp_path / name).write_text(json.dumps(content))
        with pytest.raises(ValueError, match=rf"{name.replace('.', '[.]')}: .*{expected[name]}.*fix:"):
            load_squad(tmp_path / name)
    ok = {"data": [{"title": "t", "paragraphs": [{"context": "c", "qas": [{"id": "q1", "question": "?"}]}]}]}
    (tmp_path / "unanswered.json").write_text(json.dumps(ok))  # questions without answers (a test file) are fine
    assert load_squad(tmp_path / "unanswered.json") == ok


MULTI = [  # (qid, question, context, answer) in several scripts; answers bounded by spaces/punctuation
    ("en", "Which team won?", "Super Bowl 50 was won by the Denver Broncos, who beat Carolina 24 to 10 in Santa Clara.",
     "Denver Broncos"),
    ("de", "Wer gewann?", "Das Spiel gewannen die Denver Broncos gegen die Carolina Panthers mit 24 zu 10 Punkten.",
     "Carolina Panthers"),
    ("zh", "黑豹队丢了多少分？", "黑豹队的防守丢了 308 分，在联赛中排名第六。冠军是：丹佛野马队。", "308"),
    ("zh2", "冠军是谁？", "黑豹队的防守丢了 308 分，在联赛中排名第六。冠军是：丹佛野马队。", "丹佛野马队"),
    ("ar", "من فاز؟", "فاز فريق دنفر برونكو بالمباراة ، وهزم كارولينا بنتيجة 24 مقابل 10 .", "دنفر برونكو"),
    ("hi", "किसने जीता?", "सुपर बाउल 50 डेनवर ब्रोंकोस ने जीता , जिसने कैरोलिना को हराया ।", "डेनवर ब्रोंकोस"),
    ("ru", "Кто победил?", "Игру выиграли «Денвер Бронкос», обыграв «Каролину» со счётом 24:10.", "Денвер Бронкос"),
]


@pytest.fixture(scope="module", params=["bpe", "wordpiece"])
def tokenizer(request, tmp_path_factory):
    text = tmp_path_factory.mktemp("sq") / "t.txt"
    text.write_text("\n".join(q + " " + c for _, q, c, _ in MULTI) * 5, encoding="utf-8")
    vocab_size = 500 if request.param == "bpe" else 400
    return train_tokenizer([text], kind=request.param, vocab_size=vocab_size, lowercase=False)


def _multi_examples():
    return [SquadExample(q, qq, c, [a], [c.index(a)]) for q, qq, c, a in MULTI]


def test_offsets_round_trip_multilingual(tokenizer):
    for ex in _multi_examples():
        for f in prepare_features([ex], tokenizer, max_length=256):
            spans = [o for o in f.offsets if o is not None]
            covered = set()
            for s, e in spans:
                covered.update(range(s, e))
            assert covered == {i for i, ch in enumerate(ex.context) if not ch.isspace()}, ex.id
            a = ex.answer_starts[0]
            assert f.start_position > 0
            s, e = f.offsets[f.start_position][0], f.offsets[f.end_position][1]
            assert (s, e) == (a, a + len(ex.answers[0])), ex.id  # the exact characters
            q = tokenizer.encode(ex.question, add_special_tokens=False)
            first = len(q) + (3 if tokenizer.style == "roberta" else 2)  # <s> Q </s></s> | [CLS] Q [SEP]
            assert [i for i, o in enumerate(f.offsets) if o is not None] == list(range(first, first + len(spans)))
            assert len(f.input_ids) == first + len(spans) + 1


def test_windows_with_doc_stride(tokenizer):
    context = " ".join(["Carolina played well ."] * 30) + " The Denver Broncos won ."
    ex = SquadExample("long", "Which team won?", context, ["Denver Broncos"], [0])
    ex.answer_starts = [ex.context.index("Denver Broncos")]
    q = tokenizer.encode("Which team won?", add_special_tokens=False)
    ctx = tokenizer.encode(ex.context, add_special_tokens=False)
    max_length, stride = 40, 10
    window = max_length - len(q) - tokenizer.num_special_tokens_pair
    feats = prepare_features([ex], tokenizer, max_length=max_length, doc_stride=stride)
    starts = list(range(0, max(len(ctx) - window, 0) + stride, stride))
    starts = [s for s in starts if s == 0 or s - stride + window < len(ctx)]
    assert len(feats) == len(starts)
    seen = []
    for f, s in zip(feats, starts, strict=True):
        assert len(f.input_ids) <= max_length
        n_ctx = sum(o is not None for o in f.offsets)
        assert n_ctx == min(window, len(ctx) - s)
        assert f.input_ids[f.offsets.index(next(o for o in f.offsets if o is not None))] == ctx[s]
        seen.extend(range(s, s + n_ctx))
    assert set(seen) == set(range(len(ctx)))
    with_answer = [f for f in feats if f.start_position > 0]
    assert with_answer and all(f.start_position == f.end_position == 0 for f in feats if f not in with_answer)
    for f in with_answer:
        assert ex.context[f.offsets[f.start_position][0]:f.offsets[f.end_position][1]] == "Denver Broncos"
    # oracle logits on the gold positions give back the answer; n-best over all windows
    S = [np.eye(len(f.input_ids))[f.start_position] * 5 for f in feats]
    E = [np.eye(len(f.input_ids))[f.end_position] * 5 for f in feats]
    assert postprocess_predictions([ex], feats, S, E) == {"long": "Denver Broncos"}


def test_postprocess_constraints(tokenizer):
    examples = _multi_examples()
    feats = prepare_features(examples, tokenizer, max_length=128)
    T = max(len(f.input_ids) for f in feats)
    start = np.zeros((len(feats), T))  # (F, T) padded logits
    end = np.zeros((len(feats), T))
    for i, f in enumerate(feats):
        start[i, f.start_position] = end[i, f.end_position] = 5.0
        start[i, 0] = end[i, 0] = 100.0  # the <s>/[CLS] token: never an answer
        start[i, 1] = end[i, 1] = 50.0  # a question token: never an answer
    preds = postprocess_predictions(examples, feats, start, end)
    assert preds == {ex.id: ex.answers[0] for ex in examples}
    gold = _dataset([(e.id, e.question, e.context, [(e.answers[0], e.answer_starts[0])]) for e in examples])
    assert squad_scores(gold, preds)["exact_match"] == 100.0
    # end before start is rejected; max_answer_length limits the span
    f = feats[0]
    ctx_idx = [i for i, o in enumerate(f.offsets) if o is not None]
    s_log, e_log = np.zeros(len(f.input_ids)), np.zeros(len(f.input_ids))
    s_log[ctx_idx[5]], e_log[ctx_idx[2]] = 10.0, 10.0  # the best pair (score 20) ends before it starts
    s_log[ctx_idx[1]], e_log[ctx_idx[4]] = 1.0, 1.0
    ctx = examples[0].context

    def span(i, j):
        return ctx[f.offsets[ctx_idx[i]][0]:f.offsets[ctx_idx[j]][1]]

    got, nbest = postprocess_predictions(examples[:1], feats[:1], [s_log], [e_log], n_best=2, return_nbest=True)
    assert got["en"] == span(1, 2)  # (5, 2) and (5, 4) rejected; (1, 2) scores 11
    assert nbest["en"] == [(span(1, 2), 11.0), (span(1, 4), 2.0)]
    got = postprocess_predictions(examples[:1], feats[:1], [s_log], [e_log], n_best=2, max_answer_length=1)
    assert got == {"en": ""}  # every candidate is longer than one token
    empty = postprocess_predictions(examples[:1], feats[:1], [np.zeros(len(f.input_ids))], [np.zeros(len(f.input_ids))],
                                    n_best=1)  # the single best start/end are the <s> token: no valid span
    assert empty == {"en": ""}


def test_read_examples_and_answer_start_repair(tokenizer):
    # the first answer's start is off by 2
    data = _dataset([("q", "Who?", "It was the Broncos who won.", [("Broncos", 9), ("Broncos", 11)])])
    ex = read_examples(data)
    assert ex[0].answers == ["Broncos", "Broncos"] and ex[0].answer_starts == [9, 11]
    f = prepare_features(data, tokenizer, max_length=64)[0]
    assert ex[0].context[f.offsets[f.start_position][0]:f.offsets[f.end_position][1]] == "Broncos"
