"""GLUE: every task's official TSV layout and quirks, malformed rows, encoding/batching, metrics on worked examples."""

import math

import numpy as np
import pytest
import torch

from tasks.text.glue import GLUE_TASKS, GlueCollator, encode_glue, is_regression, load_glue, num_labels
from tasks.text.glue_metrics import (
    accuracy,
    f1_binary,
    glue_average,
    glue_metrics,
    matthews_corrcoef,
    pearson,
    spearman,
)
from tasks.text.tokenizer import train_tokenizer

T = "\t"


def _write(path, rows, bom=False):
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "\n".join(T.join(r) for r in rows) + "\n"
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"))


def _mnli_row(i, s1, s2, labels):
    parses = ["( ( b ) )", "( c )", "(ROOT (S b))", "(ROOT (S c))"]
    return [str(i), "31193", f"{i}n", "government"] + parses + [s1, s2] + labels


@pytest.fixture(scope="module")
def glue_dir(tmp_path_factory):
    g = tmp_path_factory.mktemp("glue")
    # CoLA: train/dev without header (source, label, original mark, sentence); test with a header
    _write(g / "CoLA/train.tsv", [["gj04", "1", "", "Our friends won't buy this."],
                                  ["gj04", "0", "*", "He \"sleep\" the bed."], ["cj99", "1", "", "Bill left."]])
    _write(g / "CoLA/dev.tsv", [["gj04", "1", "", "The sailors rode."], ["w_80", "0", "*", "John bought for himself."]])
    _write(g / "CoLA/test.tsv", [["index", "sentence"], ["0", "Bill whistled."]])
    _write(g / "SST-2/train.tsv", [["sentence", "label"], ["hide new secretions ", "0"], ["a charming journey ", "1"]])
    _write(g / "SST-2/dev.tsv", [["sentence", "label"], ["it 's a charming journey . ", "1"]])
    _write(g / "SST-2/test.tsv", [["index", "sentence"], ["0", "uneasy mishmash ."], ["1", "fine ."]])
    # MRPC: byte-order mark, lone double quotes inside the texts
    mrpc_head = ["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"]
    _write(g / "MRPC/train.tsv", [mrpc_head,
                                  ["1", "702876", "702977", 'He called " the witness " .', 'As only " the witness ,'],
                                  ["0", "2108705", "2108831", "Yucaipa owned Dominick 's .", "Yucaipa bought it ."]],
           bom=True)
    _write(g / "MRPC/dev.tsv", [mrpc_head, ["1", "1355540", "1355592", 'He said " no .', "It fits ."]], bom=True)
    _write(g / "MRPC/test.tsv", [["index", "#1 ID", "#2 ID", "#1 String", "#2 String"],
                                 ["0", "1", "2", "PCCW 's chief", "Current chief"]], bom=True)
    sts_head = ["index", "genre", "filename", "year", "old_index", "source1", "source2", "sentence1", "sentence2"]
    _write(g / "STS-B/train.tsv", [sts_head + ["score"],
                                   ["0", "main-captions", "MSRvid", "2012test", "0001", "none", "none",
                                    "A plane is taking off.", "An air plane is taking off.", "5.000"],
                                   ["1", "main-news", "x", "2012", "0002", "none", "none",
                                    "A man.", "A dog.", "0.400"]])
    _write(g / "STS-B/dev.tsv", [sts_head + ["score"],
                                 ["0", "main-captions", "MSRvid", "2012test", "0000", "none", "none",
                                  "A man dances.", "A man wearing a hat dances.", "3.800"]])
    _write(g / "STS-B/test.tsv", [sts_head, ["0", "main-captions", "MSRvid", "2012test", "0024", "none", "none",
                                             "A girl.", "A girl hair."]])
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
    _write(g / "MNLI/train.tsv", [base + ["label1", "gold_label"],
                                  _mnli_row(0, "Conceptually cream.", "Product and geography.", ["neutral", "neutral"]),
                                  _mnli_row(1, "You know \" during.", "You lose the things.",
                                            ["entailment", "entailment"])])
    dev_head = base + ["label1", "label2", "label3", "label4", "label5", "gold_label"]
    dev_labels = ["neutral", "contradiction", "contradiction", "contradiction", "neutral", "contradiction"]
    _write(g / "MNLI/dev_matched.tsv", [dev_head, _mnli_row(0, "The new rights.", "Everyone likes.", dev_labels)])
    _write(g / "MNLI/dev_mismatched.tsv", [dev_head,
                                           _mnli_row(0, "Your contribution.", "Help.", ["entailment"] * 6),
                                           _mnli_row(1, "Hot.", "Cold.", ["neutral"] * 6)])
    _write(g / "MNLI/test_matched.tsv", [base, _mnli_row(0, "Hello.", "Hi.", [])])
    _write(g / "MNLI/test_mismatched.tsv", [base, _mnli_row(0, "Hey.", "Yo.", [])])
    qnli_head = ["index", "question", "sentence", "label"]
    _write(g / "QNLI/train.tsv", [qnli_head, ["0", "When?", "In 1990.", "entailment"],
                                  ["1", "Who?", "Nobody knows the day.", "not_entailment"]])
    _write(g / "QNLI/dev.tsv", [qnli_head, ["0", "What came?", "The law came.", "entailment"]])
    _write(g / "QNLI/test.tsv", [qnli_head[:3], ["0", "What?", "That."]])
    for task, labels in (("RTE", ("not_entailment", "entailment")), ("WNLI", ("1", "0"))):
        head = ["index", "sentence1", "sentence2", "label"]
        _write(g / f"{task}/train.tsv", [head, ["0", "No weapons found.", "Weapons found.", labels[0]],
                                         ["1", "A b.", "B.", labels[1]]])
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
            if (task, split) == ("qqp", "train"):  # the broken question: two short rows, lines 3 and 4
                with pytest.warns(UserWarning, match=r"skipped 2 malformed row.*other than 6 \(first at line 3\)"):
                    examples = load_glue(task, split, glue_dir)
            else:
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
    assert [(e.text_a, e.label) for e in cola] == [("Our friends won't buy this.", 1), ('He "sleep" the bed.', 0),
                                                   ("Bill left.", 1)]
    mrpc = load_glue("mrpc", "train", glue_dir)  # BOM stripped, quotes kept as they are
    assert (mrpc[0].label, mrpc[0].text_a, mrpc[0].text_b) == (1, 'He called " the witness " .',
                                                              'As only " the witness ,')
    with pytest.warns(UserWarning, match="skipped 2"):
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
    with pytest.raises(ValueError, match=r"dev\.tsv line 2: label 'maybe' is not one of .*fix: correct or delete"):
        load_glue("rte", "dev", tmp_path)


