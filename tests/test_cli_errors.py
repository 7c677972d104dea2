"""The CLI reports bad input as one line: errors raised in DataLoader workers too (not a worker traceback)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from data2vec.cli import main, one_line


def test_one_line_keeps_a_plain_message():
    assert one_line(ValueError("bad --lr; fix: use 1e-3")) == "bad --lr; fix: use 1e-3"


def test_one_line_unwraps_a_dataloader_worker_error():
    wrapped = ("Caught ValueError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n"
               '  File "x.py", line 1, in f\n    raise ValueError(...)\nValueError: cannot read the image a.png; '
               "fix: remove or replace that file\n")
    assert one_line(ValueError(wrapped)) == "cannot read the image a.png; fix: remove or replace that file"


@pytest.mark.slow
def test_a_corrupt_image_read_by_a_worker_is_one_line(tmp_path, capsys):
    root = tmp_path / "images"
    for label in ("a", "b"):
        (root / label).mkdir(parents=True)
        for i in range(4):
            pixels = np.random.default_rng(i).integers(0, 255, (32, 32, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(root / label / f"{i}.png")
    (root / "a" / "broken.png").write_bytes(b"this is not a png")
    code = main(["pretrain", "--method", "data2vec", "--modality", "vision", "--preset", "tiny", "--data", str(root),
                 "--steps", "4", "--batch-size", "9", "--workers", "1", "--out", str(tmp_path / "run"), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1, err
    assert "broken.png" in err and "Traceback" not in err


# ---- the message names the actual problem, and every refusal names its fix ------------------------------------


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


@pytest.mark.parametrize("command", ["pretrain", "finetune", "probe"])
def test_a_text_file_given_as_image_data_is_named_as_such(command, tmp_path, capsys):
    readme = tmp_path / "README.md"
    readme.write_text("# a project\n")
    argv = {"pretrain": ["pretrain", "--method", "data2vec2", "--modality", "vision"],
            "finetune": ["finetune", "--task", "image"], "probe": ["probe"]}[command]
    assert main(argv + ["--data", str(readme), "--preset", "tiny", "--out", str(tmp_path / "out")]) == 2
    line = _one_line(capsys)
    assert "not found" not in line  # it exists
    assert "is a file, not image data" in line and "fix:" in line
    assert "digits" in line and "CIFAR-10" in line and "MNIST" in line and "<class>/<image>" in line


def _glue_folder(folder, header, rows):
    folder.mkdir(parents=True)
    for split in ("train", "dev"):
        (folder / f"{split}.tsv").write_text("\n".join(["\t".join(header)] + ["\t".join(r) for r in rows]) + "\n")
    return folder


RTE_HEADER = ["index", "sentence1", "sentence2", "label"]
RTE_ROWS = [[str(i), "A man sleeps.", "Someone sleeps.", ("entailment", "not_entailment")[i % 2]] for i in range(4)]


@pytest.mark.parametrize("folder_name, evidence", [("RTE", "its folder is named RTE"),
                                                   ("my-data", "header")])
def test_sst2_pointed_at_another_glue_task_says_which_task_it_is(folder_name, evidence, tmp_path, capsys):
    data = _glue_folder(tmp_path / folder_name, RTE_HEADER, RTE_ROWS)
    assert main(["finetune", "--task", "sst2", "--data", str(data), "--preset", "tiny", "--tokenizer",
                 str(tmp_path / "unused"), "--out", str(tmp_path / "out")]) == 2
    line = _one_line(capsys)
    assert "is RTE data, not SST-2" in line and evidence in line
    assert "fix: point --data/--glue at the SST-2 folder" in line
    assert "not_entailment" not in line  # not a row-level complaint
    assert not (tmp_path / "out").exists()


def test_the_right_glue_folder_is_still_read(tmp_path):
    from tasks.text.glue import load_glue

    data = _glue_folder(tmp_path / "RTE", RTE_HEADER, RTE_ROWS)
    assert [e.label for e in load_glue("rte", "train", data)] == [0, 1, 0, 1]
    sst2 = _glue_folder(tmp_path / "mine", ["sentence", "label"], [["good film", "1"], ["bad film", "0"]])
    assert [e.label for e in load_glue("sst2", "dev", sst2)] == [1, 0]


@pytest.mark.parametrize("argv", [
    ["finetune", "--task", "image", "--data", "digits", "--batch-size", "0"],
    ["finetune", "--task", "image", "--data", "digits", "--epochs", "0"],
    ["probe", "--data", "digits", "--batch-size", "0"],
    ["probe", "--data", "digits", "--k", "0"],
    ["probe", "--data", "digits", "--temperature", "-1"],
    ["demo", "--threads", "0"],
    ["demo", "--label-seeds", "0"],
    ["pretrain", "--method", "data2vec", "--data", "digits", "--out", "unused"],
    ["pretrain", "--method", "data2vec", "--modality", "vision", "--data", "digits", "--out", "unused",
     "--health-max-anisotropy", "2"],
])
def test_every_option_refusal_names_its_fix(argv, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # a refusal must write nothing, here or anywhere
    assert main(argv) == 2
    line = _one_line(capsys)
    assert "fix:" in line, line
    assert list(tmp_path.iterdir()) == []
