"""Reference methods on the data2vec core: BERT masked language modelling, DINO and supervised training.

Every method shares data2vec's interface, so the training loop treats them alike:
`Config.preset(modality, name, **overrides)` -> `Method(cfg)`; `method.cfg`, `method.backbone` (the
student encoder that fine-tuning keeps); `loss, stats = method(batch)`; `method.step_hook(step,
total_steps) -> dict` right after each optimiser step (`data2vec.engine.PretrainMethod`). The commands find
them through the one method registry, `data2vec/methods.py`.
"""

from .bert import BertMLM, BertMLMConfig, MLMHead
from .dino import DINO, DINOConfig, DINOHead
from .dino_loss import DINOLoss, teacher_temp_schedule
from .multicrop import MultiCropTransform, collate_crops
from .supervised import Supervised, SupervisedConfig

__all__ = [
    "BertMLM", "BertMLMConfig", "DINO", "DINOConfig", "DINOHead", "DINOLoss", "MLMHead",
    "MultiCropTransform", "Supervised", "SupervisedConfig", "collate_crops", "teacher_temp_schedule",
]
