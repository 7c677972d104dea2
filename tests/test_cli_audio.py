"""Speech through the commands, on folders synthesised by `speech_files` (tones and noise, no data set):
`pretrain --modality audio` (v1 and v2, the health pass, SIGTERM + --resume), `finetune --task keywords` (from a
pretraining run: the feature encoder stays frozen; random init with a validation split carved from train),
`finetune --task ctc` (the loss falls and a string is decoded; an imported transformers Data2VecAudioForCTC whose
head is the one scored), `probe --modality audio`, and bad input as one line with its fix."""

import json
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from speech_files import write_corpus, write_keyword_folder

from data2vec.cli import main

COMMON = ["--device", "cpu", "--precision", "fp32"]


@pytest.fixture(scope="module")
def keywords(tmp_path_factory):
    return write_keyword_folder(tmp_path_factory.mktemp("speech") / "kw")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("speech") / "corpus", sentences=("go up", "no go", "up no"))


def pretrain_args(data, out, method="data2vec", steps=4, *extra):
    return ["pretrain", "--method", method, "--modality", "audio", "--preset", "tiny", "--data", str(data),
            "--steps", str(steps), "--batch-size", "4", "--crop-seconds", "0.4", "--health-every", "2", "--seed", "3",
            "--no-plots", "--out", str(out), "--quiet", *COMMON, *extra]


