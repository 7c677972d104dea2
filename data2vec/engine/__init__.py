"""The one pretraining loop for every method (data2vec v1 and 2.0, BERT, DINO), in named steps.

`pretrain(method, data, cfg, out_dir)` (loop.py) trains any `nn.Module` that follows `PretrainMethod`
(config.py); the engine never imports a method module. The modules, read in this order:
  config.py   `PretrainConfig` (every setting of the loop, validated), `PretrainMethod`, `TrainingAborted`
  state.py    `Run` (what a run holds between its steps), the stop flag of SIGINT/SIGTERM, the run's checkpoint
  setup.py    the start of a run: device, optimiser, schedule, resume or a fresh start, the data order
  health.py   the representation-health pass and its guard (diagnostics.py, docs/health.md)
  loop.py     `pretrain` and the steps of one update, the summary at the end
The pieces beside it: `optim.py` (AdamW groups), `sampling.py` (the seeded, sharded, resumable data order),
`metrics.py` (metrics.jsonl, plots), `checkpoint.py` (atomic checkpoints, RNG states), `distributed.py` (DDP),
`schedules.py` (learning rates).
"""

from ..diagnostics import LabelledProbe
from ..metrics import read_metrics, write_plots
from .config import PretrainConfig, PretrainMethod, TrainingAborted
from .loop import pretrain

__all__ = ["LabelledProbe", "PretrainConfig", "PretrainMethod", "TrainingAborted", "pretrain", "read_metrics",
           "write_plots"]
