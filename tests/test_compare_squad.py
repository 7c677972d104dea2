"""The SQuAD / XQuAD protocol of the text comparison (data2vec/study/squad.py).

References are written here: a SQuAD-format file the test writes itself (6 articles of 2 paragraphs; paragraph j of
every article holds j + 1 questions, so an article has 3), whose sizes after the split are counted by hand from that
construction; the split's randomness by a seeded statistical test; the bad inputs through the real command. The
end-to-end run lives in tests/test_compare_text.py (one run of the comparison with --squad and --xquad). No test
reads ../shared/data.
"""

from __future__ import annotations

import copy
import json

import pytest
from test_compare_text import write_corpus, write_glue

from data2vec.study.squad import split_squad_articles

N_ARTICLES = 6
XQUAD_IDS = {"a0p1q0", "a1p0q0", "a4p1q1"}  # one question of paragraphs a0p1, a1p0 and a4p1
XQUAD_PARAGRAPHS = {("A0", 1): 2, ("A1", 0): 1, ("A4", 1): 2}  # (title, paragraph) -> its questions, by hand


def article(i: int, words=("answer", "key", "word")) -> dict:
    paragraphs = []
    for j in range(2):
        answers = [f"w{i}{j}{k}" for k in range(j + 1)]
        context = f"In article {i} part {j} the {words[1]} {words[2]}s are " + " and ".join(answers) + " ."
        qas = [{"id": f"a{i}p{j}q{k}", "question": f"which is {words[1]} {words[2]} {k} of part {j}?",
                "answers": [{"text": a, "answer_start": context.index(a)}]} for k, a in enumerate(answers)]
        paragraphs.append({"context": context, "qas": qas})
    return {"title": f"A{i}", "paragraphs": paragraphs}


def write_squad(path, n_articles: int = N_ARTICLES):
    path.write_text(json.dumps({"version": "1.1", "data": [article(i) for i in range(n_articles)]}))
    return path


def write_xquad(folder, languages=("en", "de")):
    """XQuAD-format files holding the paragraphs named in XQUAD_IDS (only those questions, ids kept), per language."""
    folder.mkdir(parents=True, exist_ok=True)
    words = {"en": ("answer", "key", "word"), "de": ("Antwort", "Schlüssel", "Wort")}
    for lang in languages:
        data = []
        for i in sorted({int(t[1:]) for t, _ in XQUAD_PARAGRAPHS}):
            a = article(i, words[lang])
            a["paragraphs"] = [dict(p, qas=[q for q in p["qas"] if q["id"] in XQUAD_IDS]) for p in a["paragraphs"]]
            a["paragraphs"] = [p for p in a["paragraphs"] if p["qas"]]
            data.append(a)
        (folder / f"xquad.{lang}.json").write_text(json.dumps({"version": "1.0", "data": data}, ensure_ascii=False))
    return folder


def titles(articles) -> set[str]:
    return {a["title"] for a in articles}


# ---- the split ----------------------------------------------------------------------------------------------------


def test_split_is_by_article_and_seeded():
    articles = [article(i) for i in range(N_ARTICLES)]
    original = copy.deepcopy(articles)
    train, evaluation = split_squad_articles(articles, seed=0, xquad_ids=set())
    assert len(train) == 3 and len(evaluation) == 3  # floor(6 / 2) articles train
    assert titles(train).isdisjoint(titles(evaluation)) and titles(train) | titles(evaluation) == titles(articles)
    contexts = [p["context"] for a in train for p in a["paragraphs"]]
    assert not set(contexts) & {p["context"] for a in evaluation for p in a["paragraphs"]}  # no context shared
    assert articles == original  # the input is not modified
    assert split_squad_articles(articles, 0, set()) == (train, evaluation)  # same seed, same split
    splits = {frozenset(titles(split_squad_articles(articles, s, set())[0])) for s in range(1, 6)}
    assert len(splits) > 1  # other seeds, other splits


def test_every_article_lands_in_the_training_half_about_half_the_time():
    """Seeded statistical test: over 400 seeds each article is in the training half with probability 1/2, so its
    count is Binomial(400, 0.5): mean 200, sd 10; 150..250 is a 5-sigma band."""
    articles = [article(i) for i in range(N_ARTICLES)]
    hits = dict.fromkeys(titles(articles), 0)
    for seed in range(400):
        for t in titles(split_squad_articles(articles, seed, set())[0]):
            hits[t] += 1
    assert all(150 <= n <= 250 for n in hits.values()), hits


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_xquad_paragraphs_leave_the_training_half_only(seed):
    articles = [article(i) for i in range(N_ARTICLES)]
    train, evaluation = split_squad_articles(articles, seed, XQUAD_IDS)
    removed = {k: n for k, n in XQUAD_PARAGRAPHS.items() if k[0] in titles(train)}
    assert all(not any(q["id"] in XQUAD_IDS for q in p["qas"]) for a in train for p in a["paragraphs"])
    assert sum(len(a["paragraphs"]) for a in train) == 2 * 3 - len(removed)  # 3 articles x 2 paragraphs
    assert sum(len(p["qas"]) for a in train for p in a["paragraphs"]) == 3 * 3 - sum(removed.values())
    assert evaluation == [a for a in articles if a["title"] in titles(evaluation)]  # the held-out half untouched
    from data2vec.study.squad import xquad_paragraphs as count

    assert count([a for a in articles if a["title"] in titles(train)], XQUAD_IDS) == len(removed)


