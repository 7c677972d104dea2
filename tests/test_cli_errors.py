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
