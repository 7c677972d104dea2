"""`PretrainedModel`, what every loader of `data2vec.hub` returns, and `ImportReport`, what a HuggingFace
import did with each tensor.

Differences from `transformers`: one class for every family and modality; an attention mask (1 = real token)
becomes our bool `padding_mask` (True = pad), and RoBERTa-style positions are numbered over the non-pad tokens
as `transformers` numbers them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor, nn

from ..backbone import AudioTransformer, TextTransformer
from ..config import EncoderConfig


@dataclass
class ImportReport:
    """What the import did with the checkpoint's tensors; nothing is dropped without a name here."""

    missing: list[str] = field(default_factory=list)  # our parameters the checkpoint did not provide (left at init)
    unused: list[str] = field(default_factory=list)  # checkpoint tensors we did not import (e.g. pooler, lm_head)
    ignored_buffers: list[str] = field(default_factory=list)  # index buffers that hold no weights

    def __str__(self) -> str:
        return (f"missing (initialised here): {self.missing or 'none'}\n"
                f"unused (in the checkpoint, not imported): {self.unused or 'none'}")


class PretrainedModel(nn.Module):
    """An imported checkpoint, called like the `transformers` model.

    forward(input_ids, attention_mask, token_type_ids) for text, forward(pixel_values, bool_masked_pos)
    for vision or forward(input_values, attention_mask) for audio (attention_mask over samples, right-padded)
    -> final output (B, T, D) = `last_hidden_state`; with return_layers="block" also the list of
    block outputs = `hidden_states[1:]`, with "ffn" the FFN outputs (data2vec-text targets).
    `logits(...)` applies the imported head (if any) to the final output.
    """

    def __init__(self, backbone: nn.Module, head: nn.Module | None, family: str,
                 report: ImportReport | None = None, extra: dict | None = None):
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.family = family
        self.report = report or ImportReport()
        self.extra = extra or {}

    @property
    def encoder_config(self) -> EncoderConfig:
        return self.backbone.cfg

    def forward(self, input_ids: Tensor | None = None, attention_mask: Tensor | None = None,
                token_type_ids: Tensor | None = None, pixel_values: Tensor | None = None,
                bool_masked_pos: Tensor | None = None, return_layers: str | None = None,
                input_values: Tensor | None = None):
        if isinstance(self.backbone, AudioTransformer):
            if input_values is None and input_ids is not None and input_ids.is_floating_point():
                input_values = input_ids  # called positionally, model(waveforms)
            if input_values is None:
                raise ValueError(f"this {self.family} model is a speech encoder: pass input_values (B, S)")
            # attention_mask: 1 = real sample (HF, right padding) -> lengths (B,)
            lengths = None if attention_mask is None else attention_mask.long().sum(dim=1)
            return self.backbone(input_values, lengths, return_layers=return_layers)
        if isinstance(self.backbone, TextTransformer):
            if input_ids is None:
                raise ValueError(f"this {self.family} model is a text encoder: pass input_ids (B, T)")
            # attention_mask: 1 = real token (HF) -> padding_mask: True = pad (ours)
            padding_mask = None if attention_mask is None else attention_mask == 0
            # HF numbers RoBERTa positions over the tokens that are not <pad> (input_ids != padding_idx)
            cfg = self.backbone.cfg
            position_pad = input_ids == cfg.pad_id if cfg.position_offset > 0 else None
            x = self.backbone.embed(input_ids, position_pad, token_type_ids)  # (B, T, D)
            return self.backbone.encoder(x, padding_mask=padding_mask, return_layers=return_layers)
        if pixel_values is None and input_ids is not None and input_ids.is_floating_point():
            pixel_values = input_ids  # called positionally, model(images)
        if pixel_values is None:
            raise ValueError(f"this {self.family} model is a vision encoder: pass pixel_values (B, C, H, W)")
        mask = None if bool_masked_pos is None else bool_masked_pos.bool()
        return self.backbone(pixel_values, mask=mask, return_layers=return_layers)

    def logits(self, **inputs):
        if self.head is None:
            raise ValueError(f"this checkpoint has no task head (unused tensors: {self.report.unused or 'none'}); "
                             f"fine-tune one with `data2vec finetune --init FOLDER`")
        return self.head(self.forward(**inputs))
