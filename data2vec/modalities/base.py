"""What a modality plug-in provides to data2vec v1 (`v1.py`) and data2vec 2.0 (`v2.py`).

The methods call these hooks and never test which modality they run on. A hook that needs the model's parts
(`backbone`, `teacher`, `cfg`) takes the model as its first argument; the plug-ins themselves hold no state.
Letters: B batch, M masks per sample (v2), N positions (tokens or patches), D width, K averaged blocks.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

__all__ = ["Modality", "V2_SHORT_RUN"]

Fail = Callable[[str, str, str], None]  # fail(field, problem, fix) raises the config's ValueError

# data2vec 2.0, every reduced preset of every modality (docs/design.md section 8)
V2_SHORT_RUN = dict(
    tau_start=0.99,  # time constant 100 steps at the start ...
    tau_end=0.999,  # ... 1000 at the end: shorter than a CPU run (0.9998 would be 5000)
    tau_ramp_steps=0.3,  # ramp over the first 30% of the run (released text: 100k of 1M = 10%, images 27%)
    collapse_warmup_steps=200,  # short runs: watch from update 200
)


class Modality:
    """One modality's plug-in; subclasses fill in every hook and table below."""

    name: str = ""
    # --- data2vec v1 recipe rows ---------------------------------------------------------------------
    v1_encoder: dict = {}  # encoder fields v1 needs whatever the preset says
    v1_recipe: dict = {}  # the paper's / released values (docs/design.md section 4)
    v1_reduced: dict = {}  # what tiny / mini / small change (docs/design.md section 8)
    # --- data2vec 2.0 recipe rows --------------------------------------------------------------------
    v2_encoder: dict = {}  # the released v2 encoder on top of the project's preset sizes
    v2_recipe: dict = {}  # the released values (docs/design.md section 5)
    v2_reduced: dict[str, dict] = {}  # preset name -> what that reduced size changes

    # --- both methods --------------------------------------------------------------------------------
    def read_batch(self, batch: dict, pad_id: int, method: str) -> dict:
        """The batch with its required keys checked (and completed, e.g. a padding mask)."""
        raise NotImplementedError

    def eligible(self, model: nn.Module, batch: dict, mask: Tensor) -> Tensor:
        """How many of the (B * M, N) positions of `mask` could have been masked (for `masked_fraction`)."""
        raise NotImplementedError

    # --- data2vec v1 ---------------------------------------------------------------------------------
    def v1_values(self, encoder, reduced: bool, overrides: dict) -> dict:
        """The method fields of a v1 preset for this `EncoderConfig` (before the caller's overrides): recipe
        row, K, reduced row."""
        raise NotImplementedError

    def check_v1(self, cfg, fail: Fail) -> None:
        """The modality's own checks of a `Data2VecConfig`."""

    def v1_masks(self, model: nn.Module, batch: dict, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
        """-> (the student's input, loss_mask bool (B, N), True = the target enters the loss)."""
        raise NotImplementedError

    def v1_student(self, model: nn.Module, student_input: Tensor, loss_mask: Tensor, batch: dict) -> Tensor:
        """The student's final output at every target position (B, N, D)."""
        raise NotImplementedError

    def v1_teacher_layers(self, model: nn.Module, batch: dict) -> tuple[list[Tensor], Tensor | None]:
        """(the teacher's block outputs `cfg.target`, each (B, N, D), at the target positions; padding mask)."""
        raise NotImplementedError

    # --- data2vec 2.0 --------------------------------------------------------------------------------
    def check_v2(self, cfg, fail: Fail) -> None:
        """The modality's own checks of a `Data2Vec2Config`."""

    def build_decoder(self, cfg) -> nn.Module:
        """The v2 decoder (pretraining only)."""
        raise NotImplementedError

    def v2_masks(self, model: nn.Module, batch: dict, generator: torch.Generator | None) -> Tensor:
        """bool (B * M, N), True = masked; row b * M + m is the m-th mask of sample b."""
        raise NotImplementedError

    def v2_teacher_layers(self, model: nn.Module, batch: dict) -> tuple[list[Tensor], Tensor | None]:
        """(every block's FFN output (B, N, D) on the clean input at the target positions; padding mask)."""
        raise NotImplementedError

    def v2_student(self, model: nn.Module, batch: dict, mask: Tensor,
                   generator: torch.Generator | None) -> tuple[Tensor, Tensor | None]:
        """(decoded (B * M, N, D), CLS prediction (B * M, D) or None): visible-only student, then decoder."""
        raise NotImplementedError
