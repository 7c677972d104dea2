# %% [markdown]
# # The official weights
#
# The data2vec authors released their pretrained encoders in HuggingFace's format
# (`facebook/data2vec-text-base`, `facebook/data2vec-vision-base`, ...). This project reads such a folder
# straight into its own modules (`data2vec/hub/hf_import.py`), fine-tunes it with its own loop, and writes it back in
# the same format (`data2vec/hub/hf_export.py`). This notebook walks that whole path:
#
# 1. what a `save_pretrained` folder holds, and how each HuggingFace tensor name maps onto our modules
#    (checked tensor by tensor);
# 2. parity layer by layer: `transformers`' model and ours on the same input, every block compared, for
#    the text family (data2vec-text, RoBERTa-shaped) and the vision family (data2vec-vision, BEiT-shaped);
# 3. fine-tuning from the folder with `data2vec finetune --init FOLDER` on a tiny SST-2 data set the
#    notebook writes itself, and the recorded accuracy recomputed by hand;
# 4. the way back: `data2vec convert --to-hf` (and `export_hf` in Python), reloaded with `transformers`,
#    outputs compared;
# 5. the exact commands to do the same with the released checkpoints, with what they cost.
#
# **Offline, on stand-ins.** Nothing is downloaded: in sections 1-4 the "official" checkpoints are tiny
# *random* `transformers` models of each family (2-4 blocks of width 32), built here and saved with
# `save_pretrained`. They have the same layout, names and code paths as the released ones, only smaller;
# section 5 says how to run the same checks on the real ones. **Cost**: about 15 seconds on a CPU (about
# 10 with `TUTORIAL_QUICK=1`, which the test suite sets: fewer blocks, training lines and epochs). It needs
# `transformers` (in the dev extra: `pip install -e ".[dev]"`).

# %%
import json
import os
import tempfile
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch
import transformers

from data2vec.cli import main as data2vec_command
from data2vec.hub import export_hf, load_pretrained
from data2vec.hub.files import read_weights
from data2vec.hub.names import (
    SHARED_REL,
    TEXT_BLOCK,
    TEXT_EMBED,
    TEXT_QKV,
    VISION_BLOCK,
    VISION_EMBED,
    VISION_QKV,
    key_pairs,
    qkv_key_names,
)
from tasks.text.tokenizer import load_tokenizer, train_tokenizer
from tasks.vision import DIGITS_MEAN, DIGITS_STD, load_digits_dataset


def run_data2vec(args: list[str]) -> int:
    """`data2vec ARGS`, through the command's own entry point in this process (a shell's `data2vec ARGS` runs the
    same function; here it spares a second Python start); returns its exit status."""
    return data2vec_command(args)


QUICK = os.environ.get("TUTORIAL_QUICK") == "1"  # the test suite runs a reduced size
DEPTH = 2 if QUICK else 4  # blocks of the stand-in checkpoints (the released base models have 12)
N_TRAIN = 32 if QUICK else 96  # SST-2 training sentences written below
EPOCHS = 2 if QUICK else 4  # fine-tuning epochs

torch.manual_seed(0)
torch.set_num_threads(1)  # tiny models: one thread is fastest and keeps the numbers reproducible
os.environ["HF_HUB_OFFLINE"] = "1"  # a call that reached for the network would fail here, not hang
transformers.utils.logging.disable_progress_bar()  # no "Writing model shards" bars in the output
WORK = Path(tempfile.mkdtemp(prefix="d2v_tutorial_07_"))  # every folder of this notebook lives here
START = time.time()
print("transformers", transformers.__version__, "| working folder", WORK)


