"""GLUE: every task's official TSV layout and quirks, encoding/batching, metrics against sklearn/scipy."""

import math

import numpy as np
import pytest
import torch

from tasks.text.glue import (
    GLUE_TASKS,
    GlueCollator,
    encode_glue,
    glue_average,
    glue_metrics,
    is_regression,
    load_glue,
    num_labels,
)
from tasks.text.tokenizer import train_tokenizer

T = "\t"


def _write(path, rows, bom=False):
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "\n".join(T.join(r) for r in rows) + "\n"
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"))


def _mnli_row(i, s1, s2, labels):
    return [str(i), "31193", f"{i}n", "government", "( ( b ) )", "( c )", "(ROOT (S b))", "(ROOT (S c))", s1, s2] + labels


@pytest.fixture(scope="module")
def glue_dir(tmp_path_factory):
    g = tmp_path_factory.mktemp("glue")
    # CoLA: train/dev without header (source, label, original mark, sentence); test with a header
    _write(g / "CoLA/train.tsv", [["gj04", "1", "", "Our friends won't buy this."], ["gj04", "0", "*", "He \"sleep\" the bed."],
                                  ["cj99", "1", "", "Bill left."]])
    _write(g / "CoLA/dev.tsv", [["gj04", "1", "", "The sailors rode."], ["w_80", "0", "*", "John bought for himself."]])
    _write(g / "CoLA/test.tsv", [["index", "sentence"], ["0", "Bill whistled."]])
    _write(g / "SST-2/train.tsv", [["sentence", "label"], ["hide new secretions ", "0"], ["a charming journey ", "1"]])
    _write(g / "SST-2/dev.tsv", [["sentence", "label"], ["it 's a charming journey . ", "1"]])
    _write(g / "SST-2/test.tsv", [["index", "sentence"], ["0", "uneasy mishmash ."], ["1", "fine ."]])
    # MRPC: byte-order mark, lone double quotes inside the texts
    mrpc_head = ["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"]
    _write(g / "MRPC/train.tsv", [mrpc_head, ["1", "702876", "702977", 'He called " the witness " .', 'As only " the witness ,'],
                                  ["0", "2108705", "2108831", "Yucaipa owned Dominick 's .", "Yucaipa bought it ."]], bom=True)
    _write(g / "MRPC/dev.tsv", [mrpc_head, ["1", "1355540", "1355592", 'He said " no .', "It fits ."]], bom=True)
    _write(g / "MRPC/test.tsv", [["index", "#1 ID", "#2 ID", "#1 String", "#2 String"], ["0", "1", "2", "PCCW 's chief", "Current chief"]], bom=True)
    sts_head = ["index", "genre", "filename", "year", "old_index", "source1", "source2", "sentence1", "sentence2"]
    _write(g / "STS-B/train.tsv", [sts_head + ["score"], ["0", "main-captions", "MSRvid", "2012test", "0001", "none", "none",
                                                          "A plane is taking off.", "An air plane is taking off.", "5.000"],
                                   ["1", "main-news", "x", "2012", "0002", "none", "none", "A man.", "A dog.", "0.400"]])
    _write(g / "STS-B/dev.tsv", [sts_head + ["score"], ["0", "main-captions", "MSRvid", "2012test", "0000", "none", "none",
                                                        "A man dances.", "A man wearing a hat dances.", "3.800"]])
    _write(g / "STS-B/test.tsv", [sts_head, ["0", "main-captions", "MSRvid", "2012test", "0024", "none", "none", "A girl.", "A girl hair."]])
    # QQP: a question broken over two lines makes two malformed rows, which are skipped
    qqp_head = ["id", "qid1", "qid2", "question1", "question2", "is_duplicate"]
    _write(g / "QQP/train.tsv", [qqp_head, ["133273", "213221", "213222", "How is the life?", "How is life?", "1"],
                                 ["5", "11", "12", "What is"], ["love?", "What is hate?", "0"],
                                 ["402555", "536040", "536041", "How do I go?", "Where do I go?", "0"]])
    _write(g / "QQP/dev.tsv", [qqp_head, ["201359", "303345", "303346", "Why are dogs good?", "Why dogs?", "1"]])
    _write(g / "QQP/test.tsv", [["id", "question1", "question2"], ["0", "Why?", "Why not?"]])
    # MNLI: sentence1/2 in columns 8/9, gold label last (dev has label1..label5 before it)
    base = ["index", "promptID", "pairID", "genre", "sentence1_binary_parse", "sentence2_binary_parse",
            "sentence1_parse", "sentence2_parse", "sentence1", "sentence2"]
    _write(g / "MNLI/train.tsv", [base + ["label1", "gold_label"], _mnli_row(0, "Conceptually cream.", "Product and geography.", ["neutral", "neutral"]),
                                  _mnli_row(1, "You know \" during.", "You lose the things.", ["entailment", "entailment"])])
    dev_head = base + ["label1", "label2", "label3", "label4", "label5", "gold_label"]
    _write(g / "MNLI/dev_matched.tsv", [dev_head, _mnli_row(0, "The new rights.", "Everyone likes.", ["neutral", "contradiction", "contradiction", "contradiction", "neutral", "contradiction"])])
    _write(g / "MNLI/dev_mismatched.tsv", [dev_head, _mnli_row(0, "Your contribution.", "Help.", ["entailment"] * 5 + ["entailment"]),
                                           _mnli_row(1, "Hot.", "Cold.", ["neutral"] * 5 + ["neutral"])])
    _write(g / "MNLI/test_matched.tsv", [base, _mnli_row(0, "Hello.", "Hi.", [])])
    _write(g / "MNLI/test_mismatched.tsv", [base, _mnli_row(0, "Hey.", "Yo.", [])])
    _write(g / "QNLI/train.tsv", [["index", "question", "sentence", "label"], ["0", "When?", "In 1990.", "entailment"],
                                  ["1", "Who?", "Nobody knows the day.", "not_entailment"]])
    _write(g / "QNLI/dev.tsv", [["index", "question", "sentence", "label"], ["0", "What came?", "The law came.", "entailment"]])
    _write(g / "QNLI/test.tsv", [["index", "question", "sentence"], ["0", "What?", "That."]])
    for task, labels in (("RTE", ("not_entailment", "entailment")), ("WNLI", ("1", "0"))):
        head = ["index", "sentence1", "sentence2", "label"]
        _write(g / f"{task}/train.tsv", [head, ["0", "No weapons found.", "Weapons found.", labels[0]], ["1", "A b.", "B.", labels[1]]])
        _write(g / f"{task}/dev.tsv", [head, ["0", "Dana died.", "Reeve had an accident.", labels[0]]])
        _write(g / f"{task}/test.tsv", [head[:3], ["0", "Mangla.", "Shukla."], ["1", "X.", "Y."], ["2", "Z.", "W."]])
    return g


