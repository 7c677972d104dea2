"""Images: patches of (B, C, H, W); BEiT block masks (v1), inverse block masks and a 2-D decoder (v2).

data2vec v1 (arXiv 2202.03555, section 4.1 "Computer vision"; released data2vec-vision): the student replaces
120 of 196 patches (BEiT blocks) by a learned mask embedding; the targets average the residual stream of the
top 6 of 12 blocks, layer-normed per layer and after the average; Smooth L1 with beta 2, mean over D; the
whole encoder is averaged into the teacher, tau constant 0.9998. data2vec 2.0 (arXiv 2212.07525; released
`base_images_only_task.yaml`): 16 inverse block masks of 80% per image, the student sees only the visible
patches, targets from the FFN outputs of the blocks after 2 "prenet" blocks, a CLS term, a 3 x 3 conv decoder.
The CLS token never gives targets (it is dropped from every teacher layer and from the v1 student output).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..decoders import ConvDecoder2d
from ..masking import block_masks, inverse_block_mask
from .base import V2_SHORT_RUN, Fail, Modality

__all__ = ["VisionModality", "VISION"]


class VisionModality(Modality):
    name = "vision"

    v1_encoder = dict(use_mask_token=True)  # the v1 student replaces masked patches by a mask embedding
    v1_recipe = dict(
        mask_ratio=120 / 196, min_block=0, max_block=None, mask_aspect=0.3,  # released: BEiT blocks, 120 of 196
        target="block",  # released: the residual stream at the end of each block
        layer_norm="layer", final_norm="layer",  # released: layer norm per layer and after the average
        head="linear",  # released: linear on the final-LN output
        loss_beta=2.0, loss_reduction="mean", loss_on="selected",  # released: Smooth L1 beta 2, mean over D
        tau_start=0.9998, tau_end=0.9998, tau_ramp_steps=0,  # released: constant 0.9998
        ema_scope="encoder",  # released: everything averaged
    )
    v1_reduced = dict(
        mask_ratio=0.6,  # about 120/196; min_block 0 = 8 % of the grid
        tau_start=0.99, tau_end=0.999,  # time constants of 100 -> 1000 steps, shorter than a CPU run
        tau_ramp_steps=0.3,  # ramp over the first 30 % of the run
        collapse_warmup_steps=200,  # short runs: check after 200 updates
    )
    v2_encoder = dict(  # the released image encoder, on top of config.VISION_PRESETS[name] (which gives the sizes)
        norm_first=False,  # released: post-LN blocks (layer_norm_first = False; its pre-LN branch is broken)
        layer_scale=None,  # released: no layer scale
        drop_path=0.0,  # released: no drop path in pretraining
        final_norm=False,  # released: post-LN blocks end in a norm, no final norm
        position="sincos",  # released: fixed 2-D sin-cos positions on the patches, none on CLS
        embed_norm=True,  # released: LayerNorm after the gather and the CLS prepend (before the prenet blocks)
        cls_init_std=1.0,  # released: CLS ~ N(0, 1) (init_extra_token_zero = False)
        init="bert",  # released: init_bert_params, normal(0.02) on linears
        qkv_bias=True, k_bias=True,  # released: qkv_bias = True
        norm_eps=1e-6,  # released: norm_eps = 1e-6
        dropout=0.0, attn_dropout=0.0,  # released: encoder_dropout = attention_dropout = 0
        use_mask_token=False,  # masked patches are dropped, not replaced
    )
    v2_recipe = dict(  # base_images_only_task.yaml (ViT-B/16, 224 px)
        num_masks=16,  # clone_batch = 16
        mask_ratio=0.8,  # mask_prob = 0.8
        mask_block=3,  # mask_length = 3
        mask_adjust=0.07,  # mask_prob_adjust = 0.07
        prenet_depth=2,  # prenet_depth = 2 (+ depth 10 shared blocks = 12)
        top_k=10,  # average_top_k_layers = 10: all shared blocks
        layer_norm="instance",  # instance_norm_target_layer = True
        final_norm="layer",  # layer_norm_targets = True
        loss_scale=None,  # loss_scale unset -> 1/sqrt(D)
        cls_loss=0.01,  # cls_loss = 0.01
        decoder_dim=0,  # decoder_dim = 768 = D
        decoder_layers=6,  # decoder_layers = 6
        decoder_kernel=3,  # decoder_kernel = 3
        decoder_groups=16,  # decoder_groups = 16
        decoder_residual=True,  # decoder_residual default True
        decoder_projection_ratio=0.0,  # one Linear(768, D)
        decoder_dropout=0.0,  # decoder input_dropout = 0
        mask_noise_std=0.01,  # mask_noise_std = 0.01
        tau_start=0.9998,  # ema_decay = 0.9998
        tau_end=0.99999,  # ema_end_decay = 0.99999
        tau_ramp_steps=100_000,  # ema_anneal_end_step = 100k (of 375k updates)
        ema_scope="encoder",  # ema_encoder_only = False: patch embedding, CLS, input LN and blocks averaged
    )
    v2_reduced = {
        "tiny": dict(V2_SHORT_RUN,  # 2 x 64, 4 x 4 grid: unit tests
                     num_masks=2,  # few clones: a test step in milliseconds
                     mask_block=2,  # 3 x 3 would be 9 of 16 cells; 2 x 2 fits the grid
                     prenet_depth=0, top_k=2,  # two blocks: both are targets
                     decoder_layers=2),  # a small decoder for a small model
        "mini": dict(V2_SHORT_RUN,  # 4 x 256, 8 x 8 grid: CPU in minutes
                     mask_block=2,  # block area scaled with the grid: 9/196 of 64 cells ~ 3 -> 2 x 2
                     prenet_depth=1, top_k=3),  # 2/12 of the depth rounded; the other 3 (3/4) targets
        "small": dict(V2_SHORT_RUN,  # 6 x 384, 8 x 8 grid: one GPU
                      mask_block=2,  # as mini (same grid)
                      prenet_depth=1, top_k=5),  # 1 prenet block, the other 5 (5/6) are targets
    }

    # --- both methods --------------------------------------------------------------------------------
    def read_batch(self, batch: dict, pad_id: int, method: str) -> dict:
        if "images" not in batch:
            raise ValueError(f"a vision {method} batch needs 'images' (B, C, H, W)")
        return batch

    def eligible(self, model: nn.Module, batch: dict, mask: Tensor) -> Tensor:
        """Every patch of every row."""
        return torch.tensor(mask.numel(), device=mask.device)

    # --- data2vec v1 ---------------------------------------------------------------------------------
    @staticmethod
    def v1_top_k(depth: int, reduced: bool) -> int:
        """K: paper 6 of 12 blocks; reduced sizes the top 3/4, at least 2 (docs/design.md section 8)."""
        return min(depth, max(2, round(depth * (3 / 4)))) if reduced else round(depth * 6 / 12)

    def v1_values(self, encoder, reduced: bool, overrides: dict) -> dict:
        values = dict(self.v1_recipe, top_k=self.v1_top_k(encoder.depth, reduced))
        if reduced:
            values.update(self.v1_reduced)
        return values

    @staticmethod
    def block_mask(model: nn.Module, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """v1 masking: BEiT blocks, bool (B, N) row-major patch mask, True = masked (`model` a v1 `Data2Vec`)."""
        cfg = model.cfg
        rows, cols = model.backbone.embed.grid_of(images)
        num_masked, min_block = cfg.block_sizes(rows * cols)
        masks = block_masks(images.shape[0], rows, cols, num_masked, min_block=min_block, max_block=cfg.max_block,
                            aspect=(cfg.mask_aspect, 1 / cfg.mask_aspect), generator=generator)  # (B, rows, cols)
        return masks.flatten(1).to(images.device)  # (B, rows, cols) -> (B, N)

    def v1_masks(self, model: nn.Module, batch: dict, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
        """The images themselves (the mask embedding is applied inside the patch embedding) and the mask."""
        return batch["images"], self.block_mask(model, batch["images"], generator)

    def v1_student(self, model: nn.Module, student_input: Tensor, loss_mask: Tensor, batch: dict) -> Tensor:
        return model.backbone(student_input, loss_mask)[:, 1:]  # (B, 1 + N, D) -> (B, N, D): CLS dropped

    def v1_teacher_layers(self, model: nn.Module, batch: dict) -> tuple[list[Tensor], Tensor | None]:
        _, layers = model.teacher(batch["images"], return_layers=model.cfg.target)  # the teacher never sees the mask
        return [layer[:, 1:] for layer in layers], None  # K x (B, N, D), patch tokens only

    # --- data2vec 2.0 --------------------------------------------------------------------------------
    def check_v2(self, cfg, fail: Fail) -> None:
        enc = cfg.encoder
        if enc.position not in ("sincos", "learned"):
            fail("encoder", f"position={enc.position!r} cannot run the visible-only student",
                 "use position='sincos' (released) or 'learned'")
        if enc.use_mask_token:
            fail("encoder", "use_mask_token=True: data2vec 2.0 drops masked patches instead of replacing them",
                 "set use_mask_token=False")
        grid = enc.grid_size
        if not 1 <= cfg.mask_block <= grid:
            fail("mask_block", f"a {cfg.mask_block} x {cfg.mask_block} block does not fit the {grid} x {grid} "
                 f"patch grid", f"use 1..{grid} (3 on 14 x 14, 2 on 8 x 8)")
        if cfg.mask_adjust < 0:
            fail("mask_adjust", f"must be >= 0, got {cfg.mask_adjust}", "use 0.07")
        if int(enc.num_patches * (1 - cfg.mask_ratio)) < 1:
            fail("mask_ratio", f"{cfg.mask_ratio} keeps no patch of {enc.num_patches}", "lower mask_ratio")

    def build_decoder(self, cfg) -> nn.Module:
        return ConvDecoder2d(cfg.encoder.dim, cfg.decoder_width, cfg.decoder_layers, cfg.decoder_kernel,
                             cfg.decoder_groups, cfg.decoder_residual)

    def v2_masks(self, model: nn.Module, batch: dict, generator: torch.Generator | None) -> Tensor:
        """Inverse block masks: kept k x k blocks, an exact kept count per row."""
        cfg, images = model.cfg, batch["images"]
        rows, cols = model.backbone.embed.grid_of(images)
        return inverse_block_mask(images.shape[0] * cfg.num_masks, rows, cols, cfg.mask_ratio, block=cfg.mask_block,
                                  adjust=cfg.mask_adjust, generator=generator, device=images.device)

    def v2_teacher_layers(self, model: nn.Module, batch: dict) -> tuple[list[Tensor], Tensor | None]:
        _, layers = model.teacher(batch["images"], return_layers="ffn")  # depth x (B, 1 + N, D)
        return [layer[:, 1:] for layer in layers], None  # depth x (B, N, D): CLS dropped

    def v2_student(self, model: nn.Module, batch: dict, mask: Tensor,
                   generator: torch.Generator | None) -> tuple[Tensor, Tensor | None]:
        images = batch["images"]
        grid = model.backbone.embed.grid_of(images)
        out = model.backbone.forward_visible(images, ~mask)  # (B * M, 1 + K, D)
        cls_pred = out[:, 0]  # (B * M, D): the student's final CLS output, no head
        decoded = model.decoder(model.decoder_input(out[:, 1:], ~mask, generator), grid)  # (B * M, N, D)
        return decoded, (cls_pred if model.cfg.cls_loss > 0 else None)


VISION = VisionModality()
