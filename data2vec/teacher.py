"""The teacher bookkeeping shared by data2vec v1 and data2vec 2.0: tau schedule, EMA step, collapse guard.

data2vec (arXiv 2202.03555, section 3.2 "Teacher parameterization") and data2vec 2.0 (arXiv 2212.07525,
section 3) move the teacher after every optimiser step, Delta <- tau Delta + (1 - tau) theta (`ema.py`), with
tau ramped linearly from tau_start to tau_end over the first tau_ramp_steps updates (`linear_tau`).

- `TauSchedule`: the config side, `ramp_steps` and `tau_at` for any config with tau_start / tau_end /
  tau_ramp_steps (a ramp in (0, 1) is that fraction of the run), and `check_teacher`, the checks of those fields
  and of the collapse guard's that both configs' `validate` run.
- `TeacherBookkeeping`: the model side, mixed into both methods: the EMA teacher of `self.backbone`, the tau
  of the last step, the update count, the collapse guard (`diagnostics.CollapseGuard`) with one advice text,
  `step_hook` and the extra state that travels with a checkpoint (tau, update count, the guard's counter).

Differences from the original: fairseq stops at the first low target/prediction variance after 5000
updates; here the guard watches the standard deviations and stops after `collapse_patience` steps in a row.
"""

from __future__ import annotations

import torch
from torch import nn

from .diagnostics import CollapseGuard
from .ema import EMATeacher, linear_tau

__all__ = ["TauSchedule", "TeacherBookkeeping", "COLLAPSE_ADVICE"]

COLLAPSE_ADVICE = (
    "the teacher now produces (nearly) the same target for every token. Try: a lower learning rate or a longer lr "
    "warm-up; a slower teacher (tau_start/tau_end closer to 1, e.g. 0.999-0.9999, or a longer tau ramp); more "
    "top_k layers with a per-layer norm on; loss_reduction='mean' where the loss is summed over D (the sum "
    "multiplies the effective step size by D); a lower mask_ratio. Set collapse_min_target_std=0 and "
    "collapse_min_pred_std=0 to disable this check."
)


class TauSchedule:
    """Config mixin: the linear tau ramp of a config with tau_start, tau_end and tau_ramp_steps, and the checks of
    those and of the collapse guard's fields."""

    tau_start: float
    tau_end: float
    tau_ramp_steps: float
    collapse_min_target_std: float
    collapse_min_pred_std: float
    collapse_warmup_steps: int
    collapse_patience: int

    def ramp_steps(self, total_steps: int) -> int:
        """The tau ramp length in steps: a fraction in (0, 1) is taken of the run's total_steps."""
        if 0.0 < self.tau_ramp_steps < 1.0:
            return max(1, int(round(self.tau_ramp_steps * total_steps)))
        return int(self.tau_ramp_steps)

    def tau_at(self, step: int, total_steps: int) -> float:
        return linear_tau(step, self.tau_start, self.tau_end, self.ramp_steps(total_steps))

    def check_teacher(self, fail, tau_fix: str) -> None:
        """The checks of the teacher's fields (tau ramp, collapse guard) every method's `validate` shares;
        `fail(field, problem, fix)` raises the config's error, `tau_fix` is the method's usual tau values."""
        for name in ("tau_start", "tau_end"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                fail(name, f"must lie in [0, 1], got {getattr(self, name)}", tau_fix)
        if self.tau_ramp_steps < 0:
            fail("tau_ramp_steps", f"must be >= 0, got {self.tau_ramp_steps}",
                 "use 0 (constant), a step count, or a fraction in (0, 1) of the run")
        for name in ("collapse_min_target_std", "collapse_min_pred_std", "collapse_warmup_steps"):
            if getattr(self, name) < 0:
                fail(name, f"must be >= 0, got {getattr(self, name)}", "use 0 to disable")
        if self.collapse_patience < 1:
            fail("collapse_patience", f"must be >= 1, got {self.collapse_patience}", "use 10")


class TeacherBookkeeping(nn.Module):
    """Module mixin for a student `self.backbone` with an EMA teacher. Call `init_teacher(cfg, method)` right
    after building the backbone (the teacher is a copy of it), `check_collapse(stats)` in training steps, and
    `step_hook(step, total_steps)` after each optimiser step."""

    def init_teacher(self, cfg, method: str) -> None:
        """The teacher, the tau of the last EMA step (for logging), the update count and the collapse guard."""
        self.teacher = EMATeacher(self.backbone, scope=cfg.ema_scope)
        self.tau = cfg.tau_start
        self.num_updates = 0  # EMA updates so far (set by step_hook)
        self.collapse_guard = CollapseGuard(
            {"target_std": cfg.collapse_min_target_std, "pred_std": cfg.collapse_min_pred_std},
            cfg.collapse_warmup_steps, cfg.collapse_patience, method=method, advice=COLLAPSE_ADVICE)

    def check_collapse(self, stats: dict) -> None:
        """In training after the guard's warm-up: count steps with target_std / pred_std below their minimums."""
        guard = self.collapse_guard
        if self.training and self.num_updates >= guard.warmup_steps and guard.minimums:
            target_std, pred_std = torch.stack([stats["target_std"], stats["pred_std"]]).tolist()  # one sync
            guard.check(self.num_updates, {"target_std": target_std, "pred_std": pred_std})

    # --- checkpoints: the EMA bookkeeping travels with the state dict -------------------------------------
    def get_extra_state(self) -> dict:
        return {"tau": float(self.tau), "num_updates": int(self.num_updates),
                "collapse_steps_below": int(self.collapse_guard.steps_below)}

    def set_extra_state(self, state: dict) -> None:
        self.tau = float(state["tau"])
        self.num_updates = int(state["num_updates"])
        self.collapse_guard.steps_below = int(state.get("collapse_steps_below", 0))  # absent in older checkpoints

    # --- after the optimiser step -----------------------------------------------------------------------
    def step_hook(self, step: int, total_steps: int) -> dict:
        """EMA update of the teacher with tau(step) (only `self.backbone` is averaged); returns {"tau": tau}."""
        self.tau = self.cfg.tau_at(step, total_steps)
        self.teacher.update(self.backbone, self.tau)
        self.num_updates = step + 1
        return {"tau": self.tau}

