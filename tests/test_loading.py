"""The one checkpoint loader: every folder a user may pass as `--init` or to `convert` resolves through
`hub.locate_checkpoint` and loads through `hub.load_pretrained`, and the commands agree with it."""

from __future__ import annotations

import shutil

import pytest
import torch

from data2vec.cli.common import load_init
from data2vec.engine import PretrainConfig, pretrain
from data2vec.hub import load_pretrained, locate_checkpoint
from data2vec.methods import METHODS


def _run(tmp_path, name: str):
    """A one-update pretraining run of a registry method on random data; returns (run folder, method)."""
    torch.manual_seed(0)
    spec = METHODS[name]
    if name == "bert":
        method = spec.build("text", "tiny", vocab_size=50)
        data = [{"input_ids": torch.randint(5, 50, (4, 12)), "padding_mask": torch.zeros(4, 12, dtype=torch.bool)}]
    elif name == "dino":
        method = spec.build("vision", "tiny", image_size=16, patch_size=4, local_size=8, n_local=2)
        data = [{"crops": [torch.randn(4, 3, 16, 16)] * 2 + [torch.randn(4, 3, 8, 8)] * 2}]
    else:
        method = spec.build("vision", "tiny", image_size=16, patch_size=4)
        data = [{"images": torch.randn(4, 3, 16, 16)}]
    out = tmp_path / name
    pretrain(method, iter(data), PretrainConfig(steps=1, batch_size=4, lr=1e-3, warmup_steps=0, quiet=True, plots=False,
                                                device="cpu", find_unused_parameters=spec.find_unused_parameters),
             out, run_config={"command": "pretrain", "method": name})
    return out, method


@pytest.mark.parametrize("name", ["data2vec", "bert", "dino"])
def test_a_pretraining_run_loads_as_its_student_backbone(tmp_path, name):
    out, method = _run(tmp_path, name)
    for path in (out, out / "checkpoint", out / "checkpoint" / "model.safetensors"):
        folder, kind = locate_checkpoint(path)
        assert (folder, kind) == (out / "checkpoint", "own")
        model = load_pretrained(path)
        assert model.head is None  # the method's own head (regression / MLM / DINO) is not a task head
        expected = method.backbone.state_dict()
        loaded = model.backbone.state_dict()
        assert set(loaded) == set(expected)
        assert all(torch.equal(loaded[k], expected[k].cpu()) for k in expected)
    modality = method.cfg.encoder.modality
    init = load_init(str(out), modality, "tiny")
    assert init.source == f"checkpoint:{out / 'checkpoint'}" and init.head_state is None
    assert all(torch.equal(v, method.backbone.state_dict()[k]) for k, v in init.backbone.state_dict().items())


def test_a_crash_between_the_two_renames_still_loads(tmp_path):
    out, _ = _run(tmp_path, "data2vec")
    shutil.move(out / "checkpoint", out / "checkpoint.old")  # the instant between the renames of a save
    assert locate_checkpoint(out) == (out / "checkpoint.old", "own")
    assert load_pretrained(out).encoder_config.modality == "vision"


def test_convert_exports_a_pretraining_run(tmp_path, capsys):
    from data2vec.cli import main

    out, method = _run(tmp_path, "data2vec")
    assert main(["convert", "--to-hf", str(out), "--out", str(tmp_path / "hf")]) == 0
    assert "exported" in capsys.readouterr().out
    exported = load_pretrained(tmp_path / "hf")
    images = torch.randn(2, 3, 16, 16)
    method.backbone.eval()
    torch.testing.assert_close(exported(pixel_values=images), method.backbone(images), rtol=1e-5, atol=1e-5)


def test_not_a_checkpoint_names_the_fix(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="not a checkpoint.*fix"):
        locate_checkpoint(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        locate_checkpoint(tmp_path / "missing")
