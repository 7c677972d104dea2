"""`python -m tasks.inventory`: finds and counts every data set of a folder tree (fixtures written here)."""

import json
import tarfile

import numpy as np
from PIL import Image

from tasks.inventory import main


def _tree(root):
    (root / "glue" / "CoLA").mkdir(parents=True)
    (root / "glue" / "CoLA" / "train.tsv").write_text("gj04\t1\t\tA.\ngj04\t0\t*\tB.\ngj04\t1\t\tC.\n")
    (root / "glue" / "CoLA" / "dev.tsv").write_text("gj04\t1\t\tD.")  # no final newline
    (root / "glue" / "SST-2").mkdir()
    (root / "glue" / "SST-2" / "dev.tsv").write_text("sentence\tlabel\nok .\t1\nbad .\t0\n")
    (root / "glue" / "STS-B").mkdir()
    (root / "glue" / "STS-B" / "readme.txt").write_text("not a corpus")
    qas = [{"id": str(i), "question": "q", "answers": [{"text": "c", "answer_start": 0}]} for i in range(4)]
    squad = {"version": "1.1", "data": [{"title": "t", "paragraphs": [{"context": "c", "qas": qas}]}]}
    (root / "squad").mkdir()
    (root / "squad" / "dev-v1.1.json").write_text(json.dumps(squad))
    (root / "mnist").mkdir()
    for prefix, n in (("train", 5), ("t10k", 2)):
        images = bytes([0, 0, 8, 3]) + np.array([n, 28, 28], ">i4").tobytes() + bytes(n * 784)  # IDX header + pixels
        labels = bytes([0, 0, 8, 1]) + np.array([n], ">i4").tobytes() + bytes(n)  # IDX header + labels
        (root / "mnist" / f"{prefix}-images-idx3-ubyte").write_bytes(images)
        (root / "mnist" / f"{prefix}-labels-idx1-ubyte").write_bytes(labels)
    img = root / "build" / "IMGS"
    for split, n in (("train", 3), ("test", 2)):
        for c in ("a", "b"):
            (img / split / c).mkdir(parents=True)
            for k in range(n):
                Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(img / split / c / f"{k}.jpg")
    (root / "cifar").mkdir()
    with tarfile.open(root / "cifar" / "imgs.tar.gz", "w:gz") as tar:
        tar.add(img, arcname="IMGS")
    (root / "wiki").mkdir()
    (root / "wiki" / "valid.txt").write_text(" = A = \n \n a b . \n \n = = S = = \n c . \n = B = \n d . \n")
    (root / "README.md").write_text("# data")


def test_inventory_counts(tmp_path, capsys):
    _tree(tmp_path)
    assert main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "lines (2 documents)" in out
    rows = {tuple(line.split()[:3]) for line in out.splitlines()}
    expected = {
        ("glue/CoLA", "train", "3"), ("glue/CoLA", "dev", "1"), ("glue/SST-2", "dev", "2"),
        ("squad/dev-v1.1.json", "dev", "4"), ("mnist", "train", "5"), ("mnist", "test", "2"),
        ("cifar/imgs.tar.gz", "train", "6"), ("cifar/imgs.tar.gz", "test", "4"),
        ("build/IMGS", "train", "6"), ("build/IMGS", "test", "4"),
        ("wiki/valid.txt", "all", "6"),  # 6 non-empty lines, 2 articles
    }
    assert rows == expected


def test_inventory_reports_failures(tmp_path, capsys):
    (tmp_path / "RTE").mkdir()
    (tmp_path / "RTE" / "dev.tsv").write_text("index\tsentence1\tsentence2\tlabel\n0\ta\tb\tmaybe\n")
    assert main([str(tmp_path)]) == 1
    assert "maybe" in capsys.readouterr().err
