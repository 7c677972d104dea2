# %% [markdown]
# # data2vec, BERT and DINO on one encoder
#
# This project trains four self-supervised objectives on one Transformer core, so that they differ only in
# what they predict and how they are scored:
#
# * **data2vec** (Baevski et al. 2022, [arXiv 2202.03555](https://arxiv.org/abs/2202.03555)): from a masked
#   input, regress the EMA teacher's average of its top-K layers, computed on the clean input;
# * **data2vec 2.0** ([arXiv 2212.07525](https://arxiv.org/abs/2212.07525)): the same kind of target, but the
#   student encodes only the visible tokens, M masked copies per sample share one teacher pass, and a small
#   convolutional decoder fills the masked positions;
# * **BERT** (Devlin et al. 2019): from the same kind of masked input, classify the original *token* at each
#   masked position (a softmax over the vocabulary); no teacher;
# * **DINO** (Caron et al. 2021, [arXiv 2104.14294](https://arxiv.org/abs/2104.14294)): no masking at all;
#   the student sees several crops of an image and matches, with a cross-entropy, the teacher's centred and
#   sharpened softmax over K "prototypes" computed on the two large crops.
#
# What you will do: build the methods on **one encoder configuration** with the **same initial weights**,
# run each objective on **one batch**, and recompute every loss by hand from the tensors the method exposes
# (its masks, targets and predictions), asserting that it equals the method's own loss. Then the section
# "What the studies measured" reads the project's committed result files and draws them.
#
# **Cost.** A few seconds on a CPU: nothing is trained (default size and `TUTORIAL_QUICK=1` alike).
# The files to read next to it: `data2vec/v1.py`, `data2vec/v2.py`, `baselines/bert.py`,
# `baselines/dino.py`, `baselines/dino_loss.py`.

# %%
import json
import os
import tempfile
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F

import data2vec
from baselines.bert import BertMLM, BertMLMConfig
from baselines.dino import DINO, DINOConfig
from baselines.multicrop import MultiCropTransform, collate_crops
from data2vec.targets import build_targets
from data2vec.v1 import Data2Vec, Data2VecConfig
from data2vec.v2 import Data2Vec2, Data2Vec2Config
from tasks.text.tokenizer import train_tokenizer
from tasks.vision import DIGITS_MEAN, DIGITS_STD, load_digits_dataset

START = time.time()
torch.set_num_threads(1)
QUICK = os.environ.get("TUTORIAL_QUICK") == "1"  # the test suite runs a reduced size
BATCH = 4 if QUICK else 8  # sentences / images in the one batch (nothing is trained: both sizes take seconds)
print(f"QUICK={QUICK}: batch {BATCH}")

# %% [markdown]
# ## 1. One text batch, one encoder, three text objectives
#
# A byte-level BPE tokenizer trained on a few sentences the notebook writes, and one padded batch
# (`padding_mask` True = padding).

# %%
sentences = [
    "the teacher sees the whole sentence while the student sees a masked copy",
    "bert predicts the missing words from a softmax over the vocabulary",
    "data2vec regresses the average of the top layers of an exponential moving average teacher",
    "the second version encodes only the visible tokens and decodes the rest with convolutions",
    "dino matches the softmax of a centred and sharpened teacher across crops of an image",
    "all of them share one transformer encoder so that only the objective changes",
    "a masked position is where the student must use the context around it",
    "the same recipe works for speech images and text",
]
work = Path(tempfile.mkdtemp(prefix="d2v_methods_"))
(work / "corpus.txt").write_text("\n".join(sentences * 4) + "\n", encoding="utf-8")
tok = train_tokenizer(work / "corpus.txt", kind="bpe", vocab_size=400, min_frequency=1)
encoded = tok.encode_batch(sentences[:BATCH])  # lists of ids, <s> ... </s>
T = max(len(e) for e in encoded)
input_ids = torch.tensor([e + [tok.pad_id] * (T - len(e)) for e in encoded])  # (B, T), right-padded
padding_mask = input_ids == tok.pad_id  # (B, T) bool, True = padding
batch = {"input_ids": input_ids, "padding_mask": padding_mask}
print(f"batch {tuple(input_ids.shape)}, real tokens per row {(~padding_mask).sum(1).tolist()}")

# %% [markdown]
# **One configuration, one initialisation.** Each method's config is the `tiny` text preset with the
# tokenizer's vocabulary and special ids. Every constructor builds its student encoder first
# (`build_backbone(cfg.encoder)`), so seeding the global RNG just before each constructor gives the three
# students the same initial weights; we check both claims.

