"""DINO's self-distillation loss with centring and sharpening, and the teacher-temperature schedule.

What it implements (Caron et al. 2021, "Emerging Properties in Self-Supervised Vision Transformers",
arXiv 2104.14294, section 3.1, Algorithm 1, and the released `main_dino.py`):

- Student distribution of view v:  P_s(v) = softmax(g_s(v) / tau_s),            tau_s = 0.1
- Teacher distribution of global view i (centred and sharpened, no gradient):
                                   P_t(i) = softmax((g_t(i) - c) / tau_t),      tau_t warmed 0.04 -> 0.07
- Eq. (3): L = 1 / #pairs * sum_{i in global} sum_{v != i} mean_batch H(P_t(i), P_s(v)),
           H(a, b) = -sum_k a_k log b_k, over every (global teacher view i, different student view v) pair.
- Centre EMA (after the loss, no gradient):  c <- m c + (1 - m) mean_{batch, global views} g_t,  m = 0.9
- `teacher_temp_schedule`: linear warm-up of tau_t from `start` to `end` over `warmup_steps`, then constant.

Differences from the original
- The warm-up is a pure function of the optimiser step (the original holds one value per epoch from
  `np.linspace(0.04, 0.07, warmup_epochs)`, which reaches 0.07 at the last warm-up epoch); here tau_t
  reaches `end` exactly at `warmup_steps` and moves every step.
- Logits are cast to float32 inside the loss (the original relies on fp16 autocast's softmax upcast).
- Under DDP the batch centre is averaged over processes with `all_reduce`, as in the original.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["DINOLoss", "teacher_temp_schedule", "entropy"]


def teacher_temp_schedule(step: int, warmup_steps: int, start: float = 0.04, end: float = 0.07) -> float:
    """tau_t(step) = start + (end - start) * step / warmup_steps for step < warmup_steps, else end.

    DINO (section 3.1 / appendix): 0.04 -> 0.07 over the first 30 epochs. A teacher temperature above
    0.07 tends to make training unstable; lower it (e.g. 0.04 constant) if the teacher entropy stays near
    log(K) (uniform collapse)."""
    if warmup_steps < 0:
        raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}; use 0 for a constant teacher temperature")
    if start <= 0 or end <= 0:
        raise ValueError(f"teacher temperatures must be > 0, got start={start}, end={end}; DINO uses 0.04 -> 0.07")
    if warmup_steps == 0 or step >= warmup_steps:
        return float(end)
    step = max(step, 0)
    return float(start + (end - start) * step / warmup_steps)


def entropy(probs: Tensor, dim: int = -1) -> Tensor:
    """H(p) = -sum_k p_k log p_k (natural log; 0 log 0 = 0)."""
    return -(probs * torch.log(probs.clamp_min(torch.finfo(probs.dtype).tiny))).sum(dim)


class DINOLoss(nn.Module):
    """Cross-entropy between the centred, sharpened teacher and the student over all (global, other) view pairs.

    `loss = DINOLoss(out_dim)(student_out, teacher_out, teacher_temp)`:
      student_out: list of (B, K) logits, one per crop, the two (or n_global) global crops first;
      teacher_out: list of (B, K) teacher logits of the global crops, in the same order;
      teacher_temp: tau_t for this step (see `teacher_temp_schedule`).
    The centre `c` (buffer (1, K)) used in the loss is the one before this call; it is updated inside,
    without gradient, after the loss is computed.
    """

    def __init__(self, out_dim: int, student_temp: float = 0.1, center_momentum: float = 0.9):
        super().__init__()
        if out_dim < 1:
            raise ValueError(f"out_dim must be >= 1, got {out_dim}")
        if student_temp <= 0:
            raise ValueError(f"student_temp must be > 0, got {student_temp}; DINO uses 0.1")
        if not 0.0 <= center_momentum <= 1.0:
            raise ValueError(f"center_momentum must lie in [0, 1], got {center_momentum}; DINO uses 0.9")
        self.out_dim = out_dim
        self.student_temp = student_temp  # tau_s = 0.1 (DINO section 3.1)
        self.center_momentum = center_momentum  # m = 0.9 (DINO section 3.1, "m > 0 is a rate parameter")
        self.register_buffer("center", torch.zeros(1, out_dim))  # c, starts at 0 as in the original

    def _check(self, student_out, teacher_out) -> None:
        if not isinstance(student_out, (list, tuple)) or not isinstance(teacher_out, (list, tuple)):
            raise ValueError("DINOLoss takes lists of (B, K) logits: student_out (one per crop, global crops first) "
                             "and teacher_out (one per global crop)")
        if len(teacher_out) < 1 or len(student_out) < len(teacher_out):
            raise ValueError(f"need at least one teacher view and as many student views as teacher views, got "
                             f"{len(student_out)} student and {len(teacher_out)} teacher views")
        shape = tuple(teacher_out[0].shape)
        for name, views in (("student_out", student_out), ("teacher_out", teacher_out)):
            for v, x in enumerate(views):
                if x.dim() != 2 or x.shape[1] != self.out_dim or x.shape[0] != shape[0]:
                    raise ValueError(f"{name}[{v}] must be (B, K) = ({shape[0]}, {self.out_dim}), got {tuple(x.shape)}")

    def teacher_probs(self, teacher_logits: Tensor, teacher_temp: float) -> Tensor:
        """P_t = softmax((g_t - c) / tau_t) with the current centre; (B, K), no gradient."""
        return F.softmax((teacher_logits.detach().float() - self.center) / teacher_temp, dim=-1)

    def forward(self, student_out: list[Tensor], teacher_out: list[Tensor], teacher_temp: float) -> Tensor:
        self._check(student_out, teacher_out)
        if teacher_temp <= 0:
            raise ValueError(f"teacher_temp must be > 0, got {teacher_temp}; DINO uses 0.04 -> 0.07")
        log_p_student = [F.log_softmax(s.float() / self.student_temp, dim=-1) for s in student_out]  # each (B, K)
        p_teacher = [self.teacher_probs(t, teacher_temp) for t in teacher_out]  # each (B, K)
        total, pairs = 0.0, 0
        for i, q in enumerate(p_teacher):
            for v, log_p in enumerate(log_p_student):
                if v == i:  # the same view seen by both networks is skipped
                    continue
                total = total + (-(q * log_p).sum(dim=-1)).mean()  # Eq. (3): mean_b H(P_t(i), P_s(v))
                pairs += 1
        loss = total / pairs
        self.update_center(teacher_out)
        return loss

    @torch.no_grad()
    def update_center(self, teacher_out: list[Tensor]) -> None:
        """c <- m c + (1 - m) * mean of the teacher logits over the batch and the global views."""
        logits = torch.cat([t.detach().float() for t in teacher_out])  # (n_global * B, K)
        batch_center = logits.sum(dim=0, keepdim=True)  # (1, K)
        count = torch.tensor(float(logits.shape[0]), device=logits.device)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(batch_center)
            dist.all_reduce(count)
        batch_center = batch_center / count
        self.center.mul_(self.center_momentum).add_(batch_center, alpha=1.0 - self.center_momentum)