def test_malformed_rows_are_counted_and_reported(tmp_path):
    head = "index\tsentence1\tsentence2\tlabel\n"
    # line 3: a field missing; line 5: an extra field (a tab inside a text); line 6: blank (ignored)
    (tmp_path / "RTE").mkdir()
    (tmp_path / "RTE" / "train.tsv").write_text(head + "0\ta\tb\tentailment\n1\ta\tentailment\n"
                                                "2\tc\td\tnot_entailment\n3\te\tf\tg\tentailment\n\n")
    with pytest.warns(UserWarning) as caught:
        examples = load_glue("rte", "train", tmp_path)
    assert [e.idx for e in examples] == [0, 2]
    assert len(caught) == 1
    message = str(caught[0].message)
    assert str(tmp_path / "RTE" / "train.tsv") in message
    assert "skipped 2 malformed row(s)" in message and "other than 4" in message and "first at line 3" in message
    assert "kept 2" in message
    # header-less CoLA: 4 fields per row
    (tmp_path / "CoLA").mkdir()
    (tmp_path / "CoLA" / "dev.tsv").write_text("gj04\t1\t\tBill left.\ngj04\t0\t*\tA\ttab.\n")
    with pytest.warns(UserWarning, match="skipped 1 .*other than 4 .*line 2"):
        assert [e.text_a for e in load_glue("cola", "dev", tmp_path)] == ["Bill left."]
    # no well-formed row at all (e.g. another task's file): an error, not an empty data set
    (tmp_path / "RTE" / "dev.tsv").write_text(head + "0\tonly two\n1\tfields\n")
    with pytest.raises(ValueError, match=r"dev\.tsv: no row has the 4 tab-separated fields .*line 2.*fix:"):
        load_glue("rte", "dev", tmp_path)


