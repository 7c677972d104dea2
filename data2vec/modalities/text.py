"""Text: token ids with a padding mask; BERT / span corruption (v1), random masks and a 1-D decoder (v2).

data2vec v1 (arXiv 2202.03555, section 4.2 "Natural language processing"): the student reads BERT-corrupted
ids (15% selected, 80/10/10) or, as in the released config, spans of 4 `<mask>` tokens; the targets average
the FFN outputs (before the last residual) of the top 10 of 12 blocks, each layer-normed; Smooth L1 with beta
4 summed over D; the embeddings are shared with the teacher. data2vec 2.0 (arXiv 2212.07525; released
`base_text_only_task.yaml`): 8 random masks of 48% per sentence, instance-normed targets over all 12 blocks,
no final norm, no CLS, width-9 conv decoder.

Differences from the originals: see `v1.py` and `v2.py` (the teacher reads the unmasked input in v1; padded
rows in v2).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..decoders import ConvDecoder1d
from ..masking import bert_mask, random_mask, span_mask, special_tokens_mask
from .base import V2_SHORT_RUN, Fail, Modality

__all__ = ["TextModality", "TEXT"]


class TextModality(Modality):
    name = "text"

    v1_recipe = dict(
        text_masking="bert", mask_prob=0.15, random_prob=0.1, keep_prob=0.1,  # paper: BERT's 15 %, 80/10/10
        mask_id=50264, special_ids=(0, 1, 2, 3, 50264),  # RoBERTa's vocabulary: <s> <pad> </s> <unk> ... <mask>
        target="ffn",  # paper: the FFN output before the last residual
        layer_norm="layer", final_norm="none",  # paper: layer norm per layer, nothing after the average
        head="linear",  # paper (released config: Linear-GELU-Linear)
        loss_beta=4.0, loss_reduction="sum", loss_on="selected",  # paper: Smooth L1 beta 4, summed over D
        tau_start=0.999, tau_end=0.9999, tau_ramp_steps=100_000,  # paper: 0.999 -> 0.9999 over 100k updates
        ema_scope="blocks",  # paper: the embeddings are shared, only the blocks are averaged
    )
    v1_span_variant = dict(mask_prob=0.35)  # released config: spans of 4 (text_masking="span"), p = 0.35
    v1_reduced = dict(
        mask_id=4, special_ids=(0, 1, 2, 3, 4),  # our trained vocabularies put the specials at 0..4
        tau_start=0.99, tau_end=0.999,  # time constants of 100 -> 1000 steps, shorter than a CPU run
        tau_ramp_steps=0.3,  # ramp over the first 30 % of the run (released text: 300k of 1M)
        collapse_warmup_steps=200,  # short runs: check after 200 updates
        # instance norm per layer (over tokens, per channel: data2vec 2.0's text choice) instead of layer norm:
        # it removes the direction all tokens share from the targets, which left the tokens anisotropic and
        # SST-2 fine-tuning at chance at mini size (docs/differences.md)
        layer_norm="instance",
    )
    v2_encoder = {}  # the text preset unchanged: post-LN RoBERTa-style, learned positions, LN eps 1e-5
    v2_recipe = dict(  # base_text_only_task.yaml (12 x 768)
        num_masks=8,  # clone_batch = 8
        mask_ratio=0.48,  # mask_prob = 0.48, mask_length = 1 (random masking)
        mask_block=1,  # unused for text
        mask_adjust=0.0,  # unused for text
        prenet_depth=0,  # prenet_depth = 0
        top_k=12,  # average_top_k_layers = 12
        layer_norm="instance",  # instance_norm_target_layer = True
        final_norm="none",  # layer_norm_targets = instance_norm_targets = False
        loss_scale=1.0,  # loss_scale = 1
        cls_loss=0.0,  # no CLS token, no CLS loss
        decoder_dim=0,  # decoder_dim = 768 = D
        decoder_layers=5,  # decoder_layers = 5
        decoder_kernel=9,  # decoder_kernel = 9
        decoder_groups=1,  # decoder_groups = 1
        decoder_residual=False,  # decoder_residual = False
        decoder_projection_ratio=2.0,  # projection_layers = 2, projection_ratio = 2: 768 -> 1536 -> D
        decoder_dropout=0.1,  # decoder input_dropout = 0.1
        mask_noise_std=0.01,  # mask_noise_std = 0.01
        tau_start=0.9999,  # ema_decay = 0.9999
        tau_end=0.99999,  # ema_end_decay = 0.99999
        tau_ramp_steps=100_000,  # ema_anneal_end_step = 100k (of 1M updates)
        ema_scope="blocks",  # ema_encoder_only = True: embeddings shared with the student
    )
    v2_reduced = {
        "tiny": dict(V2_SHORT_RUN, num_masks=2, top_k=2, decoder_layers=2),  # 2 x 64: unit tests
        # 4 x 256: top 3 of 4 (5/6 rounded); 2 masks and a 2-block decoder (released: 8 and 5), the text study's
        # recipe: about 7x cheaper per update on one CPU core (benchmarks/studies/README.md, text)
        "mini": dict(V2_SHORT_RUN, top_k=3, num_masks=2, decoder_layers=2),
        "small": dict(V2_SHORT_RUN, top_k=3),  # 4 x 512: as mini
    }

    # --- both methods --------------------------------------------------------------------------------
    def read_batch(self, batch: dict, pad_id: int, method: str) -> dict:
        """Needs 'input_ids' (B, T); 'padding_mask' (B, T, True = pad) is derived from pad_id when absent."""
        if "input_ids" not in batch:
            raise ValueError(f"a text {method} batch needs 'input_ids' (B, T) and 'padding_mask' (B, T, True = pad)")
        if batch.get("padding_mask") is None:
            batch = {**batch, "padding_mask": batch["input_ids"] == pad_id}
        return batch

    def eligible(self, model: nn.Module, batch: dict, mask: Tensor) -> Tensor:
        """The real (not padded) tokens of the M clones of every sentence."""
        padding_mask = batch["padding_mask"]
        return (~padding_mask).sum() * (mask.shape[0] // padding_mask.shape[0])

    # --- data2vec v1 ---------------------------------------------------------------------------------
    @staticmethod
    def v1_top_k(depth: int, reduced: bool) -> int:
        """K: paper 10 of 12 blocks; reduced sizes the top 5/6, at least 2 (docs/design.md section 8)."""
        return min(depth, max(2, round(depth * (5 / 6)))) if reduced else round(depth * 10 / 12)

    def v1_values(self, encoder, reduced: bool, overrides: dict) -> dict:
        values = dict(self.v1_recipe, top_k=self.v1_top_k(encoder.depth, reduced))
        if overrides.get("text_masking") == "span":
            values.update(self.v1_span_variant)
        if reduced:
            values.update(self.v1_reduced)
        return values

    def check_v1(self, cfg, fail: Fail) -> None:
        vocab = cfg.encoder.vocab_size
        if not 0 <= cfg.mask_id < vocab:
            fail("mask_id", f"{cfg.mask_id} is outside the vocabulary [0, {vocab})",
                 "set it to the tokenizer's <mask> id (TextTokenizer.mask_id)")
        if cfg.mask_id == cfg.encoder.pad_id:
            fail("mask_id", "equals the padding id", "set mask_id and encoder.pad_id from the tokenizer")

    @staticmethod
    def corrupt(cfg, input_ids: Tensor, padding_mask: Tensor,
                generator: torch.Generator | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """v1 masking: -> (student ids, loss_mask bool (B, T), selected bool (B, T)); `cfg` a `Data2VecConfig`.
        BERT 80/10/10 or spans of `<mask>`; loss_on="mask_token" keeps only the `<mask>` positions in the loss."""
        special = special_tokens_mask(input_ids, cfg.all_special_ids(), padding_mask)  # (B, T) never select
        if cfg.text_masking == "bert":
            corrupted, selected = bert_mask(
                input_ids, mask_id=cfg.mask_id, vocab_size=cfg.encoder.vocab_size, special_mask=special,
                mask_prob=cfg.mask_prob, random_prob=cfg.random_prob, keep_prob=cfg.keep_prob,
                special_ids=cfg.all_special_ids(), generator=generator)
        else:
            corrupted, selected = span_mask(input_ids, mask_id=cfg.mask_id, special_mask=special,
                                            mask_prob=cfg.mask_prob, span=cfg.span_length, generator=generator)
        loss_mask = selected & (corrupted == cfg.mask_id) if cfg.loss_on == "mask_token" else selected
        return corrupted, loss_mask, selected

    def v1_masks(self, model: nn.Module, batch: dict, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
        corrupted, loss_mask, _ = self.corrupt(model.cfg, batch["input_ids"], batch["padding_mask"], generator)
        return corrupted, loss_mask

    def v1_student(self, model: nn.Module, student_input: Tensor, loss_mask: Tensor, batch: dict) -> Tensor:
        return model.backbone(student_input, batch["padding_mask"])  # (B, T, D) on the corrupted ids

    def v1_teacher_layers(self, model: nn.Module, batch: dict) -> tuple[list[Tensor], Tensor | None]:
        padding_mask = batch["padding_mask"]
        _, layers = model.teacher(batch["input_ids"], padding_mask, return_layers=model.cfg.target)  # K x (B, T, D)
        return layers, padding_mask

    # --- data2vec 2.0 --------------------------------------------------------------------------------
    def check_v2(self, cfg, fail: Fail) -> None:
        if cfg.cls_loss > 0:
            fail("cls_loss", "text encoders have no CLS token to regress", "set cls_loss=0 for text")

    def build_decoder(self, cfg) -> nn.Module:
        return ConvDecoder1d(cfg.encoder.dim, cfg.decoder_width, cfg.decoder_layers, cfg.decoder_kernel,
                             cfg.decoder_groups, cfg.decoder_residual, cfg.decoder_projection_ratio)

    def v2_masks(self, model: nn.Module, batch: dict, generator: torch.Generator | None) -> Tensor:
        """Exact-ratio random masks; padded tokens are never masked nor visible."""
        input_ids, padding_mask = batch["input_ids"], batch["padding_mask"]
        if bool(padding_mask.all(dim=1).any()):
            raise ValueError("a text row holds only padding; drop empty sequences from the batch")
        M = model.cfg.num_masks
        B, T = input_ids.shape
        return random_mask(B * M, T, model.cfg.mask_ratio, padding_mask=padding_mask.repeat_interleave(M, dim=0),
                           generator=generator, device=input_ids.device)

    def v2_teacher_layers(self, model: nn.Module, batch: dict) -> tuple[list[Tensor], Tensor | None]:
        input_ids, padding_mask = batch["input_ids"], batch["padding_mask"]
        if model.cfg.ema_scope == "blocks":  # released: the teacher's blocks on the student's embedding
            x = model.backbone.embed(input_ids, padding_mask)  # (B, T, D), with its dropout in training
            with torch.autocast(device_type=x.device.type, enabled=False):
                _, layers = model.teacher.module.encoder(x.float(), padding_mask=padding_mask, return_layers="ffn")
        else:
            _, layers = model.teacher(input_ids, padding_mask, return_layers="ffn")
        return layers, padding_mask

    def v2_student(self, model: nn.Module, batch: dict, mask: Tensor,
                   generator: torch.Generator | None) -> tuple[Tensor, Tensor | None]:
        input_ids, padding_mask = batch["input_ids"], batch["padding_mask"]
        padding = padding_mask.repeat_interleave(mask.shape[0] // input_ids.shape[0], dim=0)  # (B * M, T)
        visible = ~mask & ~padding  # (B * M, T) True = enters the student
        out = model.backbone.forward_visible(input_ids, visible, padding_mask)  # (B * M, K, D)
        decoded = model.decoder(model.decoder_input(out, visible, generator), padding)  # (B * M, T, D)
        return decoded, None


TEXT = TextModality()
