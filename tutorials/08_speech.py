# %% [markdown]
# # Speech: data2vec on raw waveforms, step by step
#
# data2vec's third modality. The objective is the one of the text and vision notebooks (a student regresses
# an EMA teacher's averaged top-K layers at masked positions); only the input encoder and the masking change:
#
# 1. **a tiny spoken-word data set written here**: each "word" a chord whose pitch names it, said by "speakers"
#    who shift the pitch and speed a little, written as 16 kHz WAV files in the keyword-folder layout that
#    `data2vec finetune --task keywords` reads (no download, no espeak-ng);
# 2. **the feature encoder's frame rate**: wav2vec 2.0's 7 convolutions turn 320 samples into one frame (20 ms);
#    the frame count by the conv formula, by hand, against the encoder's output;
# 3. **span masks**: fairseq's `compute_mask_indices` as `span_time_mask` (v1: p = 0.65, spans of 10 frames;
#    v2: p = 0.5, spans of 5, M clones), pictured and counted;
# 4. **a few v1 and v2 updates** through the project's one training loop (`engine.pretrain`) on random crops;
# 5. **the targets** recomputed by hand: the teacher's top-K FFN outputs, instance-normed over the real frames
#    of each utterance, averaged;
# 6. **a probe**: frozen features, mean-pooled over the real frames, scored by a k-NN and a linear probe against
#    the same encoder untrained.
#
# Every step is checked against a computation written in the notebook. **Cost**: about 20 seconds on one CPU core
# at the default size (60 updates per method); with `TUTORIAL_QUICK=1` (what the test suite runs, 12 updates)
# about 15 seconds. The same steps from
# the command line are at the end.

# %%
import math
import os
import tempfile
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import soundfile
import torch
from torch.utils.data import DataLoader

from data2vec import Data2Vec, Data2Vec2, Data2Vec2Config, Data2VecConfig
from data2vec.audio_embedding import conv_output_lengths
from data2vec.backbone import build_backbone
from data2vec.config import audio_preset
from data2vec.engine import PretrainConfig, pretrain
from data2vec.metrics import read_metrics
from data2vec.probe import extract_features, knn_classify, linear_probe
from data2vec.span_masks import span_time_mask
from data2vec.study.data import build_audio_data
from data2vec.targets import EPS
from tasks.audio import AudioCollate, audio_datasets

QUICK = os.environ.get("TUTORIAL_QUICK") == "1"  # the test suite runs a reduced size
RATE = 16_000  # Hz: the rate of every data2vec-audio / wav2vec 2.0 model
WORDS = ("go", "no", "up", "on")  # four keywords
SPEAKERS = {"train": 6 if QUICK else 12, "test": 3}  # speakers per split (disjoint)
STEPS = 12 if QUICK else 60  # pretraining updates of each method

torch.manual_seed(0)
torch.set_num_threads(1)  # tiny models: one thread is fastest and reproducible
START = time.time()
WORK = Path(tempfile.mkdtemp(prefix="speech-"))
print(f"torch {torch.__version__}; working in {WORK}; quick={QUICK}")

# %% [markdown]
# ## 1. A spoken-word data set, written here
#
# A word k is a chord at f_k = 220 + 110 k Hz and 1.5 f_k under a smooth envelope, 0.4 to 0.6 s long. A speaker
# shifts every pitch by a factor drawn once (up to 8 %) and says each word at a speed of their own; each recording
# gets a little noise. The files go to `<root>/<split>/<word>/<speaker>_nohash_0.wav`, one of the layouts of
# `tasks/audio/README.md`, so the library's readers (and the commands) take it as it is.