EXPECTED_COUNTS = {
    "cola": {"train": 3, "dev": 2, "test": 1}, "sst2": {"train": 2, "dev": 1, "test": 2},
    "mrpc": {"train": 2, "dev": 1, "test": 1}, "stsb": {"train": 2, "dev": 1, "test": 1},
    "qqp": {"train": 2, "dev": 1, "test": 1},
    "mnli": {"train": 2, "dev_matched": 1, "dev_mismatched": 2, "test_matched": 1, "test_mismatched": 1},
    "qnli": {"train": 2, "dev": 1, "test": 1}, "rte": {"train": 2, "dev": 1, "test": 3},
    "wnli": {"train": 2, "dev": 1, "test": 3},
}


def test_all_nine_tasks_and_splits(glue_dir):
    assert list(GLUE_TASKS) == ["cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli"]
    for task, splits in EXPECTED_COUNTS.items():
        assert set(splits) == set(GLUE_TASKS[task].splits)
        for split, n in splits.items():
            examples = load_glue(task, split, glue_dir)
            assert len(examples) == n, (task, split)
            for ex in examples:
                assert isinstance(ex.text_a, str) and ex.text_a
                assert (ex.text_b is None) == (task in ("cola", "sst2"))
                if split.startswith("test"):
                    assert ex.label is None
                elif task == "stsb":
                    assert isinstance(ex.label, float)
                else:
                    assert ex.label in range(num_labels(task))


