"""The speech study's evaluation protocols (`data2vec compare --modality audio`, docs/design.md section 8): frozen k-NN
and linear probe on mean-pooled frames, fine-tuning with few labels, the raw-feature floor and the supervised floor,
every knob chosen on a validation split carved from the training split.

- The clips: every keyword recording of the train and test splits cut or zero-padded to the study's window
  (`crop_seconds`, 1 s: Speech Commands' clips), in memory; the corpus's own validation split is not read (it chose
  the corpus's settings, tasks/audio/README.md).
- Validation: whole SPEAKERS of the training split (seeded, about `val_fraction` of its clips), so that what chooses
  a knob is scored on voices it never trained on, as the test split is (its speakers are disjoint from train's).
- Frozen features: every block's output and the final one, each mean-pooled over the frames (`probe.layer_features`),
  also centred by the training mean; each protocol (DINO's weighted k-NN, k 20, T 0.07; a logistic-regression linear
  probe) reads the candidate it scores best with on validation; with all labels and with `frozen_fraction` of them.
- Raw-feature floor ("features"): the 40-bin log-mel spectrogram and 13 MFCCs, each mean+std pooled over time
  (`tasks.audio.features`), with the same probes and the same choice on validation.
- Fine-tuning (`heads.AudioClassificationHead`: frames projected and averaged; the image study's recipe: AdamW, layer
  decay, cosine, warm-up 10 %, label smoothing 0.1; clips shifted by up to `time_shift` s) on stratified, seeded
  subsets of the labels; the reported score is the test accuracy of the epoch chosen on validation.
- Supervised from scratch: the same encoder, head and augmentation on the same labels, for the pretraining budget
  plus that subset's fine-tuning time (`protocols.supervised_budget`).

Differences from the papers: data2vec-audio reports speech recognition (WER) after fine-tuning on LibriSpeech /
Libri-light; keyword accuracy on a synthetic corpus is this project's CPU-sized stand-in (Bovbjerg & Tan 2022 score
data2vec on Speech Commands keywords). One fine-tuning lr for every arm (no grid).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .audio_config import AudioCompareConfig
from .budget import compute_settings
from .errors import StudyError
from .protocols import finetune_epochs, finetune_record, score_frozen, supervised_budget
from .records import pct, record, result_path, say, write_json

FROZEN_PROTOCOLS = ("knn", "linear")


def audio_protocols(cfg: AudioCompareConfig, arm: str) -> list[str]:
    """The protocols an arm is scored with: the hand-made features have no encoder to fine-tune, supervised has no
    frozen features of its own (it is the fine-tuning floor)."""
    frozen = [f"{p}@100%" for p in FROZEN_PROTOCOLS] + [f"{p}@{pct(cfg.frozen_fraction)}" for p in FROZEN_PROTOCOLS]
    tuned = [f"finetune@{pct(f)}" for f in cfg.finetune_fractions]
    if arm == "features":
        return frozen
    if arm == "supervised":
        return tuned
    return frozen + tuned


# ---- the evaluation clips -----------------------------------------------------------------------------------


@dataclass
class AudioEvalData:
    """The keyword clips in memory, one window each, the validation speakers and the classes."""

    train_x: torch.Tensor  # (N, S) waveforms of the training split, S = the study's window
    train_y: np.ndarray  # (N,)
    test_x: torch.Tensor  # (M, S)
    test_y: np.ndarray  # (M,)
    fit_idx: np.ndarray  # training clips of the speakers outside the validation split
    val_idx: np.ndarray  # the validation split: every clip of the validation speakers (seeded 0, fixed)
    classes: list[str]  # the words, label id order
    speakers: np.ndarray  # (N,) the speaker of every training clip
    hand_made: dict = field(default_factory=dict)  # the features arm's features, computed once

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def speaker_split(speakers: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(fit_idx, val_idx): whole speakers, in a seeded order, go to validation until it holds at least `fraction` of
    the clips (at least one speaker, and at least one left to fit on)."""
    names = np.unique(speakers)  # sorted
    if len(names) < 2:
        raise StudyError(f"the training split has {len(names)} speaker(s); the validation split is carved by speaker; "
                         "fix: give a keyword folder with 2 or more speakers (<speaker>_nohash_<n>.wav)")
    order = np.random.default_rng(seed).permutation(names)
    chosen, held = [], 0
    for name in order[:-1]:
        chosen.append(name)
        held += int((speakers == name).sum())
        if held >= fraction * len(speakers):
            break
    is_val = np.isin(speakers, chosen)  # True = a validation clip
    return np.flatnonzero(~is_val), np.flatnonzero(is_val)