# %%
shared = dict(vocab_size=tok.vocab_size, pad_id=tok.pad_id, mask_id=tok.mask_id, special_ids=tok.special_ids)
configs = {
    "data2vec": Data2VecConfig.preset("text", "tiny", **shared),
    "data2vec 2.0": Data2Vec2Config.preset("text", "tiny", vocab_size=tok.vocab_size, pad_id=tok.pad_id),
    "BERT": BertMLMConfig.preset("text", "tiny", **shared),
}
classes = {"data2vec": Data2Vec, "data2vec 2.0": Data2Vec2, "BERT": BertMLM}
methods = {}
for name, cfg in configs.items():
    torch.manual_seed(0)
    methods[name] = classes[name](cfg).eval()  # eval: no dropout, so every recomputation below is exact
encoders = {name: cfg.encoder for name, cfg in configs.items()}
assert encoders["data2vec"] == encoders["data2vec 2.0"] == encoders["BERT"], "the encoder configs differ"
reference = methods["data2vec"].backbone.state_dict()
for name, method in methods.items():
    state = method.backbone.state_dict()
    assert state.keys() == reference.keys() and all(torch.equal(state[k], reference[k]) for k in state), name
enc = encoders["data2vec"]
print(f"one encoder: {enc.depth} blocks x D={enc.dim}, {enc.heads} heads, post-LN, vocabulary {enc.vocab_size}; "
      "identical initial weights in all three students")
for name, method in methods.items():
    extra = sum(p.numel() for n, p in method.named_parameters() if not n.startswith("backbone.") and p.requires_grad)
    print(f"  {name:>12}: + {extra:,} trainable parameters outside the encoder "
          f"({', '.join(sorted({n.split('.')[0] for n, _ in method.named_parameters()} - {'backbone'}))})")

# %% [markdown]
# ### data2vec (v1)
#
# Student input: BERT's 80/10/10 corruption of 15% of the real tokens. Teacher input: the clean sentence.
# Target at a selected position $t$: $y_t = \frac{1}{K}\sum_{l=L-K+1}^{L}\mathrm{IN}(a^l)_t$ with $a^l$ the FFN
# output of block $l$ and IN the instance norm over the tokens (the reduced presets; the paper: layer norm).
# Prediction: a linear head on the student's output. Loss: Smooth L1 with $\beta = 4$, summed over the $D$
# features and averaged over the $M$ selected tokens:
#
# $$\mathcal{L} = \frac{1}{M}\sum_{t}\sum_{d=1}^{D} \begin{cases} \tfrac{1}{2}(p_{td} - y_{td})^2/\beta &
# |p_{td} - y_{td}| \le \beta \\ |p_{td} - y_{td}| - \tfrac{1}{2}\beta & \text{otherwise.}\end{cases}$$
#
# The named steps of the method (`make_masks` -> `forward_student` -> `forward_teacher` -> `forward_loss`)
# expose each tensor.

# %%
v1 = methods["data2vec"]
with torch.no_grad():
    student_ids, v1_mask = v1.make_masks(v1.read_batch(batch), torch.Generator().manual_seed(1))  # (B, T) each
    v1_student = v1.forward_student(student_ids, v1_mask, batch)  # (B, T, D)
    v1_targets = v1.forward_teacher(batch)  # (B, T, D)
    v1_loss, v1_pred, v1_target = v1.forward_loss(v1_student, v1_targets, v1_mask)  # (M, D) each
    v1_model_loss, _ = v1(batch, generator=torch.Generator().manual_seed(1))  # the whole step, same masks
    _, ffn = v1.teacher(input_ids, padding_mask, return_layers="ffn")  # L x (B, T, D) on the clean input

# the target by hand: instance norm of each top layer over the real tokens of its sentence, then the mean
real = (~padding_mask)[..., None].float()  # (B, T, 1) 1 = real token


def instance_norm_by_hand(a: torch.Tensor) -> torch.Tensor:
    mu = (a * real).sum(1, keepdim=True) / real.sum(1, keepdim=True)  # (B, 1, D)
    var = (((a - mu) ** 2) * real).sum(1, keepdim=True) / real.sum(1, keepdim=True)  # (B, 1, D)
    return (a - mu) / torch.sqrt(var + 1e-5)  # (B, T, D)