def randomise_(model, seed):
    """Every parameter ~ N(0, 0.2^2), LayerNorm gains around 1. A fresh `transformers` model has zero
    biases, unit LayerNorms, constant layer scale and zero relative-bias tables: a mapping that mixed two of
    those up would still give the right outputs, so parity on fresh weights would prove little."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            is_gain = name.endswith("weight") and ("LayerNorm" in name or "layernorm" in name)
            p.copy_(torch.randn(p.shape, generator=g) * 0.2 + (1.0 if is_gain else 0.0))
    return model


def max_error(actual, expected):
    """(max |actual - expected|, that error over max |expected|): float32 rounding is ~1e-7 of the scale."""
    err = (actual - expected).abs().max().item()
    return err, err / expected.abs().max().item()


def assert_close(actual, expected, what, rel=1e-5):
    """max |actual - expected| <= rel * max |expected| + 1e-6; returns the error."""
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    err, scaled = max_error(actual, expected)
    assert err <= rel * expected.abs().max().item() + 1e-6, f"{what}: max |diff| {err:.2e} ({scaled:.1e} of scale)"
    return err


# %% [markdown]
# ## 1. A checkpoint folder, and how its names map onto ours
#
# `save_pretrained(folder)` writes `config.json` (the architecture: widths, depth, heads, norms, position
# scheme) and `model.safetensors` (a flat dictionary from tensor names to tensors); the released folders
# also hold the tokenizer files (`vocab.json` + `merges.txt` for data2vec-text). Our text stand-in: a
# `Data2VecTextModel` with a byte-level BPE tokenizer trained here on a few sentences, saved next to it as
# `tokenizer.json`, exactly where `data2vec finetune --init FOLDER` looks for it.

# %%
rng = np.random.default_rng(0)
FILLER = "the a this that movie film plot actor story was is very quite really".split()


def sentence(label):
    """A few filler words and one word that decides the label (1 = positive)."""
    word = rng.choice(["great", "wonderful", "good"] if label else ["awful", "boring", "bad"])
    return " ".join([*rng.choice(FILLER, size=4), word, *rng.choice(FILLER, size=2)])


corpus = [sentence(i % 2) for i in range(400)]
(WORK / "corpus.txt").write_text("\n".join(corpus) + "\n")
tokenizer = train_tokenizer(WORK / "corpus.txt", kind="bpe", vocab_size=300, min_frequency=1)

text_dir = WORK / "data2vec-text-standin"
text_cfg = transformers.Data2VecTextConfig(
    vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=DEPTH, num_attention_heads=4,
    intermediate_size=64, max_position_embeddings=40, pad_token_id=tokenizer.pad_id, attn_implementation="eager")
torch.manual_seed(1)
hf_text = randomise_(transformers.Data2VecTextModel(text_cfg), seed=1).eval()
hf_text.save_pretrained(text_dir)
tokenizer.save(text_dir)
print("folder:", sorted(p.name for p in text_dir.iterdir()))
hf_state = read_weights(text_dir)  # the flat name -> tensor dictionary of model.safetensors
for name in list(hf_state)[:4] + [k for k in hf_state if k.startswith("encoder.layer.0.")]:
    print(f"  {name:55s} {tuple(hf_state[name].shape)}")

# %% [markdown]
# **The name tables** (`data2vec/hub/names.py`; the one source of truth for import *and* export). Most tensors
# map one to one, `encoder.layer.{i}.<theirs>` to our `encoder.blocks.{i}.<ours>`. The exception is
# attention: HuggingFace keeps three linears `query`, `key`, `value`, we keep one fused projection, so the
# import concatenates the rows,
#
# $$W_{qkv} = \begin{bmatrix} W_q \\ W_k \\ W_v \end{bmatrix} \in \mathbb{R}^{3D \times D}, \qquad
# b_q, b_k, b_v \text{ kept apart (BEiT has no } b_k\text{: ours is a zero buffer)} .$$

# %%
print("text embeddings:", *(f"  {o:28s} <- {h}" for o, h in TEXT_EMBED), sep="\n")
print("text block i:   ", *(f"  {o:28s} <- {h}" for o, h in TEXT_BLOCK), f"  attn.qkv (fused)             <- "
      f"{TEXT_QKV}.query/key/value", sep="\n")
print("vision (BEiT / data2vec-vision) differences:", *(f"  {o:28s} <- {h}" for o, h in VISION_BLOCK[:1] +
      VISION_BLOCK[2:3] + VISION_EMBED[:3]), f"  attn.qkv (fused)             <- {VISION_QKV}.query/key/value",
      "  gamma1, gamma2               <- lambda_1, lambda_2", f"  rel_pos.table                <- {SHARED_REL}",
      sep="\n")

text_model = load_pretrained(text_dir)  # -> PretrainedModel: our TextTransformer + the import report
print(f"\nimported {text_model.family}: {type(text_model.backbone).__name__}, "
      f"{text_model.encoder_config.depth} x {text_model.encoder_config.dim}")
print(text_model.report)

# %% [markdown]
# The report names every tensor it did not use: a base model's `pooler` (a tanh layer on the first token,
# not part of the encoder; a sequence-classification head brings its own). Now the copy checked by hand,
# tensor by tensor, against the folder's own tensors: every 1:1 pair equal, and each fused $W_{qkv}$ equal
# to the three HuggingFace matrices stacked.

# %%
def check_import_by_hand(backbone, hf_state, text):
    ours = backbone.state_dict()
    pairs = key_pairs(backbone)
    for our_key, hf_key in pairs:
        assert torch.equal(ours[our_key], hf_state[hf_key]), f"{our_key} != {hf_key}"
    for i in range(backbone.cfg.depth):
        names = qkv_key_names(i, "text" if text else "vision")  # {"q": "encoder.layer.i.attention.self.query", ...}
        stacked = torch.cat([hf_state[names[p] + ".weight"] for p in "qkv"])  # (3D, D) = [Wq; Wk; Wv]
        assert torch.equal(ours[f"encoder.blocks.{i}.attn.qkv.weight"], stacked)
        for p in "qkv":
            if names[p] + ".bias" in hf_state:
                assert torch.equal(ours[f"encoder.blocks.{i}.attn.{p}_bias"], hf_state[names[p] + ".bias"])
            else:  # BEiT's key projection has no bias: ours is a zero buffer (not saved), not a parameter
                assert p == "k" and not backbone.encoder.blocks[i].attn.k_bias.any()
    return len(pairs) + 4 * backbone.cfg.depth


n = check_import_by_hand(text_model.backbone, hf_state, text=True)
print(f"text: {n} tensors and fused q/k/v equal to the folder's")

# %% [markdown]
# **Positions, the one subtle fact.** data2vec-text is a RoBERTa: position ids are numbered from
# `padding_idx + 1` over the tokens that are not `<pad>`, and pads get `padding_idx` itself,
#
# $$\mathrm{pos}_t = \mathrm{pad} + \sum_{s \le t} [\mathrm{id}_s \ne \mathrm{pad}] \ \text{ for a real token,}
# \qquad \mathrm{pos}_t = \mathrm{pad} \text{ for a pad,}$$
#
# so the first token sits at position 2 (our `position_offset = pad_id + 1`); BERT numbers from 0. The
# embedding output is then $\mathrm{LN}(E_{\text{word}}[\mathrm{id}_t] + E_{\text{pos}}[\mathrm{pos}_t] +
# E_{\text{type}}[0])$: HuggingFace's `hidden_states[0]`. Below it is computed by hand from the folder's
# tensors and compared with both models.

# %%
texts = ["a really great film", "that plot was boring", "the story is good"]
encoded = [tokenizer.encode(t) for t in texts]  # <s> ... </s>, as `data2vec finetune` encodes
T = max(map(len, encoded))
pad = tokenizer.pad_id
ids = torch.full((len(texts), T), pad)  # (B, T)
for row, e in enumerate(encoded):
    ids[row, :len(e)] = torch.tensor(e)
attention_mask = (ids != pad).long()  # (B, T) HuggingFace convention: 1 = real token

real = ids != pad  # (B, T) bool, True = real token
positions = torch.where(real, pad + torch.cumsum(real.long(), dim=1), torch.full_like(ids, pad))  # (B, T)
print("position ids:\n", positions)
emb = (hf_state["embeddings.word_embeddings.weight"][ids] + hf_state["embeddings.position_embeddings.weight"][positions]
       + hf_state["embeddings.token_type_embeddings.weight"][0])  # (B, T, D)
emb = torch.nn.functional.layer_norm(emb, (32,), hf_state["embeddings.LayerNorm.weight"],
                                     hf_state["embeddings.LayerNorm.bias"], eps=text_cfg.layer_norm_eps)
with torch.no_grad():
    hf_out = hf_text(input_ids=ids, attention_mask=attention_mask, output_hidden_states=True)
    ours_emb = text_model.backbone.embed(ids, ids == pad)  # our TextEmbedding: pads excluded from positions
assert_close(hf_out.hidden_states[0], emb, "HF embeddings vs by hand")
assert_close(ours_emb, emb, "our embeddings vs by hand")
print("embedding output: by hand = transformers = ours")

# %% [markdown]
# ## 2. Parity, layer by layer
#
# `PretrainedModel` is called like the `transformers` model (`input_ids`, `attention_mask`; it turns the
# 1 = real mask into our True = pad one). With `return_layers="block"` it also returns every block's output,
# which is `hidden_states[l]` for block $l$; its final output is `last_hidden_state`. The check compares
# every one of them at float32 precision (max error $\le 10^{-5}$ of the tensor's largest value).

# %%
def layer_by_layer(hf_out, ours_final, ours_layers, name):
    """Every block's output and the final output against transformers' hidden_states; returns the errors."""
    assert len(ours_layers) == len(hf_out.hidden_states) - 1, "one hidden state per block, plus the embeddings"
    errors = []  # per block: max |diff| / max |reference|
    for block, (got, want) in enumerate(zip(ours_layers, hf_out.hidden_states[1:], strict=True), start=1):
        assert_close(got, want, f"{name} block {block}")
        errors.append(max_error(got, want)[1])
    if getattr(hf_out, "last_hidden_state", None) is not None:  # a task model's output has hidden_states only
        assert_close(ours_final, hf_out.last_hidden_state, f"{name} last_hidden_state")
    print(f"{name}: {len(errors)} blocks match; max |diff| / max |value| per block: "
          + ", ".join(f"{e:.1e}" for e in errors))
    return errors


with torch.no_grad():
    final, layers = text_model(input_ids=ids, attention_mask=attention_mask, return_layers="block")
text_errors = layer_by_layer(hf_out, final, layers, "data2vec-text")

# %% [markdown]
# data2vec-text's *targets* are not the block outputs but each block's FFN output before the residual and
# the LayerNorm (notebook 01; `return_layers="ffn"`). `transformers` does not return those; a forward hook
# on each layer's `output.dense` captures them for the comparison.

# %%
captured = []
hooks = [layer.output.dense.register_forward_hook(lambda module, inp, out: captured.append(out))
         for layer in hf_text.encoder.layer]
with torch.no_grad():
    hf_text(input_ids=ids, attention_mask=attention_mask)
    _, ffn = text_model(input_ids=ids, attention_mask=attention_mask, return_layers="ffn")
for hook in hooks:
    hook.remove()
for block, (got, want) in enumerate(zip(ffn, captured, strict=True), start=1):
    assert_close(got, want, f"FFN output of block {block}")
print(f"the {len(ffn)} FFN outputs (data2vec-text's targets) match")

# %% [markdown]
# **The check can fail.** Feed `transformers` BERT-style position ids $0, 1, \dots, T-1$ instead of
# RoBERTa's (the mistake an importer that ignored `pad_token_id` would make): the very first block differs.

# %%
with torch.no_grad():
    bert_positions = hf_text(input_ids=ids, attention_mask=attention_mask, output_hidden_states=True,
                             position_ids=torch.arange(T).expand_as(ids))
try:
    wrong_error = max_error(layers[0], bert_positions.hidden_states[1])[1]
    assert_close(layers[0], bert_positions.hidden_states[1], "block 1 with BERT positions")
except AssertionError as error:
    print("caught, as it should be:", error)
else:
    raise AssertionError("wrong position ids passed the parity check")

# %% [markdown]
# **The vision family.** data2vec-vision is a BEiT: pre-LN blocks with layer scale (`lambda_1`,
# `lambda_2`, our `gamma1`, `gamma2`), no key bias, and a relative position bias instead of absolute
# positions: a learned table with one entry per head for each of the $(2g-1)^2$ offsets between two
# patches of the $g \times g$ grid, plus three for the CLS token, shared by all blocks or one per block.
# With `use_mean_pooling` (the released fine-tuning configs) `last_hidden_state` skips the final LayerNorm
# (our `final_norm=False`). The stand-in: 32 px images in 8 px patches, a 4 x 4 grid; the input: digits
# from scikit-learn, scaled up and copied to three channels.

# %%
vision_dir = WORK / "data2vec-vision-standin"
vision_cfg = transformers.Data2VecVisionConfig(
    hidden_size=32, num_hidden_layers=DEPTH, num_attention_heads=4, intermediate_size=64, image_size=32,
    patch_size=8, use_shared_relative_position_bias=True, use_mean_pooling=True, attn_implementation="eager")
torch.manual_seed(2)
hf_vision = randomise_(transformers.Data2VecVisionModel(vision_cfg), seed=2).eval()
hf_vision.save_pretrained(vision_dir)
vision_model = load_pretrained(vision_dir)
cfg = vision_model.encoder_config
print(f"imported {vision_model.family}: pre-LN={cfg.norm_first}, layer_scale={cfg.layer_scale}, "
      f"k_bias={cfg.k_bias}, position={cfg.position!r} (shared={cfg.shared_rel_pos}), final_norm={cfg.final_norm}")
print(vision_model.report)
vision_state = read_weights(vision_dir)
n = check_import_by_hand(vision_model.backbone, vision_state, text=False)
assert torch.equal(vision_model.backbone.rel_pos.table, vision_state[SHARED_REL])
g = cfg.grid_size
assert vision_state[SHARED_REL].shape == ((2 * g - 1) ** 2 + 3, cfg.heads)  # offsets + 3 CLS entries, per head
print(f"vision: {n} tensors, fused q/k/v and the relative-bias table {tuple(vision_state[SHARED_REL].shape)} "
      "equal to the folder's")

digits = load_digits_dataset("test")
small = torch.from_numpy(np.asarray(digits.images[:4], dtype=np.float32))  # (4, 8, 8) in [0, 1]
small = (small - DIGITS_MEAN[0]) / DIGITS_STD[0]
images = small.repeat_interleave(4, 1).repeat_interleave(4, 2)[:, None].expand(-1, 3, -1, -1)  # (4, 3, 32, 32)
with torch.no_grad():
    hf_vout = hf_vision(pixel_values=images, output_hidden_states=True)
    vfinal, vlayers = vision_model(pixel_values=images, return_layers="block")
vision_errors = layer_by_layer(hf_vout, vfinal, vlayers, "data2vec-vision")

fig, ax = plt.subplots(figsize=(6.5, 3.2))
width = 0.38
blocks = np.arange(1, DEPTH + 1)
ax.bar(blocks - width / 2, text_errors, width, label="data2vec-text")
ax.bar(blocks + width / 2, vision_errors, width, label="data2vec-vision")
ax.bar([DEPTH + 1.2], [wrong_error], width, color="tab:red", label="text, BERT positions (a wrong import)")
ax.set_yscale("log")
ax.set_ylim(1e-9, 10)
ax.axhline(1e-5, color="grey", ls="--", lw=1)
ax.text(0.5, 1.6e-5, "allowed: 1e-5 of the largest value", fontsize=8, color="grey")
ax.set_xlabel("block")
ax.set_ylabel("max |ours - HF| / max |HF|")
ax.set_xticks([*blocks, DEPTH + 1.2], [*map(str, blocks), "1"])
ax.set_title("parity per block: the stand-in checkpoints")
ax.legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 3. Fine-tuning from the folder
#
# `data2vec finetune --init FOLDER` accepts a HuggingFace folder as it is (the import above happens
# inside), takes the tokenizer from the same folder, puts a classification head on the encoder (RoBERTa's:
# dense-tanh-dense on the first token) and trains everything. The data set: a GLUE-format SST-2 folder
# written here (`train.tsv`, `dev.tsv`, a `sentence<TAB>label` header), the label decided by one word. The
# learning rate: the default for a pretrained text encoder is RoBERTa's 2e-5; a random stand-in has nothing
# to protect and learns this toy task faster at 1e-3. The command is the same one you would run on the real
# weights (section 5); here `run_data2vec([...])` calls `data2vec.cli.main`, the function a shell's `data2vec ...`
# runs. A
# random stand-in knows nothing about language, so a few epochs on a few dozen sentences lift the dev
# accuracy only part of the way from chance (50 %): the point here is the path, not the number.

# %%
glue_dir = WORK / "glue" / "SST-2"
glue_dir.mkdir(parents=True)
for split, count in (("train", N_TRAIN), ("dev", 24)):
    rows = [f"{sentence(i % 2)}\t{i % 2}" for i in range(count)]
    (glue_dir / f"{split}.tsv").write_text("sentence\tlabel\n" + "\n".join(rows) + "\n")
print((glue_dir / "train.tsv").read_text().splitlines()[:3])

run_dir = WORK / "runs" / "sst2-standin"
command = ["finetune", "--task", "sst2", "--data", str(glue_dir), "--init", str(text_dir), "--epochs", str(EPOCHS),
           "--batch-size", "8", "--max-length", "32", "--lr", "1e-3", "--seed", "1", "--out", str(run_dir), "--quiet"]
print("data2vec " + " ".join(command))
assert run_data2vec(command) == 0
metrics = json.loads((run_dir / "metrics.json").read_text())
for epoch in metrics["history"]:
    print(f"  epoch {epoch['epoch']}: train loss {epoch.get('train_loss', float('nan')):.3f}, "
          f"dev accuracy {epoch['accuracy']:.1f} %")
print("best:", {k: metrics["best"][k] for k in ("epoch", "accuracy")})
print("files:", sorted(p.name for p in run_dir.iterdir()))

# %% [markdown]
# **The recorded accuracy, recomputed by hand.** `best/` holds the best epoch's encoder and head in our
# format; `load_pretrained` reads it like any other folder. Encode the dev sentences with the run's
# tokenizer, pad, take $\arg\max$ of the logits and count: it must give the accuracy `metrics.json`
# recorded for that epoch. And the encoder really was trained: its weights moved away from the folder's.

# %%
tuned = load_pretrained(run_dir / "best")
run_tokenizer = load_tokenizer(run_dir / "tokenizer")
dev = [line.split("\t") for line in (glue_dir / "dev.tsv").read_text().splitlines()[1:]]
encoded = [run_tokenizer.encode(s) for s, _ in dev]
dev_ids = torch.full((len(dev), max(map(len, encoded))), run_tokenizer.pad_id)  # (N, T)
for row, e in enumerate(encoded):
    dev_ids[row, :len(e)] = torch.tensor(e)
labels = torch.tensor([int(y) for _, y in dev])  # (N,)
with torch.no_grad():
    logits = tuned.logits(input_ids=dev_ids, attention_mask=(dev_ids != run_tokenizer.pad_id).long())  # (N, 2)
correct = int((logits.argmax(-1) == labels).sum())
by_hand = 100.0 * correct / len(dev)
print(f"dev accuracy by hand {correct}/{len(dev)} = {by_hand:.1f} % | metrics.json {metrics['best']['accuracy']:.1f} %")
assert abs(by_hand - metrics["best"]["accuracy"]) < 1e-9  # one sentence more or less is 4 points
before = text_model.backbone.encoder.blocks[0].attn.qkv.weight  # (3D, D), as imported from the folder
moved = tuned.backbone.encoder.blocks[0].attn.qkv.weight - before
print(f"block 0 W_qkv moved by {moved.norm():.3f} (its norm: {before.norm():.3f})")
assert moved.abs().max() > 1e-3, "fine-tuning did not change the encoder"

# %% [markdown]
# ## 4. Export back, and reload with `transformers`
#
# `data2vec convert --to-hf OURDIR --out FOLDER --family data2vec-text` writes `config.json` +
# `model.safetensors` under HuggingFace's names (the same tables read backwards: $W_{qkv}$ split into
# three) and copies the tokenizer files; with a head it writes a `...ForSequenceClassification`.
# `transformers` then loads it with no help from this project. The fine-tuned classifier's logits and
# every hidden state must match ours.

# %%
export_dir = WORK / "exported-sst2"
assert run_data2vec(["convert", "--to-hf", str(run_dir / "best"), "--out", str(export_dir),
                     "--family", "data2vec-text"]) == 0
print("exported:", sorted(p.name for p in export_dir.iterdir()))
reloaded = transformers.AutoModelForSequenceClassification.from_pretrained(export_dir,
                                                                           attn_implementation="eager").eval()
print("transformers loaded", type(reloaded).__name__)
dev_mask = (dev_ids != run_tokenizer.pad_id).long()  # (N, T) 1 = real token
with torch.no_grad():
    ref = reloaded(input_ids=dev_ids, attention_mask=dev_mask, output_hidden_states=True)
    final, layers = tuned(input_ids=dev_ids, attention_mask=dev_mask, return_layers="block")
layer_by_layer(ref, final, layers, "fine-tuned, reloaded by transformers")
assert_close(logits, ref.logits, "classifier logits")
print(f"logits match (max |diff| {max_error(logits, ref.logits)[0]:.1e})")

# %% [markdown]
# The same in Python, for the vision stand-in: `export_hf(folder, model, family)` writes the folder from
# the imported model, `Data2VecVisionModel.from_pretrained` reads it, and the round trip
# HuggingFace -> ours -> HuggingFace gives back every tensor of the original folder bit for bit. (The
# export may add a tensor: with mean pooling it writes the BEiT pooler's LayerNorm at its initial values,
# since `BeitModel` has that pooler; `Data2VecVisionModel` is built without one, and `transformers` lists
# the two as UNEXPECTED when it loads the folder.)

# %%
vision_export = export_hf(WORK / "exported-vision", vision_model, "data2vec-vision")
again = transformers.Data2VecVisionModel.from_pretrained(vision_export, attn_implementation="eager").eval()
exported_state = read_weights(vision_export)
assert all(torch.equal(exported_state[k], vision_state[k]) for k in vision_state), "a tensor changed"
print(f"all {len(vision_state)} tensors of the original folder identical after the round trip; "
      f"added by the export: {sorted(set(exported_state) - set(vision_state)) or 'none'}")
with torch.no_grad():
    layer_by_layer(again(pixel_values=images, output_hidden_states=True), vfinal, vlayers, "vision round trip")

# %% [markdown]
# ## 5. The same with the released checkpoints
#
# Everything above runs unchanged on the real folders; only the download needs a machine with internet
# (this project never touches the network). Download (either way):
#
# ```bash
# pip install -U "huggingface_hub[cli]"
# huggingface-cli download facebook/data2vec-text-base --local-dir d2v-text-base      # config, weights, vocab/merges
# huggingface-cli download facebook/data2vec-vision-base --local-dir d2v-vision-base
# # or in Python, with transformers:
# python -c "from transformers import AutoModel, AutoTokenizer; n = 'facebook/data2vec-text-base'; \
#   AutoModel.from_pretrained(n).save_pretrained('d2v-text-base'); \
#   AutoTokenizer.from_pretrained(n).save_pretrained('d2v-text-base')"
# ```
#
# Check the import (prints what was imported and what was unused) and, in Python, the parity of every
# layer with this notebook's `layer_by_layer` (set the environment variables `D2V_TEXT_BASE` /
# `D2V_VISION_BASE` to the folders and rerun this notebook: the next cell does exactly that):
#
# ```bash
# data2vec convert --from-hf d2v-text-base --out d2v-text-ours
# ```
#
# Fine-tune and evaluate (GLUE: the task folder from the GLUE distribution; SQuAD v1.1 and XQuAD: the
# official JSON files):
#
# ```bash
# data2vec finetune --task sst2 --data glue/SST-2 --init d2v-text-base --out runs/sst2-d2v --device cuda
# data2vec finetune --task squad --data squad/train-v1.1.json --eval-data squad/dev-v1.1.json \
#     --init d2v-text-base --out runs/squad-d2v --device cuda
# data2vec finetune --task xquad --eval-only --init runs/squad-d2v/best --data xquad --language de \
#     --out runs/xquad-de --device cuda
# data2vec finetune --task image --data path/to/cifar10 --init d2v-vision-base --image-size 224 \
#     --out runs/cifar10-d2v --device cuda
# data2vec convert --to-hf runs/sst2-d2v/best --out sst2-d2v-hf --family data2vec-text --tokenizer d2v-text-base
# ```
#
# (defaults: GLUE 10 epochs at lr 2e-5, batch 32, length 128; SQuAD 2 epochs at 3e-5, length 384; images
# 10 epochs at 2.5e-4, layer decay 0.65; `data2vec finetune --help` explains each.)
#
# **What it costs.** One number was measured, the rest are **estimates** from the sizes (data2vec-text-base
# has about 125 M parameters, data2vec-vision-base about 86 M) and were not run:
#
# | step | cost |
# |---|---|
# | download | estimate: about 0.5 GB (text) and 0.35 GB (vision) of fp32 weights, plus the tokenizer files |
# | import + parity check of every layer | estimate: seconds on a CPU, a few GB of memory |
# | one update on a CPU, batch 32 x 48 tokens | **measured**: 28-40 s (base size, 2 shared cores, see below) |
# | SST-2, `--max-train-examples 2000 --epochs 2` (125 updates) | estimate from that: about an hour on 2 cores |
# | SST-2, default 10 epochs (67k sentences, ~21k updates) | estimate: 30-60 min on one recent GPU; a week on 2 cores |
# | SQuAD v1.1, 2 epochs (88k questions at 384 tokens) | estimate: 1-2 h on one recent GPU |
# | XQuAD `--eval-only`, one language (1,190 questions) | estimate: about a minute on a GPU, tens of minutes on a CPU |
# | CIFAR-10 at 224 px, 10 epochs (50k images, 196 patches each) | estimate: several hours on one recent GPU |
#
# The measurement: `get_preset("text", "base")` + a RoBERTa head, AdamW, three updates timed with
# `time.time()` around forward, backward and step (`torch.set_num_threads(2)`). The paper's results to
# compare with are in its tables 1 (vision: 84.2 % ImageNet-1k top-1 for the fine-tuned ViT-B) and 3 (GLUE).

# %%
for variable in ("D2V_TEXT_BASE", "D2V_VISION_BASE"):  # folders of the released checkpoints, if you have them
    folder = os.environ.get(variable)
    if not folder:
        print(f"{variable} not set: skipping the released checkpoint (see the commands above)")
        continue
    real_hf = transformers.AutoModel.from_pretrained(folder, attn_implementation="eager").eval()
    real_ours = load_pretrained(folder)
    real_cfg = real_ours.encoder_config
    print(f"{folder}: {real_ours.family}, {real_cfg.depth} x {real_cfg.dim}\n{real_ours.report}")
    with torch.no_grad():
        if real_cfg.modality == "text":
            real_ids = torch.randint(5, real_cfg.vocab_size, (2, 32), generator=torch.Generator().manual_seed(0))
            real_ids[1, 20:] = real_cfg.pad_id  # (2, 32): the second row padded after 20 tokens
            mask = (real_ids != real_cfg.pad_id).long()  # (2, 32) 1 = real token
            layer_by_layer(real_hf(input_ids=real_ids, attention_mask=mask, output_hidden_states=True),
                           *real_ours(input_ids=real_ids, attention_mask=mask, return_layers="block"), folder)
        else:
            pixels = torch.randn(2, 3, real_cfg.image_size, real_cfg.image_size)  # (2, 3, H, W)
            layer_by_layer(real_hf(pixel_values=pixels, output_hidden_states=True),
                           *real_ours(pixel_values=pixels, return_layers="block"), folder)

# %% [markdown]
# ## What to try next
#
# * Import a task checkpoint instead of a base model: build `transformers.Data2VecTextForSequenceClassification`
#   (or `Data2VecVisionForImageClassification`) the same way; `load_pretrained` then imports the head too
#   and `model.logits(...)` matches `transformers`' logits.
# * Build a BEiT stand-in with one relative-bias table per block (`use_relative_position_bias=True`) or with
#   both kinds: the import adds the shared table to each block's (`data2vec/hub/hf_import.py`, `import_state`).
# * Perturb one tensor of the folder (say `encoder.layer.0.attention.self.key.weight` times 1.001), save
#   it, reload: which blocks fail the parity check, and by how much?
# * Try `--family roberta` in the export: data2vec-text and RoBERTa share the layout, only `model_type`
#   and the class names differ.
# * With internet and a GPU: the commands of section 5, then `data2vec probe --init d2v-vision-base
#   --data path/to/cifar10 --image-size 224` for frozen features with few labels (the base encoder
#   expects three-channel images, so not the grey digits).

# %%
print(f"tutorial finished in {time.time() - START:.1f} s")