# %%
def say(word: int, pitch: float, seconds: float, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    f = (220 + 110 * word) * pitch
    chord = np.sin(2 * np.pi * f * t) + 0.6 * np.sin(2 * np.pi * 1.5 * f * t)
    return (0.3 * chord * np.hanning(len(t)) + 0.01 * rng.standard_normal(len(t))).astype(np.float32)


rng = np.random.default_rng(0)
root = WORK / "words"
for split, count in SPEAKERS.items():
    for s in range(count):
        pitch, seconds = rng.uniform(0.92, 1.08), rng.uniform(0.4, 0.6)  # this speaker's voice and pace
        for k, word in enumerate(WORDS):
            path = root / split / word / f"{split}{s:02d}_nohash_0.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            soundfile.write(path, say(k, pitch, seconds, rng), RATE)

splits = audio_datasets(root, "keywords")  # {split: (waveform (N,), label)} read back through soundfile
train_set, test_set = splits["train"], splits["test"]
print(f"classes {train_set.classes}; {len(train_set)} training and {len(test_set)} test recordings")
assert train_set.classes == sorted(WORDS) and len(train_set) == SPEAKERS["train"] * len(WORDS)

wave0, label0 = train_set[0]
fig, ax = plt.subplots(figsize=(8, 2))
ax.plot(np.arange(len(wave0)) / RATE, wave0.numpy(), lw=0.5)
ax.set(title=f"'{train_set.classes[label0]}', {len(wave0) / RATE:.2f} s", xlabel="seconds")
plt.show()

# %% [markdown]
# ## 2. The feature encoder: one frame per 20 ms
#
# The waveform is normalised per utterance (zero mean, unit variance over its real samples), then 7 convolutions
# with kernels (10, 3, 3, 3, 3, 2, 2) and strides (5, 2, 2, 2, 2, 2, 2) give a frame every 5 x 2^6 = 320 samples
# (20 ms), each seeing 400 samples (25 ms). Per layer, an input of L samples gives floor((L - k) / s) + 1 outputs.
# A batch is right-padded with its `lengths`; a frame is padding when its receptive field runs past the
# utterance's end, and padded frames never attend, are never masked, never a target.

# %%
def frames_by_hand(samples: int) -> int:
    for k, s in zip((10, 3, 3, 3, 3, 2, 2), (5, 2, 2, 2, 2, 2, 2), strict=True):
        samples = (samples - k) // s + 1
    return samples


enc_cfg = audio_preset("tiny")  # 2 blocks x 64 wide, a 32-channel feature encoder: seconds on a CPU
backbone = build_backbone(enc_cfg).eval()
stride = int(np.prod(enc_cfg.conv_strides))
field = 1 + sum((k - 1) * int(np.prod(enc_cfg.conv_strides[:i])) for i, k in enumerate(enc_cfg.conv_kernels))
print(f"stride {stride} samples = {1000 * stride / RATE:.0f} ms per frame, receptive field {field} samples "
      f"= {1000 * field / RATE:.0f} ms")
assert (stride, field) == (320, 400)

batch = AudioCollate()([train_set[i] for i in range(4)])  # {"waveform" (B, S), "lengths" (B,), "labels" (B,)}
with torch.no_grad():
    out = backbone(batch["waveform"], batch["lengths"])  # (B, T, D)
padding = backbone.frame_padding(batch["lengths"], out.shape[1])  # (B, T) True = padded frame
real_frames = [frames_by_hand(n) for n in batch["lengths"].tolist()]
print(f"samples per row {batch['lengths'].tolist()} -> real frames {real_frames}; output {tuple(out.shape)}")
assert out.shape[1] == frames_by_hand(batch["waveform"].shape[1])
assert (~padding).sum(1).tolist() == real_frames == conv_output_lengths(batch["lengths"], enc_cfg.conv_kernels,
                                                                         enc_cfg.conv_strides).tolist()

# %% [markdown]
# ## 3. Span masks
#
# data2vec-audio masks **spans of frames**, not single frames: every row draws
# num_spans = int(p T / L + u), u ~ U[0, 1), span starts without replacement, and masks L frames from each.
# Spans overlap, so fewer than p T frames end masked: for v1 (p = 0.65, L = 10) about half of them. With
# `require_same_masks` every row keeps the same masked count (the smallest over the batch; longer rows drop a
# random subset of their masked frames), so every row contributes equally to the loss. data2vec 2.0 draws
# M masks per utterance (p = 0.5, L = 5) and its student reads only the visible frames.

# %%
T, B = 250, 64  # 5 seconds of frames, 64 rows
g = torch.Generator().manual_seed(0)
free = span_time_mask(B, T, 0.65, 10, same_count=False, generator=g)  # (B, T) True = masked, counts left free
v1_mask = span_time_mask(B, T, 0.65, 10, generator=g)  # the same count in every row (require_same_masks)
v2_mask = span_time_mask(B, T, 0.5, 5, generator=g)


def expected_fraction(p: float, span: int, frames: int) -> float:
    """E[masked fraction] of one row: n = int(p T / L + u) starts drawn without replacement from the S = T - L + 1
    possible ones; frame t stays unmasked when none of the w_t starts that cover it is drawn."""
    starts = frames - span + 1
    base = p * frames / span
    total = 0.0
    for n, weight in ((int(base), 1 - (base - int(base))), (int(base) + 1, base - int(base))):
        for t in range(frames):
            w = min(t, starts - 1) - max(0, t - span + 1) + 1  # starts s with s <= t < s + L
            total += weight * (1 - math.comb(starts - w, n) / math.comb(starts, n)) / frames
    return total


expected = expected_fraction(0.65, 10, T)
print(f"v1 without trimming: {free.float().mean():.3f} of the frames masked, expected {expected:.3f}; trimmed to "
      f"the smallest count: {v1_mask.sum(1)[0].item()} of {T} in every row; v2: {v2_mask.sum(1)[0].item()} of {T}")
assert abs(free.float().mean().item() - expected) < 0.03  # 64 rows: the mean's spread is about 0.005
assert v1_mask.sum(1).unique().numel() == 1 and v2_mask.sum(1).unique().numel() == 1  # the same count per row
assert v1_mask.sum(1)[0] <= free.sum(1).max()

fig, axes = plt.subplots(2, 1, figsize=(9, 2.6))
for ax, mask, name in ((axes[0], v1_mask, "v1: p 0.65, spans of 10"), (axes[1], v2_mask, "v2: p 0.5, spans of 5")):
    ax.imshow(mask[:8].numpy(), aspect="auto", cmap="Greys", interpolation="nearest")
    ax.set(title=name, yticks=[], xlabel="frame")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 4. A few v1 and v2 updates through the one training loop
#
# `build_audio_data` gives the pretraining data a command would read (`data2vec pretrain --modality audio`):
# the training split only, each recording a random crop of at most `crop_seconds` drawn anew every epoch (seeded
# per sample by the loop), labels dropped, and a collate that pads into {"waveform", "lengths"}. The methods are
# the reduced-scale audio recipes of `Data2VecConfig.preset("audio", "tiny")` (v1: mask embedding, a teacher
# that averages the blocks only, instance-normed top-K targets, L2 loss scaled by 1 / sqrt(D)) and
# `Data2Vec2Config.preset("audio", "tiny")` (v2: a visible-only student with ALiBi, M clones, a 1-D conv
# decoder).

# %%
data, info, collate = build_audio_data(root, crop_seconds=0.4)
print(info)
assert info["utterances"] == len(train_set) and data[0].shape[0] <= 0.4 * RATE

methods = {"data2vec": Data2Vec(Data2VecConfig.preset("audio", "tiny")),
           "data2vec2": Data2Vec2(Data2Vec2Config.preset("audio", "tiny"))}
for name, method in methods.items():
    cfg = PretrainConfig(steps=STEPS, batch_size=8, lr=5e-4, warmup_steps=max(1, STEPS // 5), device="cpu",
                         quiet=True, health_every=max(1, STEPS // 3), health_probe_size=16, plots=False, seed=1)
    summary = pretrain(method, data, cfg, WORK / name, collate_fn=collate)
    rows = read_metrics(WORK / name / "metrics.jsonl")
    losses = [r["loss"] for r in rows]
    print(f"{name}: {len(rows)} updates, loss {losses[0]:.3f} -> {losses[-1]:.3f}, masked fraction "
          f"{rows[-1]['masked_fraction']:.2f}, health/effective_rank {rows[-1]['health/effective_rank']:.1f}")
    assert len(rows) == STEPS and all(np.isfinite(losses))

# %% [markdown]
# ## 5. The v1 targets, by hand
#
# The teacher reads the **unmasked** waveform. Its targets: the FFN output (before the residual and the
# LayerNorm) of each of the top K blocks, **instance-normed** per utterance and channel over the real frames,
# y_t = 1/K sum_l IN(a_t^l), with IN(a)_t = (a_t - mean) / sqrt(var + eps); no final norm. The student then
# regresses y_t at the masked frames (L2 summed over D, times 1 / sqrt(D), averaged over the masked frames).

# %%
v1 = methods["data2vec"].eval()
batch = collate([data[i] for i in range(3)])
batch["lengths"][1] -= 1500  # a shorter middle row: its last frames are padding
batch["waveform"][1, batch["lengths"][1]:] = 0.0
with torch.no_grad():
    targets = v1.forward_teacher(batch)  # (B, T, D)
    _, layers = v1.teacher(batch["waveform"], batch["lengths"], return_layers="ffn")  # depth x (B, T, D)
real = ~v1.backbone.frame_padding(batch["lengths"], targets.shape[1])  # (B, T) True = real frame
K = v1.cfg.top_k
for b in range(3):
    n = int(real[b].sum())
    normed = []
    for a in layers[-K:]:
        x = a[b, :n].double()  # (n, D): this utterance's real frames
        normed.append((x - x.mean(0)) / torch.sqrt(x.var(0, unbiased=False) + EPS))
    by_hand = torch.stack(normed).mean(0)  # (n, D)
    torch.testing.assert_close(targets[b, :n].double(), by_hand, atol=1e-4, rtol=1e-4)
print(f"targets {tuple(targets.shape)} = the average of the top {K} of {len(layers)} FFN outputs, instance-normed "
      f"over {real.sum(1).tolist()} real frames: checked by hand")

# %% [markdown]
# ## 6. A probe on frozen features
#
# Each recording becomes one vector: the backbone's final frames averaged over the real frames
# (`probe.extract_features` on {"waveform", "lengths", "labels"} batches). A weighted k-NN and a logistic
# regression fit on the training speakers and are scored on the unseen test speakers, for the pretrained v1
# encoder and for the same architecture untrained. On chords this clean even raw features separate the words,
# so the numbers check the pipeline, not what pretraining buys (tasks/audio/README.md: the same holds for the
# espeak-ng corpus's keywords; its sentences with CTC are the harder task).

# %%
def features(encoder, dataset):
    loader = DataLoader(dataset, batch_size=16, collate_fn=AudioCollate())
    return extract_features(encoder, loader, "mean", "cpu")  # (N, D), labels (N,)


results = {}
for name, encoder in (("untrained", build_backbone(enc_cfg)), ("data2vec (v1)", v1.backbone)):
    train_x, train_y = features(encoder, train_set)
    test_x, test_y = features(encoder, test_set)
    results[name] = (knn_classify(train_x, train_y, test_x, test_y, k=3)["accuracy"],
                     linear_probe(train_x, train_y, test_x, test_y, Cs=(0.1, 1.0), folds=2)["accuracy"])
    print(f"{name:14s} k-NN {results[name][0]:5.1f} %   linear {results[name][1]:5.1f} %   ({len(test_y)} test)")
assert all(0 <= acc <= 100 for pair in results.values() for acc in pair)
assert train_x.shape == (len(train_set), enc_cfg.dim)
print(f"total {time.time() - START:.0f} s")

# %% [markdown]
# ## The same from the command line
#
# ```bash
# python -m tasks.audio.corpus --out data/spoken-words          # the espeak-ng corpus (about a minute)
# data2vec pretrain --method data2vec --modality audio --preset mini --data data/spoken-words \
#     --steps 300 --batch-size 16 --out runs/d2v-speech
# data2vec probe --modality audio --data data/spoken-words --init runs/d2v-speech --out runs/probe-speech
# data2vec finetune --task keywords --data data/spoken-words --init runs/d2v-speech --out runs/kw
# data2vec finetune --task ctc --data data/spoken-words --init runs/d2v-speech --out runs/ctc
# ```
#
# A folder of your own recordings works too, in the keyword layout used above (`<split>/<word>/*.wav`), as do
# Speech Commands and LibriSpeech (`tasks/audio/README.md`). `--init` also takes a HuggingFace data2vec-audio
# folder (`data2vec convert --family data2vec-audio`).
