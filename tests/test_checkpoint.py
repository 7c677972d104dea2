"""Checkpoints: round trip of weights/optimiser/RNG, atomic swap, clear errors on corrupt or mismatched files."""

import json
import random

import numpy as np
import pytest
import torch
from torch import nn

from data2vec.checkpoint import get_rng_state, load_checkpoint, save_checkpoint, set_rng_state, set_seed


class Tied(nn.Module):
    """An embedding tied to an output projection (like BERT's decoder), plus a frozen 'teacher'."""

    def __init__(self, vocab=7, dim=3):
        super().__init__()
        self.emb = nn.Embedding(vocab, dim)
        self.out = nn.Linear(dim, vocab)
        self.out.weight = self.emb.weight
        self.teacher = nn.Linear(dim, dim)
        self.teacher.requires_grad_(False)
        self.register_buffer("center", torch.zeros(dim))


def _train_one_step(model):
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.1)
    loss = model.out(model.emb(torch.tensor([1, 2, 3]))).square().mean()
    loss.backward()
    opt.step()
    return opt


def test_round_trip_weights_optimizer_rng(tmp_path):
    torch.manual_seed(0)
    model = Tied()
    opt = _train_one_step(model)
    model.center += 1.5
    set_seed(123)
    save_checkpoint(tmp_path / "ck", model=model, optimizer=opt, step=7, config={"a": 1, "b": [1, 2]},
                    extra={"data_position": {"epoch": 2}})
    expected_draws = (random.random(), np.random.rand(), torch.rand(1).item())
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == ["config.json", "model.safetensors", "state.pt"]
    assert not list(tmp_path.glob("*.tmp-*"))  # nothing half-written is left visible

    torch.manual_seed(99)
    fresh = Tied()
    fresh_opt = torch.optim.AdamW([p for p in fresh.parameters() if p.requires_grad], lr=0.1)
    info = load_checkpoint(tmp_path / "ck", model=fresh, optimizer=fresh_opt)
    for (name, a), b in zip(model.state_dict().items(), fresh.state_dict().values(), strict=True):  # same module
        assert torch.equal(a, b), name
    assert fresh.out.weight is fresh.emb.weight  # the tie survives loading
    assert info["step"] == 7 and info["config"] == {"a": 1, "b": [1, 2]}
    assert info["extra"]["data_position"] == {"epoch": 2}
    s0, s1 = opt.state_dict()["state"], fresh_opt.state_dict()["state"]
    for k in s0:
        assert torch.equal(s0[k]["exp_avg"], s1[k]["exp_avg"])
    set_rng_state(info["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected_draws


def test_rng_state_round_trip():
    set_seed(5)
    state = get_rng_state()
    a = (random.random(), np.random.randn(), torch.randn(3))
    set_rng_state(state)
    b = (random.random(), np.random.randn(), torch.randn(3))
    assert a[0] == b[0] and a[1] == b[1] and torch.equal(a[2], b[2])


def test_second_save_replaces_and_old_is_fallback(tmp_path):
    model = Tied()
    save_checkpoint(tmp_path / "ck", model=model, optimizer=None, step=1, config={})
    save_checkpoint(tmp_path / "ck", model=model, optimizer=None, step=2, config={})
    assert load_checkpoint(tmp_path / "ck", model=Tied())["step"] == 2
    assert not (tmp_path / "ck.old").exists()
    # a crash between the two renames leaves only <name>.old: it is still found
    (tmp_path / "ck").rename(tmp_path / "ck.old")
    assert load_checkpoint(tmp_path / "ck", model=Tied())["step"] == 2


def test_corrupt_weights_name_the_file(tmp_path):
    save_checkpoint(tmp_path / "ck", model=Tied(), optimizer=None, step=1, config={})
    (tmp_path / "ck" / "model.safetensors").write_bytes(b"garbage, not safetensors")
    with pytest.raises(ValueError, match=r"model\.safetensors is corrupt.*fix"):
        load_checkpoint(tmp_path / "ck", model=Tied())


def test_corrupt_state_and_missing_files(tmp_path):
    save_checkpoint(tmp_path / "ck", model=Tied(), optimizer=None, step=1, config={})
    (tmp_path / "ck" / "state.pt").write_bytes(b"\x00\x01junk")
    with pytest.raises(ValueError, match=r"state\.pt is corrupt"):
        load_checkpoint(tmp_path / "ck", model=Tied())
    (tmp_path / "ck" / "config.json").unlink()
    with pytest.raises(ValueError, match="config.json is missing"):
        load_checkpoint(tmp_path / "ck", model=Tied())
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_checkpoint(tmp_path / "nothing", model=Tied())


def test_shape_and_config_mismatch_name_the_key(tmp_path):
    save_checkpoint(tmp_path / "ck", model=Tied(dim=3), optimizer=None, step=1, config={"encoder": {"dim": 3}})
    with pytest.raises(ValueError, match=r"'center' has shape \(3,\) but the model expects \(4,\)"):
        load_checkpoint(tmp_path / "ck", model=Tied(dim=4))
    with pytest.raises(ValueError, match=r"encoder\.dim: checkpoint 3, now 4"):
        load_checkpoint(tmp_path / "ck", model=Tied(dim=3), expect_config={"encoder": {"dim": 4}})
    with pytest.raises(ValueError, match="does not have"):
        load_checkpoint(tmp_path / "ck", model=nn.Linear(3, 3))
    json.loads((tmp_path / "ck" / "config.json").read_text())  # human-readable config