def test_an_article_made_only_of_xquad_paragraphs_leaves_the_training_half():
    articles = [article(i) for i in range(N_ARTICLES)]
    train_titles = titles(split_squad_articles(articles, 0, set())[0])
    first = sorted(train_titles)[0]
    ids = {q["id"] for a in articles if a["title"] == first for p in a["paragraphs"] for q in p["qas"][:1]}
    train, _ = split_squad_articles(articles, 0, ids)
    assert titles(train) == train_titles - {first}


def test_too_few_articles_is_refused():
    with pytest.raises(ValueError, match="at least 4"):
        split_squad_articles([article(i) for i in range(3)], 0, set())


# ---- protocols and window length --------------------------------------------------------------------------------


def test_protocols_are_added_only_with_squad():
    from data2vec.study.text import text_protocols as protocols
    from data2vec.study.text_config import TextCompareConfig

    plain = TextCompareConfig(data="x", glue="x", out="o", runs="r", tasks=("sst2",))
    assert protocols(plain, "random") == ["sst2", "sst2-linear"]  # the GLUE-only comparison is unchanged
    cfg = TextCompareConfig(data="x", glue="x", out="o", runs="r", tasks=("sst2",), squad="s.json", xquad="x",
                            xquad_languages=("en", "es"), squad_arms=("random", "bert"))
    assert protocols(cfg, "bert") == ["sst2", "sst2-linear", "squad-heldout", "xquad-en", "xquad-es"]
    assert protocols(cfg, "data2vec") == ["sst2", "sst2-linear"]  # not in --squad-arms
    assert protocols(cfg, "majority") == ["sst2"]
    every = TextCompareConfig(data="x", glue="x", out="o", runs="r", tasks=("sst2",), squad="s.json")
    assert all("squad-heldout" in protocols(every, a) for a in ("random", "bert", "data2vec", "data2vec2"))
    assert not any(p.startswith("xquad") for p in protocols(every, "random"))  # no --xquad


def test_window_length_defaults_to_384_capped_at_the_encoder():
    from data2vec.config import get_preset
    from data2vec.study.errors import StudyError as CliError
    from data2vec.study.squad import max_length_for
    from data2vec.study.text_config import TextCompareConfig

    cfg = TextCompareConfig(data="x", glue="x", out="o", runs="r")
    assert max_length_for(cfg, get_preset("text", "mini")) == 256  # 258 positions, RoBERTa offset 2
    assert max_length_for(cfg, get_preset("text", "small")) == 384  # 514 positions: BERT's 384 fits
    with pytest.raises(CliError, match="exceeds the encoder's 256 positions"):
        max_length_for(TextCompareConfig(data="x", glue="x", out="o", runs="r", squad_max_length=300),
                       get_preset("text", "mini"))


# ---- bad input ----------------------------------------------------------------------------------------------------


def bad_squad(tmp_path, kind):
    if kind == "missing":
        return str(tmp_path / "nope.json")
    if kind == "format":
        (tmp_path / "bad.json").write_text(json.dumps({"articles": []}))
        return str(tmp_path / "bad.json")
    return str(write_squad(tmp_path / "small.json", n_articles=3))


@pytest.mark.parametrize("extra, message", [
    (lambda t: ["--squad", bad_squad(t, "missing")], "--squad"),
    (lambda t: ["--squad", bad_squad(t, "format")], "not SQuAD format"),
    (lambda t: ["--squad", bad_squad(t, "small")], "at least 4"),
    (lambda t: ["--xquad", str(write_xquad(t / "xq"))], "--xquad needs --squad"),
    (lambda t: ["--squad", str(write_squad(t / "s.json")), "--xquad", str(write_xquad(t / "xq")),
                "--xquad-languages", "en,es"], "no xquad.es.json"),
    (lambda t: ["--squad", str(write_squad(t / "s.json")), "--xquad", str(t / "none")], "no such folder"),
    (lambda t: ["--squad", str(write_squad(t / "s.json")), "--squad-arms", "majority"], "not an arm"),
    (lambda t: ["--squad", str(write_squad(t / "s.json")), "--squad-epochs", "0"], "--squad-epochs must be >= 1"),
])
def test_bad_squad_input_is_one_clear_line_before_any_work(tmp_path, extra, message, capsys):
    from data2vec.cli import main

    corpus, glue = write_corpus(tmp_path / "corpus.txt"), write_glue(tmp_path / "glue")
    argv = ["compare", "--modality", "text", "--data", str(corpus), "--glue", str(glue), "--tasks", "sst2",
            "--out", str(tmp_path / "o"), *extra(tmp_path)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o" / "config.json").exists()  # refused before any work
