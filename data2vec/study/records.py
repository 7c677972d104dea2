"""The results files of a comparison (image and text studies, `data2vec compare`): where each goes and what it records.

One JSON file per (arm, seed, protocol) under OUT/<arm>/seed<k>/, written atomically, holding the score, the
protocol's details, the command, the git commit and the machine (docs/design.md section 8: "one JSON file per run,
committed, holding the command, git commit and machine"). Also here: what happens to a finished pretraining record
whose run folder is gone (a fresh clone of a study in progress), which the image and text comparisons share.

Differences from the original: the papers publish tables, not per-run records; this layout is the project's own.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Protocol

from .errors import StudyError


class StudyConfig(Protocol):
    """What the records read from a study's config (CompareConfig and TextCompareConfig both have it)."""

    out: str  # the results folder
    data: str  # the data set or corpus
    command: str  # the command line that made the results
    study_fields: tuple  # the fields that define the study (results made with other values are not mixed)
    study_defaults: dict  # the value of a study field that older studies did not store
    study_name: str  # "comparison" or "text comparison", in the refusal

    def extra_study_changes(self, old: dict) -> list[tuple]: ...  # (name, stored, new) beyond study_fields


# ---- one results file ---------------------------------------------------------------------------------------


def machine_info() -> dict:
    import torch

    from ..precision import cpu_model

    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_model": cpu_model(),
            "cpu_count": os.cpu_count(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def config_with_machines(path: Path, config: dict) -> dict:
    """OUT/config.json for this launch: `config` (the study's settings and this launch's "machine") with "machines",
    every machine that has launched the study, in order, kept from the stored file. A study resumed on another CPU,
    or a finished one launched again there, so names both instead of only the last (each results file names the one
    that made it)."""
    machines = []
    if path.is_file():
        stored = json.loads(path.read_text())
        machines = stored.get("machines") or ([stored["machine"]] if "machine" in stored else [])
    if config["machine"] not in machines:
        machines.append(config["machine"])
    return {**config, "machines": machines}


def git_commit() -> str:
    try:
        here = Path(__file__).resolve().parent
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True,
                              timeout=10).stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def write_json(path: Path, payload: dict) -> None:
    """`payload` as indented JSON, written atomically (a kill mid-write never leaves half a results file)."""
    from ..checkpoint import atomic_write_text  # imports torch: kept out of `data2vec --help`

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(payload, indent=2, default=float))


def result_path(cfg: StudyConfig, arm: str, seed: int, protocol: str) -> Path:
    return Path(cfg.out) / arm / f"seed{seed}" / f"{protocol.replace('%', 'pct')}.json"


def pct(fraction: float) -> str:
    return f"{100 * fraction:g}%"


def record(cfg: StudyConfig, arm: str, seed: int, protocol: str, score: float, **details) -> dict:
    return {"arm": arm, "seed": seed, "protocol": protocol, "metric": "accuracy", "score": float(score),
            "data": cfg.data, "details": details, "command": cfg.command, "git_commit": git_commit(),
            "machine": machine_info(), "written": time.strftime("%Y-%m-%d %H:%M:%S")}


def check_same_study(cfg: StudyConfig) -> None:
    """Refuse to add results to an --out folder that holds a study with other settings (cfg.study_fields, and what
    the modality's `extra_study_changes` finds; seeds and methods may be added: more of either extends the same
    table)."""
    path = Path(cfg.out) / "config.json"
    if not path.is_file():
        return
    stored = json.loads(path.read_text())
    old, new = {**cfg.study_defaults, **stored}, dataclasses.asdict(cfg)
    changed = [(name, old[name], new[name]) for name in cfg.study_fields if name in old
               and old[name] != (list(new[name]) if isinstance(new[name], tuple) else new[name])]  # JSON: lists
    changed += cfg.extra_study_changes(stored)
    if changed:
        name, was, now = changed[0]
        raise StudyError(f"{cfg.out} holds a {cfg.study_name} with {name}={was!r}, this one has {now!r}; fix: use "
                         "the original flags, another --out folder for other settings, or delete the old results")


def say(message: str) -> None:
    print(f"[compare {time.strftime('%H:%M:%S')}] {message}", flush=True)


# ---- a finished pretraining whose run folder is gone --------------------------------------------------------

PREVIOUS_RECORD = "previous-pretrain.json"  # kept in the new run folder while the arm is pretrained again


def retire_pretrain_record(summary_path: Path, run_dir: Path, pending: list[str]) -> None:
    """A pretrain.json whose run folder is gone (deleted, or a fresh clone of a study that is still going) cannot
    give the encoder the `pending` evaluations need. Pretraining is a function of the seed, so the arm is pretrained
    again: the old record moves into the new run folder (a kill while it pretrains then resumes that run instead of
    scoring a half-trained checkpoint) and `previous_pretrain` folds it into the new record."""
    run_dir.mkdir(parents=True, exist_ok=True)
    summary_path.replace(run_dir / PREVIOUS_RECORD)
    say(f"{summary_path} exists but its run folder {run_dir} is gone and {pending} are still to do: pretraining "
        "again from the same seed (the earlier record is kept under 'previous' in the new one)")


def previous_pretrain(run_dir: Path, final_loss: float | None) -> dict:
    """{'previous': the retired record's provenance, final loss and time, 'repeats_previous': whether this run ended
    at the same loss (same machine and code: it should; another CPU's float reductions differ)}, or {}."""
    path = run_dir / PREVIOUS_RECORD
    if not path.is_file():
        return {}
    old = json.loads(path.read_text())
    previous = {k: old.get(k) for k in ("final_loss", "train_seconds", "git_commit", "written", "machine")}
    same = final_loss is not None and old.get("final_loss") is not None and \
        abs(float(final_loss) - float(old["final_loss"])) <= 1e-6 * max(1.0, abs(float(old["final_loss"])))
    say(f"pretrained again: final loss {final_loss} (the earlier run's: {old.get('final_loss')}; "
        f"{'the same' if same else 'different'})")
    return {"previous": previous, "repeats_previous": same}
