"""`data2vec finetune` end to end on tiny data written here: GLUE (SST-2 TSV, STS-B), SQuAD/XQuAD JSON, an
image folder; and the one-line errors for bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from data2vec.cli import main

WORDS = "the a good bad movie film great awful plot actor was is very not fun boring".split()


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    from tasks.text.tokenizer import train_tokenizer

    rng = np.random.default_rng(0)
    lines = [" ".join(rng.choice(WORDS, size=8)) for _ in range(300)]
    lines += ["Paris is the capital of France.", "Who wrote the book? Jane wrote it in 1990."] * 20
    folder = tmp_path_factory.mktemp("tok")
    corpus = folder / "corpus.txt"
    corpus.write_text("\n".join(lines) + "\n")
    train_tokenizer([corpus], kind="bpe", vocab_size=300, min_frequency=1).save(folder)
    return folder


def _write_sst2(root):
    folder = root / "SST-2"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for split, n in (("train", 48), ("dev", 16)):
        rows = ["sentence\tlabel"]
        for i in range(n):
            label = i % 2
            word = "great" if label else "awful"
            rows.append(f"{' '.join(rng.choice(WORDS, size=5))} {word}\t{label}")
        (folder / f"{split}.tsv").write_text("\n".join(rows) + "\n")
    return root


def _tiny_args(tmp_path, tokenizer_dir, name):
    return ["--preset", "tiny", "--tokenizer", str(tokenizer_dir), "--epochs", "2", "--batch-size", "8",
            "--out", str(tmp_path / name), "--quiet"]


def test_finetune_sst2_end_to_end(tmp_path, tokenizer_dir, capsys):
    data = _write_sst2(tmp_path / "glue")
    rc = main(["finetune", "--task", "sst2", "--data", str(data), "--lr", "1e-3"]
              + _tiny_args(tmp_path, tokenizer_dir, "sst2"))
    assert rc == 0, capsys.readouterr().err
    metrics = json.loads((tmp_path / "sst2" / "metrics.json").read_text())
    assert metrics["main_metric"] == "score" and len(metrics["history"]) == 2
    assert metrics["eval_examples"] == 16 and metrics["train_examples"] == 48
    assert 0.0 <= metrics["best"]["accuracy"] <= 100.0
    assert len((tmp_path / "sst2" / "eval.jsonl").read_text().splitlines()) == 2
    assert (tmp_path / "sst2" / "best" / "model.safetensors").is_file()

    # the best checkpoint is a valid --init: re-evaluating it gives the recorded best score
    rc = main(["finetune", "--task", "sst2", "--data", str(data), "--init", str(tmp_path / "sst2" / "best"),
               "--tokenizer", str(tokenizer_dir), "--eval-only", "--out", str(tmp_path / "again")])
    assert rc == 0
    again = json.loads((tmp_path / "again" / "metrics.json").read_text())
    assert again["final"]["accuracy"] == pytest.approx(metrics["best"]["accuracy"])


def test_resume_continues_an_interrupted_run_to_the_uninterrupted_result(tmp_path, tokenizer_dir, capsys,
                                                                        monkeypatch):
    import data2vec.finetune

    data = _write_sst2(tmp_path / "glue")

    def command(name, *extra, lr="1e-3"):
        return (["finetune", "--task", "sst2", "--data", str(data), "--lr", lr, "--val-fraction", "0.25",
                 *extra] + _tiny_args(tmp_path, tokenizer_dir, name)[:-1] + ["--epochs", "3"])

    assert main(command("straight")) == 0
    expected = json.loads((tmp_path / "straight" / "metrics.json").read_text())

    real_predict, calls = data2vec.finetune.predict, []

    def predict_then_die(*args, **kwargs):  # Ctrl-C while epoch 2 is scored: the checkpoint holds epoch 1
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_predict(*args, **kwargs)

    monkeypatch.setattr(data2vec.finetune, "predict", predict_then_die)
    assert main(command("resumed")) != 0
    assert "interrupted" in capsys.readouterr().err
    monkeypatch.setattr(data2vec.finetune, "predict", real_predict)
    assert main(command("resumed", "--resume")) == 0
    got = json.loads((tmp_path / "resumed" / "metrics.json").read_text())
    assert "resuming" in capsys.readouterr().out
    drop = ("elapsed_s",)
    assert ([{k: v for k, v in r.items() if k not in drop} for r in got["history"]]
            == [{k: v for k, v in r.items() if k not in drop} for r in expected["history"]])
    assert got["test"] == expected["test"]

    # another recipe is refused with one line naming the difference and the fix
    assert main(command("resumed", "--resume", lr="2e-3")) == 2
    err = capsys.readouterr().err
    assert "lr" in err and "fix" in err and len(err.strip().splitlines()) == 1


def test_finetune_val_fraction_picks_the_epoch_on_held_out_training_data(tmp_path, tokenizer_dir, capsys):
    """--val-fraction: the epoch is chosen on a validation split of train.tsv, dev.tsv is scored once with it."""
    data = _write_sst2(tmp_path / "glue")
    args = _tiny_args(tmp_path, tokenizer_dir, "sst2val")
    args[args.index("--epochs") + 1] = "3"
    args.remove("--quiet")  # the epoch lines are checked below
    rc = main(["finetune", "--task", "sst2", "--data", str(data), "--lr", "1e-3", "--val-fraction", "0.25"] + args)
    assert rc == 0, capsys.readouterr().err
    metrics = json.loads((tmp_path / "sst2val" / "metrics.json").read_text())
    assert metrics["train_examples"] == 36 and metrics["eval_examples"] == 12  # 48 train rows: 36 fit + 12 validation
    chosen = max(metrics["history"], key=lambda h: h["score"])  # the validation history; the first of equal scores
    test = metrics["test"]
    assert test["selected"]["epoch"] == chosen["epoch"] and test["last"]["epoch"] == 3 and test["examples"] == 16
    assert metrics["best_is"] == "selected on a validation split"
    out = capsys.readouterr().out
    assert "GLUE dev at the epoch chosen on validation" in out
    # every line names its split: the epochs are scored on validation, dev.tsv once, and never called "test"
    epochs = [line for line in out.splitlines() if line.startswith("epoch ")]
    assert len(epochs) == 3 and all("validation: accuracy" in line for line in epochs), epochs
    assert "GLUE dev (16 examples): score" in out and not any(line.startswith("test") for line in out.splitlines())
    assert main(["finetune", "--task", "sst2", "--data", str(data), "--val-fraction", "1.5"] + args) == 2
    assert "--val-fraction must lie in (0, 1)" in capsys.readouterr().err


def test_same_seed_same_run_whatever_the_global_rng(tmp_path, tokenizer_dir):
    # the task head is built by the CLI before training starts: --seed must fix it, not the caller's RNG state
    data = _write_sst2(tmp_path / "glue")
    histories = []
    for i, outside_seed in enumerate((123, 456)):
        torch.manual_seed(outside_seed)
        rc = main(["finetune", "--task", "sst2", "--data", str(data), "--lr", "1e-3", "--seed", "7"]
                  + _tiny_args(tmp_path, tokenizer_dir, f"run{i}"))
        assert rc == 0
        histories.append([(h["train_loss"], h["accuracy"])
                          for h in json.loads((tmp_path / f"run{i}" / "metrics.json").read_text())["history"]])
    assert histories[0] == histories[1]


def test_finetune_stsb_regression_with_subsets(tmp_path, tokenizer_dir):
    folder = tmp_path / "STS-B"
    folder.mkdir()
    header = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore"
    for split, n in (("train", 20), ("dev", 12)):
        rows = [header] + [f"{i}\tg\tf\t2012\t{i}\ts\ts\tthe movie was good"
                           f"\tthe film is {'great' if i % 2 else 'bad'}\t{(i % 6) * 1.0}" for i in range(n)]
        (folder / f"{split}.tsv").write_text("\n".join(rows) + "\n")
    rc = main(["finetune", "--task", "stsb", "--data", str(folder), "--max-train-examples", "16",
               "--max-eval-examples", "8"] + _tiny_args(tmp_path, tokenizer_dir, "stsb"))
    assert rc == 0
    metrics = json.loads((tmp_path / "stsb" / "metrics.json").read_text())
    assert metrics["train_examples"] == 16 and metrics["eval_examples"] == 8
    assert {"pearson", "spearman", "score"} <= set(metrics["best"])
    assert metrics["config"]["task_type"] == "regression"


def _squad_json(path, n_articles=3):
    data = {"version": "1.1", "data": []}
    for a in range(n_articles):
        context = f"Jane wrote the book in {1990 + a}. Paris is the capital of France."
        qas = [{"id": f"q{a}-0", "question": "Who wrote the book?",
                "answers": [{"text": "Jane", "answer_start": 0}]},
               {"id": f"q{a}-1", "question": "What is the capital of France?",
                "answers": [{"text": "Paris", "answer_start": context.index("Paris")}]}]
        data["data"].append({"title": f"t{a}", "paragraphs": [{"context": context, "qas": qas}]})
    path.write_text(json.dumps(data))
    return path


def test_finetune_squad_then_xquad_zero_shot(tmp_path, tokenizer_dir):
    train = _squad_json(tmp_path / "train-v1.1.json", 4)
    xquad_dir = tmp_path / "xquad"
    xquad_dir.mkdir()
    _squad_json(xquad_dir / "xquad.de.json", 2)
    rc = main(["finetune", "--task", "squad", "--data", str(train), "--eval-data", str(xquad_dir / "xquad.de.json"),
               "--max-length", "64", "--doc-stride", "16", "--lr", "1e-3"]
              + _tiny_args(tmp_path, tokenizer_dir, "squad"))
    assert rc == 0
    metrics = json.loads((tmp_path / "squad" / "metrics.json").read_text())
    assert metrics["main_metric"] == "f1" and {"exact_match", "f1"} <= set(metrics["best"])
    # zero-shot XQuAD evaluation of the fine-tuned model (its QA head is restored from best/)
    rc = main(["finetune", "--task", "xquad", "--data", str(xquad_dir), "--language", "de", "--eval-only",
               "--init", str(tmp_path / "squad" / "best"), "--max-length", "64", "--out", str(tmp_path / "xq")])
    assert rc == 0
    xq = json.loads((tmp_path / "xq" / "metrics.json").read_text())
    assert xq["eval_examples"] >= 4 and 0.0 <= xq["final"]["f1"] <= 100.0


def test_finetune_image_folder_with_layer_decay(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for c, name in enumerate(("dark", "light")):
        (tmp_path / "imgs" / name).mkdir(parents=True)
        for i in range(10):
            arr = np.clip(40 + 170 * c + rng.integers(-20, 20, size=(8, 8, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(arr).save(tmp_path / "imgs" / name / f"{i}.png")
    rc = main(["finetune", "--task", "image", "--data", str(tmp_path / "imgs"), "--preset", "tiny", "--image-size", "8",
               "--epochs", "2", "--batch-size", "8", "--lr", "1e-3", "--layer-decay", "0.75",
               "--out", str(tmp_path / "img"), "--quiet"])
    assert rc == 0
    metrics = json.loads((tmp_path / "img" / "metrics.json").read_text())
    assert metrics["config"]["layer_decay"] == 0.75 and metrics["config"]["label_smoothing"] == 0.1
    assert metrics["num_classes"] == 2 and metrics["eval_examples"] == 4


def test_bad_input_exits_nonzero_with_one_clear_line(tmp_path, tokenizer_dir, capsys):
    rc = main(["finetune", "--task", "sst2", "--data", str(tmp_path / "missing"), "--tokenizer", str(tokenizer_dir),
               "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "missing" in err[0]
    # a real checkpoint whose weights file was cut short (e.g. a copy that broke off)
    from data2vec.backbone import build_backbone
    from data2vec.checkpoint import save_checkpoint
    from data2vec.config import vision_preset

    cfg = vision_preset("tiny", image_size=8, patch_size=2, in_chans=1)
    holder = torch.nn.Module()
    holder.backbone = build_backbone(cfg)
    corrupt = save_checkpoint(tmp_path / "run" / "checkpoint", model=holder, optimizer=None, step=0,
                              config={"method_config": {"encoder": cfg.to_dict()}})
    weights = corrupt / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    rc = main(["finetune", "--task", "image", "--data", "digits", "--init", str(tmp_path / "run"),
               "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "corrupt" in err[0] and "fix" in err[0]
    rc = main(["finetune", "--task", "image", "--data", "digits", "--init", str(tmp_path / "nowhere"),
               "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "nowhere" in err[0]
    data = _write_sst2(tmp_path / "glue2")
    rc = main(["finetune", "--task", "sst2", "--data", str(data), "--tokenizer", str(tokenizer_dir), "--preset", "tiny",
               "--max-length", "4096", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "--max-length" in err[0]