K = configs["data2vec"].top_k
y_hand = sum(instance_norm_by_hand(a) for a in ffn[-K:]) / K  # (B, T, D)
assert torch.allclose(y_hand[v1_mask], v1_target, atol=1e-5), "data2vec targets differ from the hand computation"
d = v1_pred - y_hand[v1_mask]  # (M, D)
beta = configs["data2vec"].loss_beta
v1_hand = torch.where(d.abs() <= beta, 0.5 * d**2 / beta, d.abs() - 0.5 * beta).sum(1).mean()  # sum D, mean M
print(f"data2vec: {int(v1_mask.sum())} selected tokens; loss by hand {v1_hand:.5f} | forward_loss {v1_loss:.5f} "
      f"| model(batch) {v1_model_loss:.5f}")
assert torch.allclose(v1_hand, v1_loss, atol=1e-4) and torch.allclose(v1_hand, v1_model_loss, atol=1e-4)

# %% [markdown]
# ### data2vec 2.0
#
# Student input: the **visible tokens only** (52% of each sentence's real tokens), of $M$ independently masked
# copies of every sentence (`num_masks`; the tiny preset uses 2, the released text recipe 8). Teacher: one
# pass per sentence (not per copy) over the clean input; its blocks run on the student's embedding output, as
# the released code does for text. Target: $y = \frac{1}{K}\sum_l \mathrm{IN}(f^l)$, the same form as above.
# Prediction: the conv decoder's output at the masked positions, after the visible tokens are put back in place
# and the masked slots filled with small noise. Loss: the squared error summed over $D$ (scale $s = 1$ for text),
# averaged over all masked positions of all copies:
#
# $$\mathcal{L} = \frac{1}{|\text{masked}|}\sum_{(r, t)\ \text{masked}} s\,\lVert p_{rt} - y_{b(r), t}\rVert^2$$
#
# where row $r$ is copy $r \bmod M$ of sentence $b(r) = \lfloor r / M \rfloor$.

# %%
v2 = methods["data2vec 2.0"]
M = configs["data2vec 2.0"].num_masks
g = torch.Generator().manual_seed(2)
with torch.no_grad():
    v2_mask = v2.make_masks(batch, g)  # (B * M, T) bool, True = masked
    v2_targets, _ = v2.forward_teacher(batch)  # (B, T, D), once per sentence
    v2_decoded, _ = v2.forward_student(batch, v2_mask, g)  # (B * M, T, D)
    v2_loss = v2.forward_loss(v2_decoded, None, v2_targets, None, v2_mask)
    v2_model_loss, _ = v2(batch, generator=torch.Generator().manual_seed(2))  # same masks and noise
    x = v2.backbone.embed(input_ids, padding_mask)  # (B, T, D): the student's embedding (shared with the teacher)
    _, v2_ffn = v2.teacher.module.encoder(x, padding_mask=padding_mask, return_layers="ffn")  # L x (B, T, D)
K2 = configs["data2vec 2.0"].top_k
y2_hand = sum(instance_norm_by_hand(a) for a in v2_ffn[-K2:]) / K2  # (B, T, D)
assert torch.allclose(y2_hand.masked_fill(padding_mask[..., None], 0), v2_targets, atol=1e-5)
y2_rows = y2_hand.repeat_interleave(M, dim=0)  # (B, T, D) -> (B * M, T, D): copy r of sentence r // M
v2_hand = ((v2_decoded[v2_mask] - y2_rows[v2_mask]) ** 2).sum() * v2.loss_scale() / v2_mask.sum()
pad_rows = padding_mask.repeat_interleave(M, dim=0)  # (B * M, T)
visible = ~v2_mask & ~pad_rows  # (B * M, T) True = the student encoded it
print(f"data2vec 2.0: {M} copies x {BATCH} sentences; masked {int(v2_mask.sum())} of {int((~pad_rows).sum())} "
      f"real token slots ({v2_mask.sum() / (~pad_rows).sum():.0%}), student encodes {int(visible.sum())}")
print(f"  loss by hand {v2_hand:.5f} | forward_loss {v2_loss:.5f} | model(batch) {v2_model_loss:.5f}")
assert not (v2_mask & pad_rows).any(), "a padded slot was masked"
assert torch.allclose(v2_hand, v2_loss, rtol=1e-5) and torch.allclose(v2_hand, v2_model_loss, rtol=1e-5)

# %% [markdown]
# ### BERT
#
# Student input: the same kind of 80/10/10 corruption. No teacher: the target is the **original token id**
# $x_t$. Prediction: the MLM head $h = \mathrm{LN}(\mathrm{GELU}(W x + b))$, logits $h E^\top + b_{out}$ with
# $E$ the input embedding (tied). Loss: cross-entropy over the vocabulary, averaged over the $M$ selected
# tokens:
#
# $$\mathcal{L} = \frac{1}{M}\sum_t \Big(\log\sum_{v} e^{z_{tv}} - z_{t, x_t}\Big).$$
#
# BERT draws its masks from the global RNG, so the hand computation and the model call are seeded alike.

