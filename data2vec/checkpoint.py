"""Checkpoints that lose nothing, written atomically; seeding and RNG states for exact resumption.

A checkpoint is a folder holding three files:
- `model.safetensors`: every tensor of `model.state_dict()` (student, teacher, heads, buffers); tensors
  shared inside the model (tied embeddings) are stored once (see `_split_state`; non-tensor module
  "extra states" go to state.pt);
- `state.pt`: optimiser state, schedule description, step, RNG states (python, numpy, torch, CUDA), the
  data position and counters — loaded with `torch.load(weights_only=True)`, so no pickled code runs;
- `config.json`: the resolved run configuration (human-readable).

Atomicity: the folder is written as `<name>.tmp-<pid>`, every file and the folder are fsync'ed, then the
folder is renamed into place. An older checkpoint is first renamed to `<name>.old` and deleted after the
swap; `load_checkpoint` falls back to `.old` if a crash hit the instant between the two renames. A folder
named `<name>` is therefore always complete.

Differences from the original: fairseq and the BEiT fork pickle everything into one `.pt` file written in
place; here weights are safetensors (loadable without pickle) and the write is atomic.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

WEIGHTS, STATE, CONFIG = "model.safetensors", "state.pt", "config.json"
FORMAT_VERSION = 1


# ---- seeding and RNG states -----------------------------------------------------------------------
def set_seed(seed: int) -> None:
    """Seed python, numpy and torch (CPU and every CUDA device)."""
    seed_cpu_rngs(seed)
    torch.manual_seed(seed)  # the CPU generator again (the same state) and every CUDA device


def seed_cpu_rngs(seed: int) -> None:
    """Seed python, numpy and torch's CPU generator only: the same CPU streams as `set_seed`, for the per-sample
    seeding of the data pipeline (CPU-side augmentation). `torch.manual_seed` also queues a lazy seeding of every
    CUDA device, which records a formatted stack trace while CUDA is not initialised: about 0.75 ms per call, 40 %
    of the demo's time when it ran once per sample."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.default_generator.manual_seed(seed)