def stack_clips(dataset, window: int) -> tuple[torch.Tensor, np.ndarray]:
    """Every clip of a keyword split cut or zero-padded to `window` samples: (N, window), labels (N,)."""
    from tasks.audio.waveform import fit_length

    clips, labels = [], []
    for i in range(len(dataset)):
        waveform, label = dataset[i]
        clips.append(fit_length(waveform, window))
        labels.append(int(label))
    return torch.stack(clips), np.asarray(labels)  # (N, window), (N,)


def load_eval_data(cfg: AudioCompareConfig) -> AudioEvalData:
    from tasks.audio import audio_datasets
    from tasks.audio.keywords import speaker_of

    try:
        splits = audio_datasets(cfg.data, "keywords")
    except (FileNotFoundError, ValueError, ImportError) as error:
        fix = "" if "fix:" in str(error) else "; fix: pass a keyword folder or a corpus built by python -m " \
            "tasks.audio.corpus (--preset study)"
        raise StudyError(f"--data: {error}{fix}") from None
    if "test" not in splits:
        raise StudyError(f"--data {cfg.data}: no test split; fix: a keyword folder with testing_list.txt or a test/ "
                         "folder (the study reports on it)")
    train_x, train_y = stack_clips(splits["train"], cfg.window)
    test_x, test_y = stack_clips(splits["test"], cfg.window)
    speakers = np.asarray([speaker_of(f.name) for f in splits["train"].files])
    fit_idx, val_idx = speaker_split(speakers, cfg.val_fraction, seed=0)
    return AudioEvalData(train_x, train_y, test_x, test_y, fit_idx, val_idx, list(splits["train"].classes), speakers)


# ---- frozen features ----------------------------------------------------------------------------------------


def encoder_features(backbone, clips: torch.Tensor, labels: np.ndarray, device: str, chunk: int = 128) -> dict:
    """{"block{l}/mean", "final/mean": (N, D)}: every block's frames and the final ones, mean-pooled."""
    from ..probe import layer_features

    batches = [{"waveform": clips[i:i + chunk], "labels": torch.as_tensor(labels[i:i + chunk])}
               for i in range(0, len(clips), chunk)]
    return layer_features(backbone, batches, device)[0]


def hand_made_features(data: AudioEvalData) -> tuple[dict, dict]:
    """The features arm's (train, test) features: log-mel and MFCC, mean+std pooled (computed once per study)."""
    from tasks.audio.features import clip_features

    if not data.hand_made:
        data.hand_made["train"] = {k: v.numpy() for k, v in clip_features(data.train_x).items()}
        data.hand_made["test"] = {k: v.numpy() for k, v in clip_features(data.test_x).items()}
    return dict(data.hand_made["train"]), dict(data.hand_made["test"])


def evaluate_frozen(cfg: AudioCompareConfig, arm: str, seed: int, backbone, data: AudioEvalData) -> None:
    """The frozen protocols of an encoder (`backbone`) or, with None, of the hand-made features."""
    wanted = [p for p in audio_protocols(cfg, arm) if not p.startswith("finetune")]
    if not wanted or all(result_path(cfg, arm, seed, p).is_file() for p in wanted):
        return
    t0 = time.time()
    if backbone is None:
        feats, test_feats = hand_made_features(data)
    else:
        backbone = backbone.to(cfg.device)
        feats = encoder_features(backbone, data.train_x, data.train_y, cfg.device)
        test_feats = encoder_features(backbone, data.test_x, data.test_y, cfg.device)
    score_frozen(cfg, arm, seed, feats, test_feats, data, t0)


# ---- fine-tuning and the supervised floor -------------------------------------------------------------------


class ClipSet(torch.utils.data.Dataset):
    """(waveform (S,), label) of chosen clips; with `max_shift` > 0 each one is shifted in time by a uniform
    number of samples in [-max_shift, max_shift], the vacated end filled with silence (torch's RNG)."""

    def __init__(self, clips: torch.Tensor, labels: np.ndarray, index: np.ndarray, max_shift: int = 0):
        self.clips, self.labels, self.index, self.max_shift = clips, labels, np.asarray(index), max_shift

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        x = self.clips[self.index[i]]  # (S,)
        if self.max_shift > 0:
            shift = int(torch.randint(-self.max_shift, self.max_shift + 1, (1,)))
            x = torch.roll(x, shift)  # (S,)
            if shift > 0:
                x[:shift] = 0.0
            elif shift < 0:
                x[shift:] = 0.0
        return x, int(self.labels[self.index[i]])


