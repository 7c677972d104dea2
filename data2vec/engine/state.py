"""What one pretraining run holds between its steps (`Run`), the flag SIGINT/SIGTERM set (`StopFlag`), and
the run's checkpoint (`save`).

Differences from the original: fairseq saves from rank 0 only; here every rank also checks that the EMA
teachers agree before the checkpoint is written, and each rank's RNG state is saved so a resumed run repeats
the same draws.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from .. import distributed as dist_utils
from ..checkpoint import get_rng_state, save_checkpoint
from ..metrics import MetricsLog, write_plots
from ..sampling import ShardSampler
from ..schedules import LRSchedule
from .config import PretrainConfig, TrainingAborted

if TYPE_CHECKING:
    from .health import Health


# ---- the run's state --------------------------------------------------------------------------------------
@dataclass
class Run:
    """Everything one pretraining run holds between its steps."""

    cfg: PretrainConfig
    method: nn.Module  # the PretrainMethod itself (checkpoints, step_hook)
    model: nn.Module  # what a micro-batch goes through: the method, wrapped by DDP when world > 1
    optimizer: torch.optim.Optimizer
    schedule: LRSchedule
    batches: Iterator  # this rank's micro-batches, from the first update still to do
    sampler: ShardSampler | None  # None for an iterable of ready batches
    out: Path
    full_config: dict  # config.json
    rank: int
    world: int
    device: torch.device
    start_step: int = 0
    skipped_total: int = 0  # non-finite updates skipped so far
    in_a_row: int = 0  # ... of them in a row (reset by a finite update)
    log: MetricsLog | None = None  # rank 0 only
    trainable: list = field(default_factory=list)
    health: Health | None = None  # the health pass's probe data and guard (None = off)
    health_in_a_row: int = 0  # health passes past a threshold in a row, from the checkpoint
    seconds_this_launch: float = 0.0  # wall-clock of the updates taken since this launch (the console's ETA)

    @property
    def ckpt_dir(self) -> Path:
        return self.out / "checkpoint"

    @property
    def metrics_path(self) -> Path:
        return self.out / "metrics.jsonl"

    @property
    def main(self) -> bool:
        return self.rank == 0


# ---- signals ----------------------------------------------------------------------------------------
class StopFlag:
    """SIGINT/SIGTERM set a flag (the loop saves and exits after the current step); a second SIGINT aborts."""

    def __init__(self):
        self.signal_name: str | None = None
        self._previous = {}

    def __enter__(self):
        import threading

        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.signal_name is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # second Ctrl-C: stop now, without waiting for the checkpoint
        self.signal_name = signal.Signals(signum).name

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        return False


def agreed_signal(run: Run, stop: StopFlag) -> str:
    """The name of the signal that stops the run, the same on every rank (one all-reduce, only when stopping):
    SIGTERM when any rank got one (a scheduler's), else SIGINT. A rank that got none learns it from the others,
    so every process reports the same summary and exit status."""
    number = float(signal.Signals[stop.signal_name]) if stop.signal_name else 0.0
    agreed = int(dist_utils.all_reduce_max(torch.tensor(number, device=run.device)))
    return signal.Signals(agreed).name


# ---- the run's checkpoint --------------------------------------------------------------------------------
def save(run: Run, step_done: int, reason: str) -> None:
    """An atomic checkpoint after `step_done` updates (rank 0 writes; every rank checks the EMA teachers agree)."""
    rngs = dist_utils.all_gather_object(get_rng_state())
    sums = dist_utils.all_gather_object(dist_utils.checksum(run.method, trainable=False))
    if len(set(sums)) > 1:
        raise TrainingAborted(f"the frozen (EMA teacher) weights differ across ranks {sums}; fix: every rank must "
                              "build the model with the same --seed and call step_hook after every update")
    if run.main:
        extra = {"scheduler": run.schedule.state_dict(), "rng_per_rank": rngs, "reason": reason,
                 "data_position": run.sampler.position(step_done) if run.sampler else {"batches": step_done},
                 "counters": {"nonfinite_skipped": run.skipped_total, "nonfinite_in_a_row": run.in_a_row,
                              "health_in_a_row": run.health.guard.steps_below if run.health and run.health.guard
                              else run.health_in_a_row}}
        save_checkpoint(run.ckpt_dir, model=run.method, optimizer=run.optimizer, step=step_done,
                        config=run.full_config, extra=extra)
        if run.cfg.plots:
            write_plots(run.metrics_path, run.out / "plots")
    dist_utils.barrier()