# %%
bert = methods["BERT"]
torch.manual_seed(3)
with torch.no_grad():
    corrupted, bert_mask_, _ = bert.corrupt(input_ids, padding_mask)  # (B, T) ids, (B, T) True = selected
    logits = bert.head(bert.backbone(corrupted, padding_mask=padding_mask)[bert_mask_])  # (M, V)
    labels = input_ids[bert_mask_]  # (M,) the original tokens
    bert_hand = (torch.logsumexp(logits, dim=1) - logits[torch.arange(len(labels)), labels]).mean()
    torch.manual_seed(3)
    bert_model_loss, bert_stats = bert(batch)
assert bert.head.decoder.weight is bert.backbone.embed.tokens.weight, "the decoder is not tied to the embedding"
print(f"BERT: {int(bert_mask_.sum())} selected tokens over a vocabulary of {logits.shape[1]}; loss by hand "
      f"{bert_hand:.5f} | model(batch) {bert_model_loss:.5f} (ln V = {np.log(logits.shape[1]):.3f}: a random "
      "model is about uniform)")
assert torch.allclose(bert_hand, bert_model_loss, atol=1e-5)

# %% [markdown]
# **Who sees what.** One picture per method: the rows are the sentences (data2vec 2.0: its B x M copies),
# the columns the token positions; dark = the positions that enter the loss, grey = padding.


# %%
def mask_picture(loss_mask: torch.Tensor, pad: torch.Tensor) -> np.ndarray:
    """0 = visible, 1 = in the loss, 0.35 = padding: one (rows, T) image."""
    return np.where(pad.numpy(), 0.35, loss_mask.float().numpy())


fig, axes = plt.subplots(1, 3, figsize=(14, 2.6), gridspec_kw={"width_ratios": [1, 1, 1]})
for ax, (name, m, pad) in zip(axes, (("data2vec: selected 15%", v1_mask, padding_mask),
                                     (f"data2vec 2.0: {M} copies, 48% masked", v2_mask, pad_rows),
                                     ("BERT: selected 15%", bert_mask_, padding_mask)), strict=True):
    ax.imshow(mask_picture(m, pad), cmap="Greys", vmin=0, vmax=1, aspect="auto", interpolation="nearest")
    ax.set_title(name, fontsize=9)
    ax.set_xlabel("token position")
axes[0].set_ylabel("row")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 2. One image batch: data2vec vs DINO on one vision encoder
#
# BERT has no image version and DINO no text version, so DINO meets data2vec on images: 8 x 8 digits
# (scikit-learn), 2 x 2 patches, the `tiny` vision encoder. DINO's reduced presets drop the vision presets'
# layer scale (see baselines/dino.py), so we build data2vec with `layer_scale=None` as well; the only
# difference left is data2vec's learned mask embedding (DINO never masks).

# %%
digits = load_digits_dataset("train")
images = torch.from_numpy(np.asarray(digits.images[:BATCH], dtype=np.float32))[:, None]  # (B, 8, 8) -> (B, 1, 8, 8)
vision = dict(image_size=8, patch_size=2, in_chans=1)
torch.manual_seed(0)
dino = DINO(DINOConfig.preset("vision", "tiny", **vision)).eval()
torch.manual_seed(0)
v1_vision = Data2Vec(Data2VecConfig.preset("vision", "tiny", **vision, layer_scale=None)).eval()
a_cfg, b_cfg = v1_vision.cfg.encoder, dino.cfg.encoder
assert a_cfg.replace(use_mask_token=False) == b_cfg, "the vision encoders differ beyond the mask embedding"
common = {k: v for k, v in dino.backbone.state_dict().items()}
assert all(torch.equal(v1_vision.backbone.state_dict()[k], v) for k, v in common.items()), "different initial weights"
print(f"one vision encoder: {b_cfg.depth} blocks x D={b_cfg.dim}, 4 x 4 patches; DINO head: K = {dino.cfg.out_dim} "
      f"prototypes, crops: 2 global {b_cfg.image_size} px + {dino.cfg.n_local} local {dino.cfg.local_size} px")

# %% [markdown]
# **DINO's crops.** `MultiCropTransform` turns each image into 2 global crops (random resized crops of 40-100%
# of the area) and `n_local` small local crops (5-40%), with flips off for digits.

# %%
torch.manual_seed(4)
crop_tf = MultiCropTransform(global_size=b_cfg.image_size, local_size=dino.cfg.local_size, n_local=dino.cfg.n_local,
                             mean=DIGITS_MEAN, std=DIGITS_STD, flip=False)