def test_task_quirks(glue_dir):
    cola = load_glue("CoLA", "train", glue_dir)  # no header: the first row is data
    assert [(e.text_a, e.label) for e in cola] == [("Our friends won't buy this.", 1), ('He "sleep" the bed.', 0), ("Bill left.", 1)]
    mrpc = load_glue("mrpc", "train", glue_dir)  # BOM stripped, quotes kept as they are
    assert (mrpc[0].label, mrpc[0].text_a, mrpc[0].text_b) == (1, 'He called " the witness " .', 'As only " the witness ,')
    qqp = load_glue("qqp", "train", glue_dir)
    assert [e.idx for e in qqp] == [133273, 402555] and [e.label for e in qqp] == [1, 0]
    mnli = load_glue("mnli", "dev_matched", glue_dir)
    assert (mnli[0].text_a, mnli[0].text_b) == ("The new rights.", "Everyone likes.")
    assert mnli[0].label == GLUE_TASKS["mnli"].labels.index("contradiction")  # gold_label, not label1
    assert load_glue("mnli", "dev", glue_dir)[0].text_a == "The new rights."  # dev = matched
    assert load_glue("mnli", "test_mismatched", glue_dir)[0].text_b == "Yo."
    assert [e.label for e in load_glue("stsb", "train", glue_dir)] == [5.0, 0.4]
    assert load_glue("rte", "train", glue_dir)[0].label == GLUE_TASKS["rte"].labels.index("not_entailment")
    assert load_glue("sst-2", "test", glue_dir)[1].idx == 1
    assert load_glue("rte", "dev", glue_dir / "RTE")[0].text_a == "Dana died."  # the task folder itself
    assert is_regression("STS-B") and num_labels("mnli") == 3 and num_labels("stsb") == 1


def test_missing_file_and_bad_label_errors(glue_dir, tmp_path):
    (tmp_path / "RTE").mkdir()
    (tmp_path / "RTE" / "train.tsv").write_text((glue_dir / "RTE" / "train.tsv").read_text())
    with pytest.raises(FileNotFoundError, match=r"RTE[/\\]dev\.tsv"):
        load_glue("rte", "dev", tmp_path)
    with pytest.raises(FileNotFoundError, match=r"MNLI[/\\]dev_mismatched\.tsv"):
        load_glue("mnli", "dev_mismatched", tmp_path)
    with pytest.raises(ValueError, match="no split"):
        load_glue("rte", "dev_matched", glue_dir)
    with pytest.raises(ValueError, match="unknown GLUE task"):
        load_glue("squad", "dev", glue_dir)
    (tmp_path / "RTE" / "dev.tsv").write_text("index\tsentence1\tsentence2\tlabel\n0\ta\tb\tmaybe\n")
    with pytest.raises(ValueError, match="line 2.*'maybe'"):
        load_glue("rte", "dev", tmp_path)


@pytest.mark.parametrize("kind", ["bpe", "wordpiece"])
def test_encoding_and_dynamic_padding(glue_dir, tmp_path, kind):
    text = tmp_path / "t.txt"
    text.write_text("No weapons found. Weapons found. A man dances. The sailors rode.\n" * 10)
    tok = train_tokenizer([text], kind=kind, vocab_size=300 if kind == "bpe" else 120)
    ex = load_glue("rte", "train", glue_dir)
    feats = encode_glue(ex, tok, max_length=64)
    assert feats[0]["input_ids"] == tok.encode_pair(ex[0].text_a, ex[0].text_b).input_ids
    assert feats[0]["token_type_ids"] == tok.encode_pair(ex[0].text_a, ex[0].text_b).token_type_ids
    assert [f["labels"] for f in feats] == [e.label for e in ex]
    # longest-first truncation: the longer text loses tokens until the pair fits
    a = tok.encode(ex[0].text_a, add_special_tokens=False)
    b = tok.encode(ex[0].text_b, add_special_tokens=False)
    short = encode_glue(ex[:1], tok, max_length=tok.num_special_tokens_pair + 4)[0]
    assert len(short["input_ids"]) == tok.num_special_tokens_pair + 4
    ka = min(len(a), max(2, 4 - len(b)))  # reference: keep 2 + 2 unless one text is shorter
    kb = 4 - ka
    assert short["input_ids"] == tok.build_inputs(a[:ka], b[:kb]).input_ids
    single = encode_glue(load_glue("sst2", "train", glue_dir), tok, max_length=3)
    assert all(len(f["input_ids"]) == 3 for f in single)
    batch = GlueCollator(tok.pad_id)(feats)
    B, L = batch["input_ids"].shape
    lengths = [len(f["input_ids"]) for f in feats]
    assert (B, L) == (2, max(lengths))
    assert batch["padding_mask"].dtype == torch.bool
    assert batch["padding_mask"].sum(1).tolist() == [L - n for n in lengths]  # True = pad
    assert (batch["input_ids"][batch["padding_mask"]] == tok.pad_id).all()
    assert batch["labels"].dtype == torch.long
    sts = GlueCollator(tok.pad_id, regression=True)(encode_glue(load_glue("stsb", "train", glue_dir), tok))
    assert sts["labels"].dtype == torch.float32 and sts["labels"].tolist() == pytest.approx([5.0, 0.4])


