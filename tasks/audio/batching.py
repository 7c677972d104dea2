"""Batches of speech: waveforms of different lengths padded into one (B, N) tensor, with their lengths.

What it implements (fairseq `RawAudioDataset.collater` with `pad: true`, the fine-tuning setting, and HF's
`DataCollatorCTCWithPadding`): every waveform (N_i,) is optionally normalised over its own samples, then
zero-padded on the right to the longest in the batch, N = max_i N_i. A batch is a dict:
- `waveform` (B, N) float32, zeros after each utterance's end (sample n of row i is padding when n >= N_i);
- `lengths` (B,) int64, the real samples N_i (the model derives its frame padding from them);
- `labels` (B,) int64 when the items carry class ids (keyword spotting); nothing more when the items are bare
  waveforms (pretraining: labels unused);
- `transcripts` list of B strings when they carry text, and with a `CharVocab` also `targets` (B, S) int64, the
  character ids padded with the blank id 0, and `target_lengths` (B,) int64 (what `F.ctc_loss` reads).

Differences from the original: fairseq's pretraining collater (`pad: false`) crops every waveform of a batch to the
shortest one instead of padding; here cropping is a per-sample transform (`waveform.RandomCrop`, seeded per sample
by the training loop) and the collate only pads, so the same collate serves pretraining and fine-tuning. HF's
collator returns a sample-level `attention_mask`; here the lengths alone carry the padding, and no key is called
`padding_mask`, which means token padding everywhere else in the library.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .vocab import CharVocab
from .waveform import normalise


def pad_waveforms(waveforms: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """[(N_i,)] -> waveform (B, N) zero-padded on the right, lengths (B,) the real samples per row."""
    if not waveforms:
        raise ValueError("pad_waveforms: empty batch")
    if any(w.ndim != 1 for w in waveforms):
        shapes = [tuple(w.shape) for w in waveforms]
        raise ValueError(f"pad_waveforms: every waveform must be 1-D (N,), got shapes {shapes}; "
                         "fix: mix down to mono first (waveform.to_mono)")
    lengths = torch.tensor([w.shape[0] for w in waveforms], dtype=torch.long)  # (B,)
    batch = torch.zeros(len(waveforms), int(lengths.max()), dtype=torch.float32)  # (B, N)
    for i, w in enumerate(waveforms):
        batch[i, : w.shape[0]] = w
    return batch, lengths


def pad_targets(ids: Sequence[Sequence[int]], pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Label sequences [(S_i,)] -> targets (B, S) padded with `pad_id`, target_lengths (B,)."""
    target_lengths = torch.tensor([len(s) for s in ids], dtype=torch.long)  # (B,)
    targets = torch.full((len(ids), max(1, int(target_lengths.max()))), pad_id, dtype=torch.long)  # (B, S)
    for i, s in enumerate(ids):
        targets[i, : len(s)] = torch.as_tensor(list(s), dtype=torch.long)
    return targets, target_lengths


@dataclass
class AudioCollate:
    """Items (waveform (N_i,), label int | transcript str), or bare waveforms (N_i,) -> the batch dict of the module
    docstring."""

    normalize: bool = False  # zero mean, unit variance per utterance (data2vec-audio base: yes; fairseq `normalize`)
    vocab: CharVocab | None = None  # with transcripts: also encode them into `targets` / `target_lengths` for CTC

    def __call__(self, items: Sequence[tuple[torch.Tensor, int | str] | torch.Tensor]) -> dict:
        bare = all(isinstance(item, torch.Tensor) for item in items)
        waves = [item if bare else item[0] for item in items]
        waveform, lengths = pad_waveforms([normalise(w) if self.normalize else w for w in waves])
        batch = {"waveform": waveform, "lengths": lengths}
        if bare:
            return batch
        targets = [t for _, t in items]
        if all(isinstance(t, str) for t in targets):
            batch["transcripts"] = list(targets)
            if self.vocab is not None:
                batch["targets"], batch["target_lengths"] = pad_targets([self.vocab.encode(t) for t in targets],
                                                                        self.vocab.blank_id)
        elif all(isinstance(t, numbers.Integral) for t in targets):
            batch["labels"] = torch.tensor([int(t) for t in targets], dtype=torch.long)  # (B,)
        else:
            raise ValueError("AudioCollate: every item must carry an int label or every item a str transcript, got "
                             f"{sorted({type(t).__name__ for t in targets})}")
        return batch