crop_batch = collate_crops([crop_tf(img) for img in images])  # {"crops": [(B, 1, 8, 8) x 2, (B, 1, 4, 4) x n]}
crops = crop_batch["crops"]
fig, axes = plt.subplots(2, 1 + len(crops), figsize=(2 * (1 + len(crops)), 4))
for row in range(2):
    axes[row, 0].imshow(images[row, 0], cmap="gray")
    axes[row, 0].set_title("image" if row == 0 else "", fontsize=9)
    for v, c in enumerate(crops):
        axes[row, v + 1].imshow(c[row, 0], cmap="gray")
        if row == 0:
            axes[row, v + 1].set_title(f"{'global' if v < 2 else 'local'} {v + 1} ({c.shape[-1]} px)", fontsize=9)
for ax in axes.flat:
    ax.set_xticks([])
    ax.set_yticks([])
plt.tight_layout()
plt.show()

# %% [markdown]
# ### DINO
#
# Student: every crop through the backbone, the CLS token through the DINO head, $g_s(v)$ (B, K) per crop.
# Teacher (EMA copy of backbone + head): the global crops only, $g_t(i)$. Softmaxes: the student's with
# temperature $\tau_s = 0.1$; the teacher's **centred** (subtract the running mean $c$ of its logits) and
# **sharpened** ($\tau_t = 0.04$ at the start, well below $\tau_s$):
#
# $$P_s(v) = \mathrm{softmax}(g_s(v)/\tau_s), \qquad P_t(i) = \mathrm{softmax}((g_t(i) - c)/\tau_t),$$
#
# $$\mathcal{L} = \frac{1}{\#\text{pairs}}\sum_{i \in \text{global}}\ \sum_{v \ne i}\ \frac{1}{B}\sum_b
# -\sum_k P_t(i)_{bk}\,\log P_s(v)_{bk}.$$
#
# The centre starts at 0 and is updated after each loss ($c \leftarrow m c + (1-m)\,\overline{g_t}$), so we call
# the method once first, to have a non-zero centre in the check.

# %%
with torch.no_grad():
    dino(crop_batch)  # one call: the centre becomes 0.1 x the batch mean of the teacher logits
    center = dino.loss_fn.center.clone()  # (1, K), the centre the next loss uses
    tau_s, tau_t = dino.cfg.student_temp, dino.teacher_temp_at(int(dino.steps_done))
    student_logits = dino._logits(dino.backbone, dino.head, crops)  # n_crops x (B, K)
    t = dino.teacher.module
    teacher_logits = dino._logits(t["backbone"], t["head"], crops[: dino.cfg.n_global])  # 2 x (B, K)
    dino_model_loss, dino_stats = dino(crop_batch)
p_teacher = [F.softmax((g - center) / tau_t, dim=-1) for g in teacher_logits]  # centred and sharpened
log_p_student = [F.log_softmax(g / tau_s, dim=-1) for g in student_logits]
pairs = [(i, v) for i in range(len(p_teacher)) for v in range(len(log_p_student)) if v != i]
dino_hand = sum(-(p_teacher[i] * log_p_student[v]).sum(-1).mean() for i, v in pairs) / len(pairs)
print(f"DINO: {len(pairs)} (teacher view, student view) pairs, tau_s {tau_s}, tau_t {tau_t}, |c| = "
      f"{center.norm():.4f}; loss by hand {dino_hand:.5f} | model(batch) {dino_model_loss:.5f} "
      f"(ln K = {np.log(dino.cfg.out_dim):.3f})")
assert center.abs().sum() > 0, "the centre should be non-zero after one call"
assert torch.allclose(dino_hand, dino_model_loss, atol=1e-5)
entropy_hand = torch.stack([-(q * q.clamp_min(1e-38).log()).sum(-1) for q in p_teacher]).mean()
assert torch.allclose(entropy_hand, dino_stats["teacher_entropy"], atol=1e-4)
print(f"teacher entropy {entropy_hand:.3f} (ln K = uniform collapse; near 0 = one prototype per image)")

# %% [markdown]
# For contrast, data2vec on the **same images**: the student sees each image with a block of patches replaced by
# the mask embedding; the target is the layer-normed average of the teacher's top block outputs at the masked
# patches; Smooth L1 with $\beta = 2$, averaged over tokens *and* features (the released vision recipe).