def get_rng_state() -> dict:
    """All RNG states as plain tensors/ints (safe for `torch.load(weights_only=True)`)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    """Restore what `get_rng_state` returned."""
    random.setstate(_as_tuple(state["python"]))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@contextmanager
def preserved_rng():
    """The python, numpy, torch (and CUDA) RNG states saved before and restored after the block."""
    state = get_rng_state()
    try:
        yield
    finally:
        set_rng_state(state)


def _as_tuple(x):
    return tuple(_as_tuple(v) for v in x) if isinstance(x, (list, tuple)) else x


# ---- atomic writes --------------------------------------------------------------------------------
def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on directories
        pass
    finally:
        os.close(fd)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write a text file via a temporary file in the same folder, fsync, then `os.replace`."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def save_checkpoint(path_dir, *, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None, step: int,
                    config: dict, extra: dict | None = None) -> Path:
    """Write the checkpoint folder `path_dir` atomically (see the module docstring); returns its path.

    extra: anything else to restore (scheduler description, data position, counters, per-rank RNG states);
    it must hold only tensors, numbers, strings, lists, tuples and dicts.
    """
    final = Path(path_dir)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f"{final.name}.tmp-{os.getpid()}")
    old = final.with_name(f"{final.name}.old")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    tensors, module_extra = _split_state(model)
    save_file(tensors, str(tmp / WEIGHTS))
    state = {
        "module_extra": module_extra,
        "format": FORMAT_VERSION,
        "step": int(step),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "rng": get_rng_state(),
        "extra": extra or {},
    }
    torch.save(state, tmp / STATE)
    (tmp / CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True, default=str), encoding="utf-8")
    for name in (WEIGHTS, STATE, CONFIG):
        _fsync_path(tmp / name)
    _fsync_path(tmp)
    if old.exists():
        shutil.rmtree(old)
    if final.exists():
        os.rename(final, old)
    os.rename(tmp, final)
    _fsync_path(final.parent)
    if old.exists():
        shutil.rmtree(old)
    return final


def resolve_checkpoint(path_dir) -> Path:
    """The complete checkpoint folder for `path_dir` (falls back to `<name>.old` after a crash mid-swap)."""
    path = Path(path_dir)
    if path.is_dir():
        return path
    old = path.with_name(f"{path.name}.old")
    if old.is_dir():
        return old
    raise FileNotFoundError(f"no checkpoint at {path}; fix: check the path (a run folder's checkpoint is "
                            "<out>/checkpoint) or start without --resume")


# ---- loading ----------------------------------------------------------------------------------------
def _diff_configs(saved, current, prefix="") -> list[str]:
    """Dotted keys whose values differ between two nested config dicts (keys present in both)."""
    out = []
    if isinstance(saved, dict) and isinstance(current, dict):
        for k in sorted(set(saved) & set(current)):
            out += _diff_configs(saved[k], current[k], f"{prefix}{k}.")
        return out
    if isinstance(saved, (list, tuple)) and isinstance(current, (list, tuple)):
        saved, current = list(saved), list(current)
    return [] if saved == current else [f"{prefix[:-1]}: checkpoint {saved!r}, now {current!r}"]


def load_checkpoint(path_dir, *, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None = None,
                    expect_config: dict | None = None, map_location="cpu") -> dict:
    """Load weights into `model` (and state into `optimizer`); returns {"step", "config", "rng", "extra", "path"}.

    expect_config: if given, the parts of the saved config.json that it also has must be equal; a difference
    raises ValueError naming the key (e.g. a different --preset).
    Raises ValueError naming the file and the fix when a file is missing, corrupt or does not fit the model.
    """
    path = resolve_checkpoint(path_dir)
    for name in (WEIGHTS, STATE, CONFIG):
        if not (path / name).is_file():
            raise ValueError(f"checkpoint {path} is incomplete: {name} is missing; fix: resume from an intact "
                             "checkpoint or start a new run (different --out, no --resume)")
    try:
        config = json.loads((path / CONFIG).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(
            f"checkpoint file {path / CONFIG} is corrupt ({error}); fix: restore it or start a new run"
        ) from None
    if expect_config is not None:
        diffs = _diff_configs(config, expect_config)
        if diffs:
            raise ValueError(f"checkpoint {path} was written with a different configuration ({'; '.join(diffs[:3])}); "
                             "fix: rerun with the same options as the original run, "
                             "or start a new run in another --out")
    try:
        tensors = load_file(str(path / WEIGHTS), device=str(map_location))
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise ValueError(f"checkpoint file {path / WEIGHTS} is corrupt or not a safetensors file ({error}); "
                         "fix: restore it from a backup or start a new run (different --out, no --resume)") from None
    try:
        state = torch.load(path / STATE, map_location=map_location, weights_only=True)
    except Exception as error:  # noqa: BLE001 - unpickling errors have many types; all mean "corrupt"
        raise ValueError(f"checkpoint file {path / STATE} is corrupt ({type(error).__name__}: {error}); "
                         "fix: restore it or start a new run (different --out, no --resume)") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT_VERSION:
        raise ValueError(f"checkpoint file {path / STATE} has an unknown format; fix: it was written by another "
                         "version of this project; start a new run")
    _load_weights(model, tensors, state.get("module_extra", {}), path / WEIGHTS)
    if optimizer is not None:
        if state["optimizer"] is None:
            raise ValueError(f"checkpoint {path} holds no optimiser state; fix: use it for fine-tuning, not --resume")
        try:
            optimizer.load_state_dict(state["optimizer"])
        except (ValueError, KeyError, RuntimeError) as error:
            raise ValueError(f"optimiser state in {path / STATE} does not fit this model ({error}); fix: resume with "
                             "the same method, preset and optimiser options as the original run") from None
    return {"step": state["step"], "config": config, "rng": state["rng"], "extra": state["extra"], "path": path}


def _split_state(model: torch.nn.Module) -> tuple[dict, dict]:
    """state_dict -> (tensors stored once each, for safetensors; non-tensor module extra states).

    Tensors shared inside the model (tied embeddings: same storage, shape and strides) keep their first name.
    """
    tensors, extra, seen = {}, {}, set()
    for key, value in model.state_dict().items():
        if not isinstance(value, torch.Tensor):
            extra[key] = value  # e.g. `get_extra_state()` of a module (python numbers)
            continue
        ident = (value.untyped_storage().data_ptr(), value.storage_offset(), tuple(value.shape), value.stride())
        if value.numel() and ident in seen:
            continue
        seen.add(ident)
        tensors[key] = value.detach().contiguous().cpu()
    return tensors, extra


def _load_weights(model: torch.nn.Module, tensors: dict, module_extra: dict, file: Path) -> None:
    own = {k: v for k, v in model.state_dict().items() if isinstance(v, torch.Tensor)}
    unexpected = sorted(set(tensors) - set(own))
    if unexpected:
        raise ValueError(f"{file} holds tensors this model does not have (e.g. {unexpected[0]!r}); fix: build the "
                         "model with the method and preset the checkpoint was trained with")
    for key, value in tensors.items():
        if tuple(value.shape) != tuple(own[key].shape):
            raise ValueError(f"{file}: tensor {key!r} has shape {tuple(value.shape)} but the model expects "
                             f"{tuple(own[key].shape)}; fix: use the preset/vocabulary the checkpoint was trained with")
    # tensors shared inside the model (tied weights) were stored under one name only
    loaded_ptrs = {own[k].data_ptr() for k in tensors}
    missing = [k for k in own if k not in tensors and own[k].data_ptr() not in loaded_ptrs]
    if missing:
        raise ValueError(f"{file} lacks the tensor {missing[0]!r} (and {len(missing) - 1} more); fix: build the model "
                         "with the method and preset the checkpoint was trained with")
    model.load_state_dict({**tensors, **module_extra}, strict=False)