def records(out):
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def pretrained(keywords, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "d2v-audio"
    assert main(pretrain_args(keywords, out)) == 0
    return out


# ---- pretrain ---------------------------------------------------------------------------------------------------

@pytest.mark.slow  # two tiny CLI runs (~4 s)
@pytest.mark.parametrize("method", ["data2vec", "data2vec2"])
def test_pretrain_audio_runs_with_the_health_pass(keywords, tmp_path, method):
    out = tmp_path / method
    assert main(pretrain_args(keywords, out, method)) == 0
    rows = records(out)
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert all(np.isfinite(r["loss"]) and r["target_std"] > 0 for r in rows)
    assert "health/effective_rank" in rows[0] and "health/anisotropy" in rows[-1]  # the pass reads waveform batches
    config = json.loads((out / "config.json").read_text())
    assert config["modality"] == "audio" and config["data"]["layout"] == "keywords"
    assert config["data"]["crop_samples"] == 6400 and config["data"]["utterances"] == 12  # the train split only
    assert config["method_config"]["encoder"]["modality"] == "audio"
    assert (out / "checkpoint" / "model.safetensors").is_file()


@pytest.mark.slow  # subprocess runs of the CLI (~15 s)
def test_pretrain_audio_sigterm_then_resume_equals_an_uninterrupted_run(keywords, tmp_path):
    steps = 24
    full, cut = tmp_path / "full", tmp_path / "cut"
    assert main(pretrain_args(keywords, full, "data2vec2", steps)) == 0
    proc = subprocess.Popen([sys.executable, "-m", "data2vec", *pretrain_args(keywords, cut, "data2vec2", steps)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if (cut / "metrics.jsonl").is_file() and len((cut / "metrics.jsonl").read_text().splitlines()) >= 2:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=240)
    assert proc.returncode == 143, stderr[-2000:]
    done = len(records(cut))
    assert 2 <= done < steps, "the run finished before SIGTERM arrived"
    assert main(pretrain_args(keywords, cut, "data2vec2", steps, "--resume")) == 0
    assert [r["loss"] for r in records(cut)] == [r["loss"] for r in records(full)]


def test_pretrain_audio_bad_input_is_one_line(keywords, tmp_path, capsys):
    cases = [
        (pretrain_args(tmp_path / "missing", tmp_path / "a"), "speech data not found"),
        (pretrain_args(keywords, tmp_path / "b", "bert"), "does not train on audio"),
        (pretrain_args(keywords, tmp_path / "c")[:-7] + ["--crop-seconds", "0", "--out", str(tmp_path / "c"),
                                                         "--quiet", *COMMON], "--crop-seconds must be > 0"),
    ]
    for args, message in cases:
        assert main(args) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0] and "fix:" in err[0], err
    assert not any((tmp_path / name).exists() for name in "abc")  # a failed launch leaves no folder


# ---- finetune: keywords -------------------------------------------------------------------------------------------

def finetune_args(task, data, out, *extra):
    return ["finetune", "--task", task, "--data", str(data), "--out", str(out), "--batch-size", "4", "--quiet",
            *COMMON, *extra]


@pytest.mark.slow  # a pretraining run and a fine-tuning run (~5 s)
def test_keywords_from_a_pretraining_run_freezes_the_feature_encoder(keywords, pretrained, tmp_path):
    from data2vec.hub import load_pretrained

    out = tmp_path / "kw"
    assert main(finetune_args("keywords", keywords, out, "--init", str(pretrained), "--epochs", "2")) == 0
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["feature_encoder_frozen"] and summary["classes"] == ["go", "no", "up"]
    assert summary["eval_examples"] == 3 and summary["test"]["examples"] == 3  # validation selects, test scored
    assert 0 <= summary["test"]["selected"]["accuracy"] <= 100
    start, tuned = load_pretrained(pretrained), load_pretrained(out / "best")
    assert type(tuned.head).__name__ == "AudioClassificationHead" and tuned.head.num_classes == 3
    frozen = start.backbone.embed.feature_encoder.state_dict()
    for name, tensor in tuned.backbone.embed.feature_encoder.state_dict().items():
        assert torch.equal(tensor, frozen[name]), name
    moved = [n for n, t in tuned.backbone.encoder.state_dict().items()
             if not torch.equal(t, start.backbone.encoder.state_dict()[n])]
    assert moved  # the blocks did train


@pytest.mark.slow  # a fine-tuning run (~3 s)
def test_keywords_without_a_validation_split_carves_one_from_train(tmp_path):
    root = write_keyword_folder(tmp_path / "kw", speakers={"train": 10, "test": 1})
    out = tmp_path / "ft"
    assert main(finetune_args("keywords", root, out, "--preset", "tiny", "--epochs", "1")) == 0
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["eval_examples"] == 3 and summary["train_examples"] == 27  # 10 % of the 30 training recordings
    assert summary["init"] == "random:tiny" and not summary["feature_encoder_frozen"]


# ---- finetune: CTC ------------------------------------------------------------------------------------------------

@pytest.mark.slow  # a fine-tuning run of 15 short epochs (~6 s)
def test_ctc_finetuning_lowers_the_loss_and_decodes_a_string(corpus, tmp_path):
    out = tmp_path / "ctc"
    assert main(finetune_args("ctc", corpus, out, "--preset", "tiny", "--epochs", "15", "--batch-size", "2",
                              "--lr", "3e-3")) == 0
    rows = [json.loads(line) for line in (out / "eval.jsonl").read_text().splitlines()]
    assert rows[-1]["train_loss"] < 0.5 * rows[0]["train_loss"]
    assert all(0 <= r["cer"] for r in rows) and min(r["cer"] for r in rows) < 100
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["main_metric"] == "cer" and summary["config"]["greater_is_better"] is False
    best = min(rows, key=lambda r: r["cer"])["cer"]
    assert summary["best"]["cer"] == best  # the lowest validation CER selects the epoch
    pairs = [line.split("\t") for line in (out / "decoded.txt").read_text().splitlines()]
    assert [ref for ref, _ in pairs] == ["GO UP", "NO GO", "UP NO"]
    assert any(hyp.strip() for _, hyp in pairs)  # at least one non-empty decoded string
    assert set("".join(h for _, h in pairs)) <= set("GONUP ")


def reference_greedy(logits: torch.Tensor, symbols: list[str]) -> str:
    """Best path over (T, V), runs merged, blanks (id 0) and specials dropped, '|' -> space (written here)."""
    best = logits.argmax(-1).tolist()
    kept = [k for i, k in enumerate(best) if (i == 0 or k != best[i - 1]) and k != 0]
    text = "".join(" " if symbols[k] == "|" else symbols[k] for k in kept if len(symbols[k]) == 1)
    return " ".join(text.split())


def edit_distance(a: str, b: str) -> int:
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, cb in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (ca != cb))
    return row[-1]