def finetune_run(cfg: AudioCompareConfig, arm: str, seed: int, backbone, data: AudioEvalData, fraction: float,
                 epochs: int, layer_decay: float | None) -> dict:
    """Fine-tune `backbone` (deep-copied) with a keyword head on `fraction` of the labels, the epoch chosen on
    validation."""
    import copy

    from tasks.audio import AudioCollate

    from ..finetune import FinetuneConfig, finetune
    from ..heads import AudioClassificationHead, TaskModel
    from ..label_splits import fraction_indices

    fit_y = data.train_y[data.fit_idx]
    labelled = data.fit_idx[fraction_indices(fit_y, fraction, seed)] if fraction < 1 else data.fit_idx
    model = TaskModel(copy.deepcopy(backbone), AudioClassificationHead(backbone.cfg.dim, data.num_classes))
    fcfg = FinetuneConfig.vision_defaults(epochs=epochs, batch_size=min(cfg.batch_size, len(labelled)), seed=seed,
                                          device=cfg.device, save_best=False, log_every=0, warmup_ratio=0.1,
                                          eval_every=max(1, epochs // 10), lr=cfg.finetune_lr, layer_decay=layer_decay,
                                          **compute_settings(cfg))

    def metric_fn(outputs, labels):
        return {"accuracy": 100.0 * float(np.mean(np.asarray(outputs).argmax(-1) == np.asarray(labels)))}

    shift = int(round(cfg.time_shift * 16_000))
    train = ClipSet(data.train_x, data.train_y, labelled, max_shift=shift)
    val = ClipSet(data.train_x, data.train_y, data.val_idx)
    test = ClipSet(data.test_x, data.test_y, np.arange(len(data.test_y)))
    run_dir = Path(cfg.runs) / f"finetune-{arm}-seed{seed}-{pct(fraction).replace('%', 'pct')}"
    summary = finetune(model, train, val, fcfg, run_dir, metric_fn, collate_fn=AudioCollate(), quiet=True,
                       test_set=test, resume=True)  # an interrupted run goes on from its last evaluated epoch
    return {"summary": summary, "labelled": int(len(labelled)), "cpu_seconds": summary["cpu_time_s"],
            "train_seconds": summary["train_wall_time_s"], "train_cpu_seconds": summary["train_cpu_time_s"]}


def evaluate_finetune(cfg: AudioCompareConfig, arm: str, seed: int, backbone, data: AudioEvalData) -> None:
    """Fine-tuning with every fraction of the labels (random init and the pretrained encoders)."""
    for fraction in cfg.finetune_fractions:
        name = f"finetune@{pct(fraction)}"
        path = result_path(cfg, arm, seed, name)
        if path.is_file():
            continue
        epochs = finetune_epochs(cfg, data, fraction)
        out = finetune_run(cfg, arm, seed, backbone, data, fraction, epochs, cfg.layer_decay)
        s = out["summary"]
        recipe = dict(lr=cfg.finetune_lr, layer_decay=cfg.layer_decay)
        write_json(path, record(cfg, arm, seed, name, s["test"]["selected"]["accuracy"],
                                **finetune_record(out, recipe, {cfg.finetune_lr: s["best"]["accuracy"]}, epochs)))
        chosen = s["test"]["selected"]
        say(f"{arm} seed {seed} {name}: {chosen['accuracy']:.2f} % (epoch {chosen['epoch']} of {epochs} chosen on "
            f"validation; last {s['test']['last']['accuracy']:.2f} %; {s['wall_time_s']:.0f} s)")


def evaluate_supervised(cfg: AudioCompareConfig, seed: int, data: AudioEvalData, random_backbone) -> None:
    """Supervised from scratch on each labelled subset, for the pretraining budget plus the fine-tuning time of that
    subset (`supervised_budget`: the same epochs for every seed), without layer decay."""
    for fraction in cfg.finetune_fractions:
        name = f"finetune@{pct(fraction)}"
        path = result_path(cfg, "supervised", seed, name)
        if path.is_file():
            continue
        plan = supervised_budget(cfg, name, seed)
        say(f"supervised seed {seed} {name}: {plan['epochs']} epochs (~{plan['budget_seconds'] / 60:.1f} min = "
            f"pretraining budget + fine-tuning updates of {plan['from']})")
        out = finetune_run(cfg, "supervised", seed, random_backbone, data, fraction, plan["epochs"], None)
        s = out["summary"]
        recipe = dict(lr=cfg.finetune_lr, layer_decay=None)
        write_json(path, record(cfg, "supervised", seed, name, s["test"]["selected"]["accuracy"],
                                budget_seconds=plan["budget_seconds"], budget_clock=plan["clock"],
                                **finetune_record(out, recipe, {cfg.finetune_lr: s["best"]["accuracy"]},
                                                  plan["epochs"])))
        say(f"supervised seed {seed} {name}: {s['test']['selected']['accuracy']:.2f} % ({s['wall_time_s']:.0f} s)")
