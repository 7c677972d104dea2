"""CTC for character recognition: the loss over padded frames, and greedy decoding.

What it implements (Graves et al. 2006, "Connectionist Temporal Classification", sections 3-4; the fine-tuning
objective of wav2vec 2.0 and data2vec-audio, arXiv 2202.03555 section 5.2):
- the loss. With per-frame log-probabilities log y_t(k) over the V symbols (k = 0 the blank) of an utterance's
  T real frames and a target label sequence l, the collapsing map B removes repeated symbols, then blanks;
    p(l | x) = sum_{pi : B(pi) = l} prod_{t=1..T} y_t(pi_t),    loss = -log p(l | x)
  computed by `torch.nn.functional.ctc_loss` (the forward-backward recursion). T per utterance comes from the
  frame padding mask (True = padding; real frames first): input_lengths = the count of False per row.
  `reduction`: "sum" (HF's default, `ctc_loss_reduction`), "sentence" = sum / B (fairseq with `sentence_avg`,
  the LibriSpeech fine-tuning configs), "mean" = torch's: each loss / its target length, then the batch mean.
- greedy (best-path) decoding: pi*_t = argmax_k y_t(k) on the real frames, then B(pi*): collapse runs of the
  same symbol, drop blanks ("a a - a b" -> "a a b": a blank between two a's keeps both).
- what `data2vec finetune --task ctc` plugs into the fine-tuning loop: `CTCObjective` (the loss of a TaskModel's
  (logits, frame padding) output against the collate's targets) and `CTCScores` (greedy decoding of each
  utterance's frame logits, then CER and WER against the transcripts, in percent).

Differences from the original: none in the math; the log-softmax is taken in float32 whatever the logits' dtype
(fairseq and HF do the same), and an impossible alignment (more labels than frames allow) is +inf unless
`zero_infinity` (HF's `ctc_zero_infinity`; fairseq sets `zero_infinity: true`) turns it into 0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

REDUCTIONS = ("sum", "sentence", "mean")


def lengths_from_padding_mask(padding_mask: torch.Tensor) -> torch.Tensor:
    """(B, T) bool, True = padding, right-padded -> (B,) int64 real frames; ValueError if a row has a real frame
    after a padded one (CTC reads the first T_b frames of row b)."""
    if padding_mask.dtype != torch.bool or padding_mask.ndim != 2:
        raise ValueError(f"padding_mask must be a (B, T) bool tensor (True = padding), got {padding_mask.dtype} "
                         f"{tuple(padding_mask.shape)}")
    lengths = (~padding_mask).sum(dim=1)  # (B, T) -> (B,)
    suffix = torch.arange(padding_mask.shape[1], device=padding_mask.device) >= lengths.unsqueeze(1)  # (B, T)
    if not torch.equal(suffix, padding_mask):
        raise ValueError("padding_mask: padding must come after the real frames in every row (right padding)")
    return lengths


def ctc_loss(logits: torch.Tensor, padding_mask: torch.Tensor | None, targets: torch.Tensor,
             target_lengths: torch.Tensor, blank: int = 0, reduction: str = "sum",
             zero_infinity: bool = True) -> torch.Tensor:
    """CTC loss of frame logits (B, T, V) for targets (B, S) padded beyond `target_lengths` (B,).

    padding_mask (B, T) True = padding frame (None: every frame is real)."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    B, T, _ = logits.shape
    if padding_mask is None:
        input_lengths = torch.full((B,), T, dtype=torch.long, device=logits.device)  # (B,)
    else:
        input_lengths = lengths_from_padding_mask(padding_mask)  # (B,)
    log_probs = F.log_softmax(logits.float(), dim=-1).transpose(0, 1)  # (B, T, V) -> (T, B, V), as ctc_loss reads
    losses = F.ctc_loss(log_probs, targets, input_lengths, target_lengths, blank=blank,
                        reduction="mean" if reduction == "mean" else "none", zero_infinity=zero_infinity)
    if reduction == "mean":
        return losses
    return losses.sum() if reduction == "sum" else losses.sum() / B


def collapse(ids: list[int], blank: int = 0) -> list[int]:
    """The CTC map B: merge runs of the same symbol, then drop the blanks."""
    merged = [k for t, k in enumerate(ids) if t == 0 or k != ids[t - 1]]
    return [k for k in merged if k != blank]


def greedy_decode(logits: torch.Tensor, padding_mask: torch.Tensor | None = None, blank: int = 0) -> list[list[int]]:
    """Best-path decoding of frame scores (B, T, V) (logits or log-probabilities: the argmax is the same) over each
    row's real frames: one list of label ids per utterance."""
    best = logits.argmax(dim=-1)  # (B, T, V) -> (B, T)
    if padding_mask is None:
        lengths = [best.shape[1]] * best.shape[0]
    else:
        lengths = lengths_from_padding_mask(padding_mask).tolist()
    return [collapse(row[:n].tolist(), blank) for row, n in zip(best, lengths, strict=True)]


class CTCObjective:
    """loss_fn(outputs, batch) of `data2vec.finetune`: outputs = (logits (B, T, V), frame padding (B, T) or None)
    of a TaskModel with a CTCHead; batch carries `targets` (B, S) and `target_lengths` (B,) (`AudioCollate` with a
    vocabulary). reduction "sentence" = fairseq's fine-tuning (`sentence_avg`): the summed loss / B."""

    def __init__(self, reduction: str = "sentence", blank: int = 0):
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
        self.reduction, self.blank = reduction, blank

    def __call__(self, outputs, batch: dict) -> torch.Tensor:
        logits, padding = outputs
        return ctc_loss(logits, padding, batch["targets"], batch["target_lengths"], blank=self.blank,
                        reduction=self.reduction)


class CTCScores:
    """metric_fn(outputs, transcripts) of `data2vec.finetune`: outputs = one frame-logit array (T_i, V) per
    utterance (real frames only); -> {"cer": %, "wer": %} of the greedy decoding, corpus level."""

    def __init__(self, vocab):
        self.vocab = vocab

    def decode(self, frame_logits) -> list[str]:
        return [self.vocab.decode(collapse(torch.as_tensor(x).argmax(dim=-1).tolist(), self.vocab.blank_id))
                for x in frame_logits]

    def __call__(self, frame_logits, transcripts) -> dict[str, float]:
        from .error_rates import char_error_rate, word_error_rate

        hyps = self.decode(frame_logits)
        refs = [self.vocab.decode(self.vocab.encode(t)) for t in transcripts]  # the text as the vocabulary writes it
        return {"cer": 100.0 * char_error_rate(refs, hyps), "wer": 100.0 * word_error_rate(refs, hyps)}