@pytest.mark.parametrize("score", ["high", "nan", ""])
def test_stsb_score_that_is_not_a_number(tmp_path, score):
    head = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
    row = "0\tmain-news\tx\t2012\t0001\tnone\tnone\tA man.\tA dog.\t"
    (tmp_path / "STS-B").mkdir()
    (tmp_path / "STS-B" / "dev.tsv").write_text(head + row + "1.5\n" + row + score + "\n")
    with pytest.raises(ValueError, match=rf"dev\.tsv line 3: score '{score}' is not a number; fix:"):
        load_glue("stsb", "dev", tmp_path)


def test_unreadable_tsv_names_the_file(tmp_path):
    (tmp_path / "SST-2").mkdir()
    (tmp_path / "SST-2" / "train.tsv").write_bytes(b"sentence\tlabel\ncaf\xe9 .\t1\n")  # latin-1, not UTF-8
    with pytest.raises(ValueError, match=r"SST-2[/\\]train\.tsv: not UTF-8 text.*fix:"):
        load_glue("sst2", "train", tmp_path)


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


def _average_ranks(x):
    # reference: rank_i = #(x_j < x_i) + (#(x_j == x_i) + 1) / 2, 1-based; ties share the mean of their ranks
    x = np.asarray(x, dtype=np.float64)
    return np.array([(x < v).sum() + ((x == v).sum() + 1) / 2 for v in x])


def _pearson_reference(x, y):
    dx, dy = np.asarray(x, float) - np.mean(x), np.asarray(y, float) - np.mean(y)
    return (dx * dy).sum() / math.sqrt((dx**2).sum() * (dy**2).sum())


def test_classification_metrics_worked_examples():
    # confusion matrix TP=3, FP=1, FN=1, TN=3: accuracy 6/8; F1 = 2*3 / (2*3 + 1 + 1) = 3/4;
    # MCC = (3*3 - 1*1) / sqrt((3+1)(3+1)(3+1)(3+1)) = 8/16
    p, y = [1, 1, 1, 0, 0, 1, 0, 0], [1, 0, 1, 0, 1, 1, 0, 0]
    assert accuracy(p, y) == 0.75 and f1_binary(p, y) == pytest.approx(0.75)
    assert matthews_corrcoef(p, y) == pytest.approx(0.5)
    assert glue_metrics("mrpc", p, y) == pytest.approx({"accuracy": 75.0, "f1": 75.0, "score": 75.0})
    assert glue_metrics("qqp", p, y)["score"] == pytest.approx(75.0)
    # TP=2, TN=1, FP=1, FN=0: MCC = (2*1 - 1*0) / sqrt(3*2*2*1) = 2/sqrt(12); F1 = 4/5; accuracy 3/4
    p, y = [1, 1, 1, 0], [1, 1, 0, 0]
    assert glue_metrics("cola", p, y) == pytest.approx({"matthews": 100 * 2 / math.sqrt(12),
                                                        "score": 100 * 2 / math.sqrt(12)})
    assert glue_metrics("mrpc", p, y) == pytest.approx({"accuracy": 75.0, "f1": 80.0, "score": 77.5})
    assert glue_metrics("mnli", [0, 1, 2, 2, 1], [0, 1, 2, 1, 0]) == pytest.approx({"accuracy": 60.0, "score": 60.0})


def test_matthews_three_classes_for_the_diagnostic_set():
    # multi-class MCC = (c s - sum_k p_k t_k) / sqrt((s^2 - sum_k p_k^2)(s^2 - sum_k t_k^2)), c = correct, s = total,
    # p_k / t_k = predicted / true count of class k. Here c=4, s=6, p=(2,3,1), t=(2,2,2):
    # (24 - 12) / sqrt((36 - 14)(36 - 12)) = 12 / sqrt(528)  (class 1 against the rest would give 6/sqrt(72))
    p, y = [0, 1, 1, 1, 2, 0], [0, 0, 1, 1, 2, 2]
    assert matthews_corrcoef(p, y) == pytest.approx(12 / math.sqrt(528))
    assert glue_metrics("ax", p, y)["matthews"] == pytest.approx(100 * 12 / math.sqrt(528))