# %%
with torch.no_grad():
    vis_input, vis_mask = v1_vision.make_masks({"images": images}, torch.Generator().manual_seed(5))  # (B, N) mask
    vis_out = v1_vision.forward_student(vis_input, vis_mask, {"images": images})  # (B, N, D)
    _, blocks = v1_vision.teacher(images, return_layers="block")  # L x (B, 1 + N, D)
    vis_loss, vis_pred, vis_target = v1_vision.forward_loss(vis_out, v1_vision.forward_teacher({"images": images}),
                                                            vis_mask)
vc = v1_vision.cfg
y_vis = build_targets([b[:, 1:] for b in blocks], vc.top_k, layer_norm=vc.layer_norm, final_norm=vc.final_norm)
assert torch.allclose(y_vis[vis_mask], vis_target, atol=1e-5)
dv = vis_pred - vis_target  # (M, D)
vis_hand = torch.where(dv.abs() <= vc.loss_beta, 0.5 * dv**2 / vc.loss_beta, dv.abs() - 0.5 * vc.loss_beta).mean()
print(f"data2vec (vision): {int(vis_mask.sum())} of {vis_mask.numel()} patches masked; loss by hand {vis_hand:.5f} "
      f"| forward_loss {vis_loss:.5f}")
assert torch.allclose(vis_hand, vis_loss, atol=1e-5)

# %% [markdown]
# ### Side by side
#
# | | student input | teacher input | predicts | loss |
# |---|---|---|---|---|
# | data2vec | masked input (*) | clean input | mean of top-K normed teacher layers | Smooth L1 (text: sum over D) |
# | data2vec 2.0 | visible tokens of M masked copies | clean, once a sample | the same, via a decoder | L2, sum over D |
# | BERT | masked input (80/10/10) | (no teacher) | the original token id | cross-entropy over the vocabulary |
# | DINO | every crop (global + local) | the 2 global crops | the teacher's softmax over K | cross-entropy |
#
# (*) text: BERT's 80/10/10 corruption; images: the mask embedding in blocks of patches. DINO's teacher softmax is
# centred and sharpened; the losses are at the masked positions (DINO: over the pairs of different views).
#
# The table of this batch's numbers, each recomputed above:

# %%
rows = [("data2vec (text)", v1_loss, v1_hand, int(v1_mask.sum()), "selected tokens"),
        ("data2vec 2.0 (text)", v2_loss, v2_hand, int(v2_mask.sum()), "masked slots of B x M copies"),
        ("BERT (text)", bert_model_loss, bert_hand, int(bert_mask_.sum()), "selected tokens"),
        ("data2vec (vision)", vis_loss, vis_hand, int(vis_mask.sum()), "masked patches"),
        ("DINO (vision)", dino_model_loss, dino_hand, len(pairs), "view pairs")]
print(f"{'method':<20} {'loss':>9} {'by hand':>9}  positions")
for name, loss, hand, count, what in rows:
    print(f"{name:<20} {float(loss):9.4f} {float(hand):9.4f}  {count} {what}")
print("(the scales differ by construction: never compare loss values across methods, only their runs' features)")

# %% [markdown]
# ## 3. What the studies measured
#
# The committed results live in `benchmarks/results/` of the repository. From a source checkout (an editable
# install, `pip install -e .`) the package's folder tells us where the repository is:
# `Path(data2vec.__file__).resolve().parents[1]`. An installed wheel has no `benchmarks/`; then this section
# says so and the rest of the notebook still runs.

