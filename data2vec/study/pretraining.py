"""One arm's pretraining in a study, the same for every modality: skip what is done, continue what a signal
stopped, pretrain again what lost its run folder, train for the calibrated number of updates, record the run.

The modality says what differs in an `ArmPlan`: its protocols, how it builds the arm, how a finished arm's
encoder is read back, the health settings of the run, what a run the engine aborted means (images: a failed
arm, recorded in pretrain-failed.json; text: the health guard's finding, scored as it stands) and what
pretrain.json records beside the shared fields.

Differences from the papers: they pretrain once per method; a study pretrains each method once per seed, for a
number of updates fixed by its budget (`budget.calibrate`).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .budget import pretrain_config, pretraining_stopped
from .records import result_path, retire_pretrain_record, say, write_json


@dataclass
class ArmPlan:
    """What a modality tells the shared pretraining about one arm (method `name`, one seed)."""

    protocols: list[str]  # the protocols the arm is scored with: a pending one needs the encoder
    calibrate: Callable[[], dict]  # the arm's calibration entry (`budget.calibrate`): "steps" fills the budget
    build: Callable[[int], tuple]  # steps -> (method, dataset, collate, optim settings, registry spec)
    load_finished: Callable[[Path], object | None]  # a finished arm's result read from its run folder (None: gone)
    run_options: Callable[[], tuple[dict, dict]]  # (PretrainConfig fields, engine.pretrain keywords) of the run
    aborted: Callable[[Exception, int, dict], bool]  # the engine aborted the run: record it; True = score it anyway
    record: Callable[..., dict]  # (method, final, run_dir, steps, calib, optim, wall, stopped) -> pretrain.json
    result: Callable[[object], object]  # the trained method -> what the modality scores (its backbone, or itself)


def pretrain_arm_with(cfg, name: str, seed: int, plan: ArmPlan):
    """Pretrain (or continue) method `name` for one seed; writes OUT/<name>/seed<k>/pretrain.json. Returns
    `plan.result(method)`, a finished arm's `plan.load_finished(...)`, or None when every evaluation of this
    (arm, seed) already exists or its pretraining failed."""
    from ..checkpoint import set_seed
    from ..engine import TrainingAborted, pretrain

    summary_path = result_path(cfg, name, seed, "pretrain")
    failed_path = result_path(cfg, name, seed, "pretrain-failed")
    pending = [p for p in plan.protocols if not result_path(cfg, name, seed, p).is_file()]
    run_dir = Path(cfg.runs) / f"{name}-seed{seed}"
    if failed_path.is_file():
        say(f"{name} seed {seed}: its pretraining failed before ({json.loads(failed_path.read_text())['reason']}); "
            f"skipped (delete {failed_path} and {run_dir} to try again, e.g. after changing its recipe)")
        return None
    if summary_path.is_file() and not pending:
        return None
    if summary_path.is_file():
        finished = plan.load_finished(run_dir)
        if finished is not None:
            return finished
        retire_pretrain_record(summary_path, run_dir, pending)
    calib = plan.calibrate()
    steps = calib["steps"]
    set_seed(seed)
    method, dataset, collate, optim, spec = plan.build(steps)
    resume = (run_dir / "checkpoint").is_dir() or (run_dir / "checkpoint.old").is_dir()
    say(f"pretraining {name} seed {seed}: {steps} updates x batch {cfg.batch_size} (~{cfg.budget_minutes:g} min)"
        + (" (resuming)" if resume else ""))
    fields, options = plan.run_options()
    pcfg = pretrain_config(cfg, optim, steps, seed, spec, save_every=max(1, steps // 5),
                           health_every=max(1, steps // 15), quiet=not sys.stdout.isatty(), **fields)
    t0 = time.time()
    stopped = None
    try:
        final = pretrain(method, dataset, pcfg, run_dir, resume=resume, collate_fn=collate,
                         run_config={"command": "compare", "method": name, "data": cfg.data}, **options)
    except TrainingAborted as error:
        if not plan.aborted(error, steps, optim):
            return None
        stopped, final = str(error), {}
    wall = time.time() - t0
    pretraining_stopped(name, seed, final, steps)  # pretrain.json waits for the end
    write_json(summary_path, plan.record(method, final, run_dir, steps, calib, optim, wall, stopped))
    return plan.result(method)