def test_correlations_worked_examples_with_ties():
    # x and y are ranks already: mean 2.5 each, dx = (-1.5, -.5, .5, 1.5), dy = (-.5, -1.5, 1.5, .5):
    # sum dx dy = 3, sum dx^2 = sum dy^2 = 5 -> r = 3/5, and Spearman equals it
    assert pearson([1, 2, 3, 4], [2, 1, 4, 3]) == pytest.approx(0.6)
    assert spearman([1, 2, 3, 4], [2, 1, 4, 3]) == pytest.approx(0.6)
    # a tie and a non-linear scale: ranks of x = (1, 2.5, 2.5, 4), of y = (1, 3, 2, 4); dx = (-1.5, 0, 0, 1.5),
    # dy = (-1.5, .5, -.5, 1.5): rho = 4.5 / sqrt(4.5 * 5) = sqrt(0.9). (Ranking the tie 2, 3 would give 0.8.)
    x, y = [10, 20, 20, 1000], [1, 3, 2, 4]
    assert spearman(x, y) == pytest.approx(math.sqrt(0.9))
    # ties on both sides: ranks (1.5, 1.5, 3, 4) and (1, 2.5, 2.5, 4): dx = (-1, -1, .5, 1.5), dy = (-1.5, 0, 0, 1.5),
    # rho = 3.75 / sqrt(4.5 * 4.5) = 5/6
    assert spearman([1, 1, 2, 3], [1, 2, 2, 3]) == pytest.approx(5 / 6)
    m = glue_metrics("stsb", x, y)  # Pearson of the raw x: mean 262.5, the outlier dominates
    r = _pearson_reference(x, y)
    assert m == pytest.approx({"pearson": 100 * r, "spearman": 100 * math.sqrt(0.9),
                               "score": 50 * (r + math.sqrt(0.9))})
    assert glue_metrics("stsb", [1, 2, 3], [2, 4, 6])["pearson"] == pytest.approx(100.0)
    assert glue_metrics("stsb", [3, 2, 1], [2, 4, 6])["spearman"] == pytest.approx(-100.0)


def test_metrics_on_random_data_against_references_written_here():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    p = np.where(rng.random(200) < 0.7, y, 1 - y)
    tp, tn = np.sum((p == 1) & (y == 1)), np.sum((p == 0) & (y == 0))
    fp, fn = np.sum((p == 1) & (y == 0)), np.sum((p == 0) & (y == 1))
    mcc = (tp * tn - fp * fn) / math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    assert matthews_corrcoef(p, y) == pytest.approx(mcc)
    assert f1_binary(p, y) == pytest.approx(2 * tp / (2 * tp + fp + fn))
    assert accuracy(p, y) == pytest.approx((tp + tn) / 200)
    gold = np.round(rng.random(150) * 5, 1)  # STS-B-like scores with many ties
    pred = np.round(gold + rng.normal(0, 1, 150), 1)
    assert pearson(pred, gold) == pytest.approx(_pearson_reference(pred, gold))
    assert spearman(pred, gold) == pytest.approx(_pearson_reference(_average_ranks(pred), _average_ranks(gold)))


def test_metrics_degenerate_inputs_and_types():
    # a constant classifier: MCC's denominator is 0 -> 0 (as sklearn and the GLUE scorer); F1 with TP=FP=FN=0 -> 0
    assert glue_metrics("cola", [1, 1], [1, 0])["matthews"] == 0.0
    assert glue_metrics("cola", [0, 1], [1, 1])["matthews"] == 0.0  # constant labels too
    assert f1_binary([0, 0], [0, 0]) == 0.0 and accuracy([0, 0], [0, 0]) == 1.0
    assert f1_binary([1, 1, 1, 1], [1, 0, 0, 1]) == pytest.approx(2 / 3)  # 2*2 / (2*2 + 2 + 0)
    # a constant regressor: Pearson and Spearman undefined (0/0) -> 0, never NaN
    m = glue_metrics("stsb", [2.5, 2.5, 2.5], [1.0, 2.0, 4.0])
    assert m == {"pearson": 0.0, "spearman": 0.0, "score": 0.0}
    assert pearson([1.0, 2.0], [3.0, 3.0]) == 0.0 and spearman([1.0], [2.0]) == 0.0
    values = [accuracy([1, 0], [1, 1]), f1_binary([1, 0], [1, 1]), matthews_corrcoef([1, 0], [1, 0]),
              pearson([1, 2, 4], [1, 3, 2]), spearman([1, 2, 4], [1, 3, 2])]
    assert all(type(v) is float for v in values)  # plain Python floats (json.dumps, comparisons)
    assert all(type(v) is float for v in glue_metrics("stsb", [1, 2, 4], [1, 3, 2]).values())
    with pytest.raises(ValueError):
        glue_metrics("rte", [1, 0], [1])
    with pytest.raises(ValueError, match="no examples"):
        glue_metrics("rte", [], [])


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