def test_metrics_against_sklearn_and_scipy():
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    p = np.where(rng.random(200) < 0.7, y, 1 - y)
    m = glue_metrics("cola", p, y)
    assert m["matthews"] == pytest.approx(100 * sklearn_metrics.matthews_corrcoef(y, p))
    assert m["score"] == m["matthews"]
    m = glue_metrics("mrpc", p, y)
    acc, f1 = 100 * sklearn_metrics.accuracy_score(y, p), 100 * sklearn_metrics.f1_score(y, p)
    assert (m["accuracy"], m["f1"]) == (pytest.approx(acc), pytest.approx(f1))
    assert m["score"] == pytest.approx((acc + f1) / 2)
    assert glue_metrics("qqp", p, y)["score"] == pytest.approx((acc + f1) / 2)
    y3 = rng.integers(0, 3, 100)
    p3 = np.where(rng.random(100) < 0.5, y3, rng.integers(0, 3, 100))
    assert glue_metrics("mnli", p3, y3)["accuracy"] == pytest.approx(100 * sklearn_metrics.accuracy_score(y3, p3))
    gold = np.round(rng.random(150) * 5, 1)  # STS-B scores with ties
    pred = np.round(gold + rng.normal(0, 1, 150), 1)
    m = glue_metrics("stsb", pred, gold)
    assert m["pearson"] == pytest.approx(100 * stats.pearsonr(pred, gold)[0])
    assert m["spearman"] == pytest.approx(100 * stats.spearmanr(pred, gold)[0])
    assert m["score"] == pytest.approx((m["pearson"] + m["spearman"]) / 2)


def test_metrics_hand_worked():
    # TP=2, TN=1, FP=1, FN=0: MCC = (2*1 - 1*0) / sqrt(3*2*2*1) = 2/sqrt(12); F1 = 4/5; accuracy 3/4
    p, y = [1, 1, 1, 0], [1, 1, 0, 0]
    assert glue_metrics("cola", p, y)["matthews"] == pytest.approx(100 * 2 / math.sqrt(12))
    assert glue_metrics("mrpc", p, y) == pytest.approx({"accuracy": 75.0, "f1": 80.0, "score": 77.5})
    assert glue_metrics("cola", [1, 1], [1, 0])["matthews"] == 0.0  # undefined -> 0, as sklearn
    assert glue_metrics("stsb", [1, 2, 3], [2, 4, 6])["pearson"] == pytest.approx(100.0)
    with pytest.raises(ValueError):
        glue_metrics("rte", [1, 0], [1])


def test_glue_average_as_in_the_data2vec_paper():
    # data2vec paper, Table 2, RoBERTa baseline row: MNLI 84.1/83.9, QNLI 90.4, RTE 69.3, MRPC 89.0,
    # QQP 89.3, STS-B 88.9, CoLA 56.8, SST-2 92.3 -> Avg. 82.5 (MNLI counted once, WNLI not counted)
    row = {"mnli": 84.1, "mnli_mm": 83.9, "qnli": 90.4, "rte": 69.3, "mrpc": 89.0, "qqp": 89.3, "stsb": 88.9,
           "cola": 56.8, "sst2": 92.3, "wnli": 10.0}
    assert round(glue_average(row), 1) == 82.5
    assert glue_average({**row, "mnli": {"accuracy": 84.1, "score": 84.1}}) == pytest.approx(glue_average(row))
    with pytest.raises(ValueError, match="missing"):
        glue_average({"rte": 70.0})
    assert glue_average({"rte": 70.0, "cola": 50.0}, require_all=False) == 60.0