@pytest.mark.slow  # builds a transformers model, evaluates and fine-tunes it (~5 s)
def test_an_imported_transformers_ctc_head_is_the_one_finetune_uses(corpus, tmp_path, monkeypatch):
    import transformers

    from tasks.audio import CharVocab, load_transcribed

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    vocab = CharVocab.librispeech()
    config = transformers.Data2VecAudioConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, conv_dim=(16,) * 7,
        num_conv_pos_embeddings=3, conv_pos_kernel_size=5, num_conv_pos_embedding_groups=4,
        vocab_size=len(vocab), layer_norm_eps=1e-5)
    torch.manual_seed(0)
    hf = transformers.Data2VecAudioForCTC(config).eval()
    with torch.no_grad():
        hf.lm_head.weight.normal_(0, 1.0)  # a head that decodes something other than blanks
        hf.lm_head.bias.normal_(0, 1.0)
    hf.save_pretrained(tmp_path / "hf")
    # transformers' own decoding of the test split, one utterance at a time (no padding)
    test = load_transcribed(corpus / "transcribed" / "test")
    errors = chars = 0
    for waveform, text in test:
        with torch.no_grad():
            logits = hf(waveform.unsqueeze(0)).logits[0]  # (T, V)
        ref = " ".join(text.upper().split())
        errors += edit_distance(ref, reference_greedy(logits, vocab.symbols))
        chars += len(ref)
    out = tmp_path / "eval"
    assert main(finetune_args("ctc", corpus, out, "--init", str(tmp_path / "hf"), "--eval-only")) == 0
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["final"]["cer"] == pytest.approx(100.0 * errors / chars)
    assert summary["init"] == "huggingface:data2vec-audio"
    # and training starts from that head: one epoch runs from it and writes a best/ with a 32-symbol CTC head
    tuned = tmp_path / "tuned"
    assert main(finetune_args("ctc", corpus, tuned, "--init", str(tmp_path / "hf"), "--epochs", "1")) == 0
    from data2vec.hub import load_pretrained

    head = load_pretrained(tuned / "best").head
    assert type(head).__name__ == "CTCHead" and head.vocab_size == len(vocab)


# ---- probe ------------------------------------------------------------------------------------------------------

@pytest.mark.slow  # a pretraining run and two probe passes (~4 s)
def test_probe_scores_frozen_speech_features(keywords, pretrained, tmp_path, capsys):
    out = tmp_path / "probe"
    assert main(["probe", "--modality", "audio", "--data", str(keywords), "--init", str(pretrained), "--k", "3",
                 "--out", str(out), "--device", "cpu"]) == 0
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["modality"] == "audio" and summary["train_examples"] == 12 and summary["test_examples"] == 3
    assert set(summary["results"]) == {"linear", "knn"}
    assert all(0 <= r["accuracy"] <= 100 for r in summary["results"].values())
    auto = tmp_path / "auto"
    assert main(["probe", "--modality", "audio", "--data", str(keywords), "--preset", "tiny", "--layer", "auto",
                 "--k", "3", "--method", "knn", "--out", str(auto), "--device", "cpu"]) == 0
    chosen = json.loads((auto / "metrics.json").read_text())["results"]["knn"]["features"]
    assert chosen.split("/")[0] in ("block1", "block2", "final") and "/mean" in chosen
    capsys.readouterr()
    assert main(["probe", "--modality", "audio", "--data", str(keywords), "--pooling", "cls", "--out",
                 str(tmp_path / "cls"), "--device", "cpu"]) == 2
    assert "no CLS token" in capsys.readouterr().err
