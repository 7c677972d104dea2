"""`data2vec compare --modality text` (data2vec/study/text.py, its flags in data2vec/cli/compare_text.py).

References are written here: the validation split's sizes and disjointness counted by hand, the majority-class
floor recomputed from the TSV files the test writes, the calibrated step count recomputed from calibration.json.
The end-to-end run (a corpus and a GLUE-format SST-2/STS-B folder written by the test, a 2 x 32 encoder, seconds
of pretraining per method) checks every results file, that a rerun recomputes nothing and that the table lists
every (arm, protocol). No test reads ../shared/data.
"""

from __future__ import annotations

import dataclasses
import json
import random

import numpy as np
import pytest

from data2vec.cli.compare_text import parse_epochs
from data2vec.study.glue import carve_validation, write_synthetic_glue

WORDS = ("alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi rho sigma tau "
         "upsilon phi chi psi omega good bad fine poor").split()


def write_corpus(path, lines=400, seed=0):
    rng = random.Random(seed)
    path.write_text("\n".join(" ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 12))) for _ in range(lines))
                    + "\n")
    return path


def write_glue(root, seed=0):
    """SST-2 (train 80: 56 positive / 24 negative; dev 30: 12 positive) and STS-B (train 60, dev 20)."""
    rng = random.Random(seed)
    (root / "SST-2").mkdir(parents=True)
    for split, labels in (("train", [1] * 56 + [0] * 24), ("dev", [1] * 12 + [0] * 18)):
        rng.shuffle(labels)
        rows = ["sentence\tlabel"] + [f"{'good fine' if y else 'bad poor'} {rng.choice(WORDS)} {rng.choice(WORDS)}\t{y}"
                                      for y in labels]
        (root / "SST-2" / f"{split}.tsv").write_text("\n".join(rows) + "\n")
    (root / "STS-B").mkdir()
    for split, n in (("train", 60), ("dev", 20)):
        rows = ["index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore"]
        for i in range(n):
            a, b = " ".join(rng.sample(WORDS, 5)), " ".join(rng.sample(WORDS, 5))
            rows.append(f"{i}\tmain\tx\t2012\t{i}\tnone\tnone\t{a}\t{b}\t{rng.uniform(0, 5):.3f}")
        (root / "STS-B" / f"{split}.tsv").write_text("\n".join(rows) + "\n")
    return root


# ---- pieces ----------------------------------------------------------------------------------------------------


def test_carve_validation_classification_is_stratified_and_regression_seeded():
    labels = np.array([0] * 70 + [1] * 30)
    fit, val = carve_validation(labels, regression=False, fraction=0.1, max_examples=1000)
    assert np.bincount(labels[val]).tolist() == [7, 3]  # 10 % of every class
    assert len(np.intersect1d(fit, val)) == 0 and len(fit) + len(val) == 100
    scores = np.linspace(0, 5, 57)
    fit, val = carve_validation(scores, regression=True, fraction=0.1, max_examples=1000)
    assert len(val) == 6 and len(np.intersect1d(fit, val)) == 0 and len(fit) == 51  # round(5.7) = 6
    assert np.array_equal(val, carve_validation(scores, True, 0.1, 1000)[1])  # the same split for every arm
    assert len(carve_validation(scores, True, 0.5, 4)[1]) == 4  # capped


def test_parse_epochs_defaults_and_overrides():
    epochs = parse_epochs("sst2=1, stsb=4")
    assert epochs["sst2"] == 1 and epochs["stsb"] == 4 and epochs["rte"] == 3  # rte: the default
    from data2vec.cli.errors import CliError

    for bad in ("sst2", "sst2=0", "sst2=x"):
        with pytest.raises(CliError, match="TASK=N"):
            parse_epochs(bad)


def test_synthetic_glue_loads_as_official_files(tmp_path):
    from tasks.text.glue import load_glue

    root = write_synthetic_glue(tmp_path / "glue", train=40, dev=10)
    sst = load_glue("sst2", "train", root)
    assert len(sst) == 40 and {ex.label for ex in sst} <= {0, 1}
    sts = load_glue("stsb", "dev", root)
    assert len(sts) == 10 and all(0 <= ex.label <= 5 for ex in sts)
    assert (root / "heldout.txt").read_text().strip()


def test_sst2_subset_is_seeded_and_the_same_for_every_call(tmp_path):
    from data2vec.study.glue import load_task
    from data2vec.study.text_config import TextCompareConfig
    from tasks.text.tokenizer import train_tokenizer

    glue = write_glue(tmp_path / "glue")
    tok = train_tokenizer([str(write_corpus(tmp_path / "c.txt"))], kind="bpe", vocab_size=300)
    cfg = TextCompareConfig(data="x", glue=str(glue), out=str(tmp_path), runs=str(tmp_path), sst2_train_examples=50)
    a, b = load_task(cfg, "sst2", tok), load_task(cfg, "sst2", tok)
    assert a.train_examples == 50 and len(a.fit) + len(a.val) == 50 and len(a.dev) == 30
    assert [f["input_ids"] for f in a.fit.features] == [f["input_ids"] for f in b.fit.features]


# ---- end to end ------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_compare_text_runs_every_arm_writes_results_and_resumes(tmp_path, capsys):
    """Also the SQuAD / XQuAD protocol (--squad, --xquad): a 6-article SQuAD file and XQuAD en/de written by
    tests/test_compare_squad.py's helpers."""
    from test_compare_squad import XQUAD_IDS, XQUAD_PARAGRAPHS, write_squad, write_xquad

    from data2vec.cli import main
    from data2vec.study.records import result_path
    from data2vec.study.text import text_protocols as protocols
    from data2vec.study.text_config import TextCompareConfig
    from tasks.text.glue import load_glue

    corpus, glue = write_corpus(tmp_path / "corpus.txt"), write_glue(tmp_path / "glue")
    squad, xquad = write_squad(tmp_path / "squad.json"), write_xquad(tmp_path / "xquad")
    heldout = write_corpus(tmp_path / "heldout.txt", lines=40, seed=1)
    out, runs = tmp_path / "out", tmp_path / "runs"
    argv = ["compare", "--modality", "text", "--data", str(corpus), "--glue", str(glue), "--tasks", "sst2,stsb",
            "--methods", "bert,data2vec,data2vec2", "--budget-minutes", "0.03", "--seeds", "1", "--preset", "tiny",
            "--dim", "32", "--depth", "2", "--heads", "2", "--batch-size", "8", "--seq-len", "32",
            "--vocab-size", "300", "--task-epochs", "sst2=2,stsb=2", "--heldout", str(heldout), "--out", str(out),
            "--runs", str(runs), "--threads", "1", "--squad", str(squad), "--xquad", str(xquad),
            "--xquad-languages", "en,de", "--squad-epochs", "2"]
    assert main(argv) == 0
    log = capsys.readouterr().out
    # every method's cost is measured back to back before the first pretraining run, under the same conditions
    assert max(log.index(f"calibrating {m}:") for m in ("bert", "data2vec", "data2vec2")) < log.index(
        "pretraining bert seed 1")
    cfg = TextCompareConfig(data=str(corpus), glue=str(glue), out=str(out), runs=str(runs), tasks=("sst2", "stsb"),
                            heldout=str(heldout), budget_minutes=0.03, squad=str(squad), xquad=str(xquad),
                            xquad_languages=("en", "de"))
    files = {}
    for arm in cfg.arms:
        for seed in (0,) if arm == "majority" else (1,):
            for protocol in protocols(cfg, arm):
                path = result_path(cfg, arm, seed, protocol)
                rec = json.loads(path.read_text())
                assert rec["arm"] == arm and rec["protocol"] == protocol and np.isfinite(rec["score"])
                assert rec["git_commit"] and rec["machine"]["torch"]
                assert rec["command"].startswith("data2vec compare --modality text --data ")  # the argv given to main
                files[path] = path.stat().st_mtime_ns
    assert "mlm-heldout" in protocols(cfg, "bert") and "mlm-heldout" not in protocols(cfg, "data2vec")
    mlm = json.loads(result_path(cfg, "bert", 1, "mlm-heldout").read_text())
    assert 0 <= mlm["score"] <= 100 and mlm["details"]["predicted_tokens"] > 0
    assert mlm["score"] == pytest.approx(100 * mlm["details"]["correct"] / mlm["details"]["predicted_tokens"])

    # the majority floor by hand: 56 of 80 training sentences are positive, 12 of 30 dev sentences are
    majority = json.loads(result_path(cfg, "majority", 0, "sst2").read_text())
    dev = [ex.label for ex in load_glue("sst2", "dev", glue)]
    assert majority["details"]["prediction"] == 1 and majority["score"] == pytest.approx(100 * dev.count(1) / len(dev))
    assert json.loads(result_path(cfg, "majority", 0, "stsb").read_text())["score"] == 0.0  # a constant: Pearson 0

    # equal budget: each run took the calibrated number of updates (bert has no anisotropy stop to cut it short)
    calib = json.loads((out / "calibration.json").read_text())
    assert all("load_average" in calib[m] for m in ("bert", "data2vec", "data2vec2"))
    for method in ("bert", "data2vec", "data2vec2"):
        pre = json.loads(result_path(cfg, method, 1, "pretrain").read_text())
        assert pre["steps"] == calib[method]["steps"] == max(10, int(0.03 * 60 // calib[method]["s_per_update"]))
        lines = (runs / f"{method}-seed1" / "metrics.jsonl").read_text().splitlines()
        if pre["stopped_by_health_guard"] is None:
            assert len(lines) == pre["steps"]
        else:
            assert method != "bert" and len(lines) < pre["steps"]
        assert pre["health_curve"] and "anisotropy" in pre["health_curve"][0]
    tuned = json.loads(result_path(cfg, "data2vec", 1, "stsb").read_text())
    assert tuned["metric"] == "pearson" and tuned["details"]["train_examples"] + tuned["details"][
        "validation_examples"] == 60 and tuned["details"]["dev_examples"] == 20
    assert tuned["score"] == tuned["details"]["dev_metrics"]["pearson"]
    # the optimistic number beside it: the best epoch on dev itself, from the per-epoch dev scores of the history
    assert tuned["details"]["best_on_dev"] == max(h["test_pearson"] for h in tuned["details"]["history"])
    assert tuned["details"]["best_on_dev"] >= tuned["score"]
    summary = json.loads((out / "summary.json").read_text())
    assert {(r["arm"], r["protocol"]) for r in summary["rows"]} == {
        (arm, p) for arm in cfg.arms for p in protocols(cfg, arm)}
    # SQuAD: every arm but the majority class, EM <= F1 in [0, 100]; the counts by hand from the file's construction
    # (6 articles x 2 paragraphs, paragraph j holds j + 1 questions; 3 XQuAD paragraphs, XQUAD_PARAGRAPHS)
    for arm in ("random", "bert", "data2vec", "data2vec2"):
        held = json.loads(result_path(cfg, arm, 1, "squad-heldout").read_text())
        d = held["details"]
        assert held["metric"] == "f1" and held["score"] == d["f1"] and 0 <= d["exact_match"] <= d["f1"] <= 100
        assert 1 <= d["selected_epoch"] <= 2 and d["epochs"] == 2 and d["max_length"] == 128  # tiny: 128 positions
        for lang in ("en", "de"):
            x = json.loads(result_path(cfg, arm, 1, f"xquad-{lang}").read_text())
            assert 0 <= x["details"]["exact_match"] <= x["score"] == x["details"]["f1"] <= 100
            assert x["details"]["questions"] == len(XQUAD_IDS)
    c = d["counts"]
    train = set(c["fit_titles"]) | set(c["validation_titles"])
    assert len(train) == 3 and train.isdisjoint(c["eval_titles"]) and len(c["validation_titles"]) == 1
    removed = {k: n for k, n in XQUAD_PARAGRAPHS.items() if k[0] in train}
    assert removed  # the split (SPLIT_SEED) puts XQuAD paragraphs in the training half: the removal is exercised
    assert c["xquad_paragraphs_removed_from_train"] == len(removed) and c["xquad_questions"] == 3
    assert c["train_half"] == {"articles": 3, "paragraphs": 6 - len(removed), "questions": 9 - sum(removed.values())}
    assert c["eval"] == {"articles": 3, "paragraphs": 6, "questions": 9}
    assert c["fit"]["questions"] + c["validation"]["questions"] == c["train_half"]["questions"]
    assert "squad-heldout" in (out / "table.md").read_text() and "xquad-de" in (out / "table.md").read_text()

    data = json.loads((out / "data.json").read_text())
    assert data["words"] == sum(len(line.split()) for line in corpus.read_text().splitlines())

    # a language lost (or added later) is scored from the kept checkpoint of the selected epoch, nothing else redone
    xquad_de = result_path(cfg, "random", 1, "xquad-de")
    de_score = json.loads(xquad_de.read_text())["score"]
    xquad_de.unlink()
    assert main(argv) == 0  # a rerun finds every result and recomputes nothing
    assert json.loads(xquad_de.read_text())["score"] == pytest.approx(de_score)  # the same weights
    assert all(path.stat().st_mtime_ns == mtime for path, mtime in files.items() if path != xquad_de)
    capsys.readouterr()
    assert main(argv + ["--squad-max-questions", "4"]) == 2  # another split in the same --out is refused
    assert "another SQuAD split" in capsys.readouterr().err
    capsys.readouterr()
    assert main([a if a != "8" else "4" for a in argv]) == 2  # another batch in the same --out is refused
    assert "holds a text comparison with batch_size=8, this one has 4" in capsys.readouterr().err
    # a task's epochs cannot change once it has results; adding a task with its own epochs is fine
    assert main([a if a != "sst2=2,stsb=2" else "sst2=3,stsb=2" for a in argv]) == 2
    assert "task_epochs[sst2]=2, this one has 3" in capsys.readouterr().err
    import dataclasses

    from data2vec.study.errors import StudyError as CliError
    from data2vec.study.records import check_same_study as check_same_text_study

    stored = json.loads((out / "config.json").read_text())
    same = TextCompareConfig(**{f.name: tuple(stored[f.name]) if isinstance(stored[f.name], list) else stored[f.name]
                                for f in dataclasses.fields(TextCompareConfig)})
    check_same_text_study(same)  # the stored study itself
    check_same_text_study(dataclasses.replace(same, tasks=("sst2", "stsb", "rte"),
                                              task_epochs={**same.task_epochs, "rte": 7}))  # a task added
    with pytest.raises(CliError, match="holds a text comparison with batch_size"):  # refused before calibration
        check_same_text_study(dataclasses.replace(same, batch_size=same.batch_size + 1))

    # a fresh clone of a study in progress: the results files without the run folders. A missing evaluation of a
    # pretrained arm is computed by pretraining it again from its seed; on one machine it ends where it ended
    import shutil

    shutil.rmtree(runs / "data2vec-seed1")
    first = json.loads(result_path(cfg, "data2vec", 1, "pretrain").read_text())
    result_path(cfg, "data2vec", 1, "sst2").unlink()
    capsys.readouterr()
    assert main(argv) == 0
    assert "pretraining again from the same seed" in capsys.readouterr().out
    again = json.loads(result_path(cfg, "data2vec", 1, "pretrain").read_text())
    assert again["previous"]["final_loss"] == first["final_loss"] and again["repeats_previous"] is True
    assert result_path(cfg, "data2vec", 1, "sst2").is_file()


@pytest.mark.parametrize("extra, message", [
    (["--methods", "dino"], "not a text pretraining method"),
    (["--methods", "nope"], "not a text pretraining method"),
    (["--tasks", "sst2,rte"], "drop rte from --tasks"),
    (["--tasks", "nope"], "unknown GLUE task"),
    (["--task-epochs", "sst2=0"], "TASK=N"),
    (["--heldout", "/no/such/file.txt"], "no such file"),
    (["--set", "lr=1e-3"], "not METHOD.KEY=VALUE"),
    (["--set", "dino.lr=1e-3"], "not among --methods"),
    (["--set", "data2vec.no_such_field=1"], "no_such_field"),
    (["--set", "bert.lr=-1"], "lr must be a number > 0"),
])
def test_compare_text_bad_input_is_one_clear_line(tmp_path, extra, message, capsys):
    from data2vec.cli import main

    corpus, glue = write_corpus(tmp_path / "corpus.txt"), write_glue(tmp_path / "glue")
    argv = ["compare", "--modality", "text", "--data", str(corpus), "--glue", str(glue), "--out", str(tmp_path / "o"),
            *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "o" / "calibration.json").exists()  # refused before any work


def test_set_changes_one_methods_recipe_and_its_calibration_key(tmp_path, capsys):
    from data2vec.cli import main
    from data2vec.study.budget import recipe_of as recipe_for
    from data2vec.study.text import build_arm as build_text_arm
    from data2vec.study.text import calibration_key
    from data2vec.study.text_config import TEXT_STUDY_RECIPES as RECIPES
    from data2vec.study.text_config import TextCompareConfig
    from tasks.text.tokenizer import train_tokenizer

    sets = {"data2vec2": {"num_masks": 3, "lr": 7e-4}}
    cfg = TextCompareConfig(data="x", glue="x", out=str(tmp_path / "o"), runs=str(tmp_path / "r"), preset="tiny",
                            dim=32, depth=2, heads=2, recipe_sets=sets)
    recipe = recipe_for(cfg, "data2vec2")  # the study's recipe with the tuning change on top
    assert recipe.overrides == {**RECIPES["data2vec2"].overrides, "num_masks": 3} and recipe.lr == 7e-4
    assert recipe_for(cfg, "bert") == RECIPES["bert"]  # the other arms keep theirs
    tok = train_tokenizer([str(write_corpus(tmp_path / "c.txt"))], kind="bpe", vocab_size=300)
    method, optim, _ = build_text_arm(cfg, "data2vec2", tok)
    assert method.cfg.num_masks == 3 and optim["lr"] == 7e-4
    assert calibration_key(cfg, "data2vec2")["recipe_sets"] == {"num_masks": 3}  # lr does not change the cost
    assert "recipe_sets" not in calibration_key(cfg, "bert")  # the study's own calibration keys are unchanged
    lr_only = dataclasses.replace(cfg, recipe_sets={"data2vec": {"lr": 1e-3, "tau_end": 0.99}})
    assert calibration_key(lr_only, "data2vec") == calibration_key(cfg, "data2vec")  # may reuse the study's steps
    # images take --set too (test_compare.py checks what it builds); a key no config has is refused there as here
    assert main(["compare", "--data", "digits", "--set", "data2vec.no_such_key=1", "--out", str(tmp_path / "v")]) == 2
    assert "no_such_key" in capsys.readouterr().err


def test_compare_text_needs_glue_and_data(tmp_path, capsys):
    from data2vec.cli import main

    corpus = write_corpus(tmp_path / "corpus.txt")
    assert main(["compare", "--modality", "text", "--data", str(corpus), "--out", str(tmp_path / "o")]) == 2
    assert "needs --glue" in capsys.readouterr().err
    assert main(["compare", "--modality", "text", "--glue", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "needs --data" in capsys.readouterr().err


def test_an_interrupted_pretraining_writes_no_results_file(tmp_path, monkeypatch):
    """Ctrl-C / SIGTERM ends `engine.pretrain` normally with `stopped_by` set: the arm must not be recorded as
    finished (its evaluations would then read a half-trained encoder and a rerun would never continue it)."""
    import data2vec.engine
    from data2vec.study.errors import StudyError as CliError
    from data2vec.study.records import result_path
    from data2vec.study.text import calibration_key
    from data2vec.study.text import pretrain_arm as pretrain_text_arm
    from data2vec.study.text_config import TextCompareConfig
    from tasks.text.tokenizer import train_tokenizer

    tok = train_tokenizer([str(write_corpus(tmp_path / "c.txt"))], kind="bpe", vocab_size=300)
    cfg = TextCompareConfig(data="x", glue="x", out=str(tmp_path / "out"), runs=str(tmp_path / "runs"),
                            preset="tiny", dim=32, depth=2, heads=2, tasks=("sst2",))
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "calibration.json").write_text(json.dumps(
        {"bert": {**calibration_key(cfg, "bert"), "s_per_update": 0.1, "steps": 50}}))
    monkeypatch.setattr(data2vec.engine, "pretrain", lambda *a, **k: {"stopped_by": "SIGTERM", "steps_done": 3})
    with pytest.raises(CliError, match="stopped by SIGTERM after update 3 of 50") as stopped:
        pretrain_text_arm(cfg, "bert", 1, None, tok)
    assert stopped.value.exit_code == 143  # `data2vec compare` exits 128 + SIGTERM
    assert not result_path(cfg, "bert", 1, "pretrain").exists()
