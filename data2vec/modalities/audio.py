"""Speech: 16 kHz waveforms with their lengths; span masks over 20 ms frames (v1 and v2), a 1-D conv decoder (v2).

A batch is a dict {"waveform": float (B, S) right-padded samples, "lengths": long (B,) real samples per row};
`lengths` may be absent (every sample real). The frames and their padding mask follow from the conv length
formula (`audio_embedding.frame_padding_mask`); padded frames are never masked, never a target, never in a loss.

data2vec v1 (arXiv 2202.03555, section 4.3; released `audio/pretraining/base_librispeech.yaml`, docs/design.md
section 10): spans of 10 frames with p = 0.65, the same masked count in every row; masked frames become a learned
mask embedding after the feature projection; the teacher is the Transformer part only (`ema_scope="blocks"`: the
feature encoder, projection, positional conv and encoder LayerNorm are the student's, copied at every EMA step;
only the blocks are averaged) on the unmasked input; targets average the FFN outputs of the top 8 of 12 blocks,
each instance-normed over time, no final norm; L2 summed over D times 1/sqrt(D); tau 0.999 -> 0.9999 over 30k.

data2vec 2.0 (arXiv 2212.07525, section 4; released `v2/base_audio_only_task.yaml`): 8 span masks per
utterance (p = 0.5, length 5); the student keeps only the visible frames (`AudioTransformer.forward_visible`:
the positional conv runs over the clone with its masked frames zeroed, ALiBi biases of the original positions);
a 4-block 1-D conv decoder (kernel 7, 16 groups, width 384, residual); targets: the top 8 FFN outputs of the
teacher, instance norm per layer, no final norm; L2 times 1/sqrt(D), no CLS; everything but the feature encoder
averaged (the teacher reads the student's projected features, so its own feature encoder is never used).

Differences from the released code: the v1 teacher recomputes the (shared) feature encoder on the waveform
instead of reusing the student's tensor, and the v2 teacher recomputes the projected features without
gradients (same values, one more conv pass); instance norm excludes padded frames (fairseq includes them);
no layerdrop (0.05 released); masks from torch's RNG (`span_masks.py`).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..audio_embedding import check_lengths, conv_output_lengths
from ..decoders import ConvDecoder1d
from ..span_masks import span_time_mask
from .base import V2_SHORT_RUN, Fail, Modality

__all__ = ["AudioModality", "AUDIO"]


def frame_info(model: nn.Module, batch: dict) -> tuple[int, Tensor | None]:
    """(T frames of the padded batch, frame padding bool (B, T) True = pad, or None) of a read batch."""
    cfg = model.backbone.cfg
    T = int(conv_output_lengths(torch.tensor(batch["waveform"].shape[1]), cfg.conv_kernels, cfg.conv_strides))
    return T, model.backbone.frame_padding(batch.get("lengths"), T)


class AudioModality(Modality):
    name = "audio"

    v1_encoder = dict(use_mask_token=True)  # masked frames become the learned mask embedding
    v1_recipe = dict(
        mask_prob=0.65, span_length=10,  # released: mask_prob 0.65, mask_length 10, require_same_masks
        target="ffn",  # released: layer_results[i][2], the FFN output before the residual
        layer_norm="instance", final_norm="none",  # instance_norm_target_layer, nothing after the average
        head="linear",  # final_proj = Linear(D, D)
        loss_beta=0.0, loss_reduction="sum", loss_on="selected",  # loss_beta 0 = L2, summed over D
        tau_start=0.999, tau_end=0.9999, tau_ramp_steps=30_000,  # ema_decay 0.999 -> 0.9999 over 30k updates
        ema_scope="blocks",  # ema_transformer_only + ema_layers_only: only the blocks are averaged
    )
    v1_reduced = dict(
        tau_start=0.99, tau_end=0.999,  # time constants of 100 -> 1000 steps, shorter than a CPU run
        tau_ramp_steps=0.3,  # ramp over the first 30 % of the run
        collapse_warmup_steps=200,  # short runs: check after 200 updates
    )
    v2_encoder = dict(alibi=True, use_mask_token=False)  # released: ALiBi, learned scale per head; frames dropped
    v2_recipe = dict(  # base_audio_only_task.yaml (12 x 768)
        num_masks=8,  # clone_batch = 8
        mask_ratio=0.5,  # mask_prob = 0.5 (spans; about 0.4 of the frames end masked)
        mask_block=5,  # mask_length = 5: the span length in frames
        mask_adjust=0.05,  # mask_prob_adjust = 0.05 (set, but fairseq's audio masks never read it)
        prenet_depth=0,  # prenet_depth = 0
        top_k=8,  # average_top_k_layers = 8
        layer_norm="instance",  # instance_norm_target_layer = True
        final_norm="none",  # layer_norm_targets = False
        loss_scale=None,  # loss_scale null -> 1/sqrt(D)
        cls_loss=0.0,  # no CLS token
        decoder_dim=384,  # decoder_dim = 384
        decoder_layers=4,  # decoder_layers = 4
        decoder_kernel=7,  # decoder_kernel = 7
        decoder_groups=16,  # decoder_groups = 16
        decoder_residual=True,  # decoder_residual default True
        decoder_projection_ratio=0.0,  # one Linear(384, D)
        decoder_dropout=0.1,  # decoder input_dropout = 0.1
        mask_noise_std=0.01,  # mask_noise_std = 0.01
        tau_start=0.999,  # ema_decay = 0.999
        tau_end=0.99999,  # ema_end_decay = 0.99999
        tau_ramp_steps=75_000,  # ema_anneal_end_step = 75k (of 400k updates)
        ema_scope="encoder",  # ema_encoder_only = False (the feature encoder is shared: ema_local_encoder False)
    )
    v2_reduced = {
        "tiny": dict(V2_SHORT_RUN, num_masks=2, top_k=2, decoder_dim=32, decoder_layers=2, decoder_groups=8),
        # 4 x 256: top 3 of 4, half-width decoder (384/768), 4 clones instead of 8
        "mini": dict(V2_SHORT_RUN, num_masks=4, top_k=3, decoder_dim=128),
        "small": dict(V2_SHORT_RUN, top_k=4, decoder_dim=192),  # 6 x 384: the top 2/3, half-width decoder
    }

    # --- both methods --------------------------------------------------------------------------------
    def read_batch(self, batch: dict, pad_id: int, method: str) -> dict:
        """Needs 'waveform' (B, S); 'lengths' (B,) is optional (None or absent = every sample real)."""
        if "waveform" not in batch:
            raise ValueError(f"an audio {method} batch needs 'waveform' (B, S) float samples and 'lengths' (B,) "
                             "real samples per row")
        check_lengths(batch["waveform"], batch.get("lengths"))
        return batch

    def eligible(self, model: nn.Module, batch: dict, mask: Tensor) -> Tensor:
        """The real frames of the M clones of every utterance."""
        _, padding = frame_info(model, batch)
        real = mask.numel() // (mask.shape[0] // batch["waveform"].shape[0]) if padding is None else (~padding).sum()
        return torch.as_tensor(real, device=mask.device) * (mask.shape[0] // batch["waveform"].shape[0])

    # --- data2vec v1 ---------------------------------------------------------------------------------
    @staticmethod
    def v1_top_k(depth: int, reduced: bool) -> int:
        """K: released 8 of 12 blocks (2/3); reduced sizes the same 2/3, at least 2."""
        return min(depth, max(2, round(depth * 2 / 3)))

    def v1_values(self, encoder, reduced: bool, overrides: dict) -> dict:
        values = dict(self.v1_recipe, top_k=self.v1_top_k(encoder.depth, reduced),
                      loss_scale=1.0 / math.sqrt(encoder.dim))  # loss_scale null -> 1/sqrt(D)
        if reduced:
            values.update(self.v1_reduced)
        return values

    def check_v1(self, cfg, fail: Fail) -> None:
        if not 0.0 < cfg.mask_prob < 1.0:
            fail("mask_prob", f"must lie in (0, 1) for speech, got {cfg.mask_prob}", "the released value is 0.65")
        if cfg.loss_on != "selected":
            fail("loss_on", "speech has no <mask> token", "use loss_on='selected'")

    def v1_masks(self, model: nn.Module, batch: dict, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
        """The waveform itself (the mask embedding is applied after the projection) and the span mask (B, T)."""
        T, padding = frame_info(model, batch)
        waveform = batch["waveform"]
        mask = span_time_mask(waveform.shape[0], T, model.cfg.mask_prob, model.cfg.span_length,
                              padding_mask=None if padding is None else padding.cpu(), generator=generator)
        return waveform, mask.to(waveform.device)

    def v1_student(self, model: nn.Module, student_input: Tensor, loss_mask: Tensor, batch: dict) -> Tensor:
        return model.backbone(student_input, batch.get("lengths"), mask=loss_mask)  # (B, T, D)

    def v1_teacher_layers(self, model: nn.Module, batch: dict) -> tuple[list[Tensor], Tensor | None]:
        waveform, lengths = batch["waveform"], batch.get("lengths")
        _, layers = model.teacher(waveform, lengths, return_layers=model.cfg.target)  # K x (B, T, D), unmasked
        return layers, frame_info(model, batch)[1]

    # --- data2vec 2.0 --------------------------------------------------------------------------------
    def check_v2(self, cfg, fail: Fail) -> None:
        if cfg.cls_loss > 0:
            fail("cls_loss", "speech encoders have no CLS token to regress", "set cls_loss=0 for audio")
        if cfg.encoder.use_mask_token:
            fail("encoder", "use_mask_token=True: data2vec 2.0 drops masked frames instead of replacing them",
                 "set use_mask_token=False")
        if cfg.mask_block < 1:
            fail("mask_block", f"the span length (mask_block for audio) must be >= 1, got {cfg.mask_block}",
                 "use 5 (released)")

    def build_decoder(self, cfg) -> nn.Module:
        return ConvDecoder1d(cfg.encoder.dim, cfg.decoder_width, cfg.decoder_layers, cfg.decoder_kernel,
                             cfg.decoder_groups, cfg.decoder_residual, cfg.decoder_projection_ratio)

    def v2_masks(self, model: nn.Module, batch: dict, generator: torch.Generator | None) -> Tensor:
        """M span masks per utterance (clones adjacent), the same masked count in every row; pads never masked."""
        T, padding = frame_info(model, batch)
        M, B = model.cfg.num_masks, batch["waveform"].shape[0]
        padding = None if padding is None else padding.repeat_interleave(M, dim=0).cpu()  # (B * M, T)
        mask = span_time_mask(B * M, T, model.cfg.mask_ratio, model.cfg.mask_block, padding_mask=padding,
                              generator=generator)
        return mask.to(batch["waveform"].device)

    def v2_teacher_layers(self, model: nn.Module, batch: dict) -> tuple[list[Tensor], Tensor | None]:
        """The EMA teacher's positional conv, LN and blocks on the student's projected features (shared)."""
        x, padding = model.backbone.embed.features(batch["waveform"], batch.get("lengths"))  # (B, T, D)
        with torch.autocast(device_type=x.device.type, enabled=False):
            _, layers = model.teacher.module.encode(x.float(), padding, return_layers="ffn")  # depth x (B, T, D)
        return layers, padding

    def v2_student(self, model: nn.Module, batch: dict, mask: Tensor,
                   generator: torch.Generator | None) -> tuple[Tensor, Tensor | None]:
        T, padding = frame_info(model, batch)
        M = mask.shape[0] // batch["waveform"].shape[0]
        padding = None if padding is None else padding.repeat_interleave(M, dim=0)  # (B * M, T)
        visible = ~mask if padding is None else ~mask & ~padding  # (B * M, T) True = enters the student
        out = model.backbone.forward_visible(batch["waveform"], batch.get("lengths"), visible)  # (B * M, K, D)
        decoded = model.decoder(model.decoder_input(out, visible, generator), padding)  # (B * M, T, D)
        return decoded, None


AUDIO = AudioModality()