# %%
ROOT = Path(data2vec.__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
print("repository root:", ROOT, "| results folder found:", RESULTS.is_dir())


def load_json(path: Path) -> dict | None:
    if not path.is_file():
        print(f"{path} not found (not a source checkout?): skipped")
        return None
    return json.loads(path.read_text(encoding="utf-8"))


# %% [markdown]
# ### data2vec vs data2vec 2.0 on digits (`benchmarks/results/v1_vs_v2.json`)
#
# The study pretrains each method on the digits for the same number of updates with several seeds and measures
# the frozen features along the way (k-NN and linear-probe accuracy on the test digits). The table is the
# file's summary; the plot its curves, mean over seeds, against updates and against seconds (data2vec 2.0 costs
# more per update: it encodes M copies).

# %%
study = load_json(RESULTS / "v1_vs_v2.json")
if study is not None:
    print("command:", study["command"])
    print(f"{'method':<10} {'k-NN %':>14} {'linear %':>9} {'seconds':>8}")
    for method, s in study["summary"].items():
        if isinstance(s, dict):
            print(f"{method:<10} {s['final_knn_mean']:7.1f} +- {s['final_knn_std']:4.1f} "
                  f"{s['final_linear_mean']:9.1f} {s['seconds_mean']:8.0f}")
    fig, axes = plt.subplots(1, 2, figsize=(11, 3))
    for method in sorted({r["method"] for r in study["runs"]}):
        runs = [r for r in study["runs"] if r["method"] == method]
        steps = [p["step"] for p in runs[0]["curve"]]
        knn = np.array([[p["knn"] for p in r["curve"]] for r in runs])  # (seeds, points)
        secs = np.array([[p["seconds"] for p in r["curve"]] for r in runs]).mean(0)
        for ax, xs in zip(axes, (steps, secs), strict=True):
            ax.plot(xs, knn.mean(0), label=f"{method} ({len(runs)} seeds)")
            ax.fill_between(xs, knn.mean(0) - knn.std(0), knn.mean(0) + knn.std(0), alpha=0.2)
        # the file's summary is the last point of these curves: check it
        assert abs(knn[:, -1].mean() - study["summary"][method]["final_knn_mean"]) < 1e-6
    axes[0].set_xlabel("update")
    axes[1].set_xlabel("seconds (CPU)")
    for ax in axes:
        ax.set_ylabel("k-NN accuracy (%)")
        ax.legend(fontsize=8)
    plt.tight_layout()
    plt.show()

# %% [markdown]
# ### Cost per update of every method (`benchmarks/results/methods.json`)
#
# Seconds per pretraining update through `data2vec pretrain` (data, forward, backward, optimiser, EMA) at the
# `mini` preset, in float32 and in bf16; `masked_views_per_s` counts data2vec 2.0's M copies, which is the fair
# throughput for it.

# %%
cost = load_json(RESULTS / "methods.json")
if cost is not None:
    machine = cost["machine"]
    print(f"{cost['what']}\npreset {cost['preset']}, batch {cost['batch_size']}, {machine['cpu']} "
          f"(bf16 flags {machine['bf16_flags']}), {machine['threads']} thread(s)")
    print(f"{'method/modality/precision':<26} {'s/update':>9} {'samples/s':>10} {'masked views/s':>15} {'x fp32':>7}")
    for key, r in cost["results"].items():
        print(f"{key:<26} {r['median_s_per_update']:9.3f} {r['samples_per_s']:10.1f} {r['masked_views_per_s']:15.1f} "
              f"{r['speedup_over_fp32']:7.2f}")
        assert abs(r["median_s_per_update"] - float(np.median(r["times_s"]))) < 1e-9  # the summary is the median
    keys = list(cost["results"])
    fig, ax = plt.subplots(figsize=(8, 2.8))
    ax.bar(keys, [cost["results"][k]["median_s_per_update"] for k in keys],
           color=["tab:blue" if "/text/" in k else "tab:orange" for k in keys])
    ax.set_ylabel("median s per update")
    ax.set_yscale("log")
    ax.tick_params(axis="x", labelsize=7, rotation=60)
    plt.tight_layout()
    plt.show()

# %% [markdown]
# ### The equal-budget studies (`benchmarks/results/studies/<dataset>/summary.json`)
#
# Each study trains every arm (a method, or random initialisation) for the same budget, evaluates it with one
# or more protocols (k-NN, linear probe, fine-tuning) over several seeds, and writes a `summary.json` of the form
# `{"rows": [{"arm", "protocol", "mean", "std", "runs": [...]}, ...]}`. The function below finds every such file,
# prints its table and draws one bar plot per data set. When a study has not been committed yet, it says so.


# %%
def format_table(rows: list[dict]) -> str:
    """The rows of a summary.json as a fixed-width text table, one line per (arm, protocol)."""
    for row in rows:
        missing = {"arm", "protocol", "mean", "std", "runs"} - set(row)
        if missing:
            raise ValueError(f"a summary row lacks {sorted(missing)}: {row}")
    arm_w = max([3] + [len(r["arm"]) for r in rows])
    proto_w = max([8] + [len(r["protocol"]) for r in rows])
    lines = [f"{'arm':<{arm_w}}  {'protocol':<{proto_w}}  {'mean':>7}  {'std':>6}  runs"]
    for r in rows:
        runs = ", ".join(f"{v:.1f}" for v in r["runs"])
        lines.append(f"{r['arm']:<{arm_w}}  {r['protocol']:<{proto_w}}  {r['mean']:7.2f}  {r['std']:6.2f}  "
                     f"{len(r['runs'])}: [{runs}]")
    return "\n".join(lines)


def plot_study(name: str, rows: list[dict]) -> None:
    """One bar per arm, grouped by protocol, with the std as error bars and every run as a dot."""
    protocols = list(dict.fromkeys(r["protocol"] for r in rows))
    arms = list(dict.fromkeys(r["arm"] for r in rows))
    width = 0.8 / len(arms)
    fig, ax = plt.subplots(figsize=(max(5, 1.6 * len(protocols) * len(arms) ** 0.5), 3))
    for j, arm in enumerate(arms):
        for i, protocol in enumerate(protocols):
            row = next((r for r in rows if r["arm"] == arm and r["protocol"] == protocol), None)
            if row is None:
                continue
            x = i + (j - (len(arms) - 1) / 2) * width
            ax.bar(x, row["mean"], width, yerr=row["std"], capsize=3, color=f"C{j}", label=arm if i == 0 else None)
            ax.scatter([x] * len(row["runs"]), row["runs"], color="black", s=8, zorder=3)
    ax.set_xticks(range(len(protocols)), protocols)
    ax.set_ylabel("score")
    ax.set_title(f"study: {name}")
    ax.legend(fontsize=7)
    plt.tight_layout()
    plt.show()


def show_studies(results: Path) -> list[str]:
    """Every results/studies/*/summary.json: its table printed and plotted. Returns the data set names found."""
    paths = sorted(results.glob("studies/*/summary.json"))
    if not paths:
        print(f"no study summaries under {results / 'studies'} yet (the equal-budget studies write them)")
    for path in paths:
        rows = json.loads(path.read_text(encoding="utf-8"))["rows"]
        print(f"== {path.parent.name} ({path}) ==")
        print(format_table(rows))
        plot_study(path.parent.name, rows)
    return [p.parent.name for p in paths]


found = show_studies(RESULTS)
print("studies found:", found)

# %% [markdown]
# **The function, tested on a fake summary.** So that this section works before the real files land, we write
# a small made-up `summary.json` (clearly fake numbers) into a temporary folder and check the table line by line
# against what we expect.

# %%
with tempfile.TemporaryDirectory() as tmp:
    fake = Path(tmp) / "studies" / "fake-digits"
    fake.mkdir(parents=True)
    fake_rows = [
        {"arm": "data2vec", "protocol": "knn", "mean": 80.0, "std": 1.5, "runs": [78.5, 80.0, 81.5]},
        {"arm": "random", "protocol": "knn", "mean": 41.25, "std": 0.25, "runs": [41.0, 41.5]},
        {"arm": "data2vec", "protocol": "linear", "mean": 90.0, "std": 0.0, "runs": [90.0]},
    ]
    (fake / "summary.json").write_text(json.dumps({"rows": fake_rows}), encoding="utf-8")
    assert show_studies(Path(tmp)) == ["fake-digits"]
    table = format_table(fake_rows).splitlines()
    assert table[0].split() == ["arm", "protocol", "mean", "std", "runs"]
    assert table[1].split() == ["data2vec", "knn", "80.00", "1.50", "3:", "[78.5,", "80.0,", "81.5]"]
    assert table[2].split() == ["random", "knn", "41.25", "0.25", "2:", "[41.0,", "41.5]"]
    assert table[3].split() == ["data2vec", "linear", "90.00", "0.00", "1:", "[90.0]"]
    column = table[0].index("protocol")  # every protocol starts under its header: the arm column is aligned
    assert all(line[column:].startswith(r["protocol"]) for line, r in zip(table[1:], fake_rows, strict=True))
    empty = Path(tmp) / "nothing"
    empty.mkdir()
    assert show_studies(empty) == []
    try:
        format_table([{"arm": "x", "protocol": "knn", "mean": 1.0}])
        raise AssertionError("a row without std / runs was accepted")
    except ValueError as error:
        print("a bad row is refused:", error)

# %% [markdown]
# ## What to try next
#
# * Train each objective for a few hundred updates with the command line and compare the *features*, never the
#   losses: `python -m data2vec pretrain --method {data2vec,data2vec2,bert} --modality text --preset tiny --data
#   python-docs --steps 300 --out runs/<name>`, then `python -m data2vec finetune --task sst2 ...` or
#   `python -m data2vec probe` (vision).
# * Raise `num_masks` of data2vec 2.0 (`--set num_masks=8`) and watch the cost per update grow while the teacher
#   cost stays one pass per sample.
# * In the DINO check, set the centre to zero (`dino.loss_fn.center.zero_()`) or change `tau_t`: the loss moves,
#   and the hand computation follows it.
# * Rerun `python benchmarks/v1_vs_v2.py` and `python benchmarks/methods.py` on your machine (see
#   `benchmarks/README.md`) and point `RESULTS` at the new files.

# %%
print(f"tutorial finished in {time.time() - START:.1f} s")
