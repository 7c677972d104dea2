"""The official-weights path end to end, at reduced scale (issue 16 item 5; docs/official_weights.md).

The released `roberta-base` and `facebook/data2vec-text-base` cannot be downloaded here, so each family gets
a stand-in: a tiny random `transformers` model (2 blocks of width 32, 2 heads) saved with `save_pretrained`
next to the tokenizer files a downloaded folder ships, a byte-level BPE `vocab.json` + `merges.txt` with the
RoBERTa specials where the released vocabulary has them (`<s>`=0, `<pad>`=1, `</s>`=2, `<unk>`=3, `<mask>`
last). The roberta folder also holds the `tokenizer.json` that `transformers` writes (roberta-base ships
one; the loader prefers it), and its weights are `model.safetensors`; the data2vec-text folder has
`pytorch_model.bin`, as the released main branch does. Then the documented commands run on them with the
documented flags, only the sizes reduced (1 epoch, a few dozen examples, short lengths, --lr 1e-3 because a
random stand-in has nothing to protect):

1. `data2vec finetune --task sst2 --data <GLUE SST-2 folder> --init <folder>`;
2. `data2vec finetune --task squad --data train-v1.1.json --eval-data dev-v1.1.json --init <folder>`;
3. `data2vec finetune --task xquad --eval-only --init <squad out>/best --data <xquad folder> --language L`;
4. `data2vec convert --to-hf <sst2 out>/best --out <dir> --family <family> --tokenizer <folder>`, read back
   by `transformers.AutoModelForSequenceClassification` and `AutoTokenizer`.

What can fail: our tokenizer against `transformers`' on the folder's files; the exported classifier's logits
against ours (`reference.assert_close_scaled`); the dev accuracy recomputed by `transformers` alone on the
export against the accuracy `metrics.json` recorded; the XQuAD-en evaluation of a file identical to the SQuAD
dev file against the SQuAD run's own best scores (the QA head must come back from best/); EM a multiple of
100 / questions; the question counts against those the test wrote. Each command run here is checked against
docs/official_weights.md (same subcommand, task and flags, plus only the size flags in REDUCED), and every
command of that page must parse with the CLI's own parser.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
from pathlib import Path

import pytest
import torch
from reference import LazyModule, assert_close_scaled

from data2vec.cli import build_parser, main
from data2vec.hub import load_pretrained
from tasks.text.tokenizer import load_tokenizer

transformers = LazyModule("transformers")  # the dev extra: imported by the first test that uses it

FAMILIES = {  # family -> (config class, base model class, weights file the folder ships), classes by name
    "roberta": ("RobertaConfig", "RobertaModel", "model.safetensors"),
    "data2vec-text": ("Data2VecTextConfig", "Data2VecTextModel", "pytorch_model.bin"),
}
MAX_POSITIONS = 66  # 64 tokens + pad_id + 1, as the released 514 = 512 + 2
SQUAD_LENGTH = 64  # --max-length of the SQuAD runs (the documented default is 384)
SPECIALS = ("<s>", "<pad>", "</s>", "<unk>")  # ids 0..3 as in the released vocab.json; <mask> goes last
POSITIVE, NEGATIVE = ("great", "good", "wonderful"), ("awful", "bad", "boring")
FILLER = "the a this that movie film plot actor story was is very quite really".split()
DOC = Path(__file__).resolve().parent.parent / "docs" / "official_weights.md"  # the commands for the real weights
REDUCED = {"--epochs", "--batch-size", "--max-length", "--lr", "--quiet"}  # the only flags a run here may add


def documented_commands():
    """Every `data2vec ...` command in the ```bash blocks of docs/official_weights.md, split into argv."""
    blocks = re.findall(r"```bash\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)
    lines = "\n".join(blocks).replace("\\\n", " ").splitlines()  # join the `\` continuation lines
    return [shlex.split(line, comments=True)[1:] for line in lines if line.startswith("data2vec ")]


def key(argv):
    """What identifies a documented command: the subcommand, and its --task, --language or --family."""
    values = dict(zip(argv, argv[1:], strict=False))
    return (argv[0], values.get("--task"), values.get("--language"), values.get("--family"))


def as_documented(argv):
    """`argv`, after checking that it is a documented command with only REDUCED flags added (--device left out)."""
    flags = {a for a in argv if a.startswith("--")}
    documented = [d for d in documented_commands() if key(d) == key(argv)]
    assert documented, f"no command like {key(argv)} in {DOC.name}"
    wanted = {a for a in documented[0] if a.startswith("--")} - {"--device"}
    assert wanted <= flags, f"{key(argv)}: the documented flags {sorted(wanted - flags)} are missing here"
    assert flags - wanted <= REDUCED, f"{key(argv)}: flags {sorted(flags - wanted - REDUCED)} are not in {DOC.name}"
    return argv


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # a call that reached for the network would fail, not hang


def sst2_rows(n, seed):
    """(sentence, label) pairs: filler words and one word that decides the label (1 = positive)."""
    g = torch.Generator().manual_seed(seed)
    rows = []
    for i in range(n):
        label = i % 2
        words = [FILLER[j] for j in torch.randint(len(FILLER), (5,), generator=g)]
        words.insert(3, (POSITIVE if label else NEGATIVE)[i % 3])
        rows.append((" ".join(words), label))
    return rows


def squad_file(path, articles):
    """A SQuAD v1.1 JSON file from [(title, context, [(question, answer), ...]), ...]; returns the questions."""
    data = []
    for a, (title, context, qas) in enumerate(articles):
        entries = [{"id": f"{path.stem}-{a}-{q}", "question": question,
                    "answers": [{"text": answer, "answer_start": context.index(answer)}]}
                   for q, (question, answer) in enumerate(qas)]
        data.append({"title": title, "paragraphs": [{"context": context, "qas": entries}]})
    path.write_text(json.dumps({"version": "1.1", "data": data}, ensure_ascii=False), encoding="utf-8")
    return sum(len(qas) for _, _, qas in articles)


TRAIN_ARTICLES = [
    ("Book", "Jane wrote the book in 1990. It was her first novel.",
     [("Who wrote the book?", "Jane"), ("When was the book written?", "1990")]),
    ("France", "Paris is the capital of France. The river Seine runs through it.",
     [("What is the capital of France?", "Paris"), ("Which river runs through Paris?", "Seine")]),
    ("Music", "The band played in Berlin in 2004 and in Rome in 2006.",
     [("Where did the band play in 2004?", "Berlin"), ("When did the band play in Rome?", "2006")]),
]
# 5 questions whose answers cover nearly all of their short contexts, so that any span a random model picks
# overlaps them (F1 > 0) and the XQuAD-en rescoring below compares two nonzero numbers
DEV_ARTICLES = [
    ("Film", "Tom and his two brothers made the film in 1985 in a small town near the sea.",
     [("Who made the film, when and where?", "Tom and his two brothers made the film in 1985 in a small town near "
                                              "the sea"),
      ("What happened in 1985?", "Tom and his two brothers made the film in 1985"),
      ("Where was the film made?", "in 1985 in a small town near the sea")]),
    ("Spain", "Madrid is the capital and the largest city of Spain.",
     [("What is Madrid?", "Madrid is the capital and the largest city of Spain"),
      ("What is the largest city of Spain?", "Madrid is the capital and the largest city")]),
]
XQUAD_ARTICLES = {  # XQuAD translates the same questions; these are short stand-ins with non-ASCII text
    "de": [("Österreich", "Wien ist die Hauptstadt von Österreich. Die Donau fließt durch Wien.",
            [("Was ist die Hauptstadt von Österreich?", "Wien"), ("Welcher Fluss fließt durch Wien?", "Donau")]),
           ("Bücher", "Günter schrieb das Buch im Jahr 1959 in München.",
            [("Wer schrieb das Buch?", "Günter"), ("Wann schrieb er das Buch?", "1959"),
             ("Wo schrieb er das Buch?", "München")])],
    "es": [("España", "Madrid es la capital de España. El río Manzanares pasa por Madrid.",
            [("¿Cuál es la capital de España?", "Madrid"), ("¿Qué río pasa por Madrid?", "Manzanares"),
             ("¿De qué país es Madrid la capital?", "España"), ("¿Por qué ciudad pasa el río?", "Madrid")])],
}


def randomise_(model, seed):
    """Weights ~ N(0, 0.2^2), LayerNorm gains ~ 1 + N(0, 0.2^2): a fresh model's zero biases and unit gains
    would let an export that swapped two of them still pass the logits comparison."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            gain = name.endswith("LayerNorm.weight")
            p.copy_(torch.randn(p.shape, generator=g) * 0.2 + (1.0 if gain else 0.0))
    return model


def write_bpe_files(folder, corpus):
    """vocab.json + merges.txt of a byte-level BPE trained on `corpus`, laid out as RoBERTa's: the four
    specials first, `<mask>` appended as the last id (50264 in the released vocabulary)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=320, min_frequency=1, special_tokens=list(SPECIALS),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(corpus, trainer=trainer)
    tok.model.save(str(folder))  # vocab.json, merges.txt
    vocab = json.loads((folder / "vocab.json").read_text(encoding="utf-8"))
    assert [vocab[t] for t in SPECIALS] == [0, 1, 2, 3]
    vocab["<mask>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    return vocab


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """The tiny data sets, in the layouts of the official distributions: a GLUE SST-2 folder (train.tsv, dev.tsv
    with a `sentence<TAB>label` header), SQuAD v1.1 train/dev JSON, an XQuAD folder of xquad.<lang>.json."""
    root = tmp_path_factory.mktemp("data")
    sst2 = root / "glue" / "SST-2"
    sst2.mkdir(parents=True)
    for split, n, seed in (("train", 24, 0), ("dev", 12, 1)):
        lines = ["sentence\tlabel"] + [f"{s}\t{y}" for s, y in sst2_rows(n, seed)]
        (sst2 / f"{split}.tsv").write_text("\n".join(lines) + "\n")
    squad = root / "squad"
    squad.mkdir()
    counts = {"train": squad_file(squad / "train-v1.1.json", TRAIN_ARTICLES),
              "dev": squad_file(squad / "dev-v1.1.json", DEV_ARTICLES)}
    xquad = root / "xquad"
    xquad.mkdir()
    for language, articles in XQUAD_ARTICLES.items():
        counts[language] = squad_file(xquad / f"xquad.{language}.json", articles)
    shutil.copyfile(squad / "dev-v1.1.json", xquad / "xquad.en.json")  # XQuAD-en is SQuAD dev text
    counts["en"] = counts["dev"]
    return {"sst2": sst2, "squad": squad, "xquad": xquad, "counts": counts}


@pytest.fixture(scope="module", params=list(FAMILIES))
def checkpoint(request, tmp_path_factory, data):
    """A random HF checkpoint folder of the family, with its tokenizer files, as a download would hold it."""
    family = request.param
    config_cls, model_cls, weights = FAMILIES[family]
    config_cls, model_cls = getattr(transformers, config_cls), getattr(transformers, model_cls)
    folder = tmp_path_factory.mktemp(family)
    corpus = [s for s, _ in sst2_rows(200, 2)]
    for articles in (TRAIN_ARTICLES, DEV_ARTICLES, *XQUAD_ARTICLES.values()):
        corpus += [t for _, context, qas in articles for t in (context, *(q for q, _ in qas))]
    vocab = write_bpe_files(folder, corpus)
    config = config_cls(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=MAX_POSITIONS, pad_token_id=1, bos_token_id=0,
                        eos_token_id=2, type_vocab_size=1, layer_norm_eps=1e-5,  # the released configs' values
                        attn_implementation="eager")
    torch.manual_seed(0)
    model = randomise_(model_cls(config), seed=0)
    model.save_pretrained(folder)  # config.json + model.safetensors
    if weights == "pytorch_model.bin":  # the released folder's format (2022): a pickled state dict, which then
        state = dict(model.state_dict())  # also held the index buffer `embeddings.position_ids` (1, P)
        state["embeddings.position_ids"] = torch.arange(MAX_POSITIONS)[None]
        torch.save(state, folder / weights)
        (folder / "model.safetensors").unlink()
    if family == "roberta":  # roberta-base also ships tokenizer.json (+ tokenizer_config.json)
        transformers.RobertaTokenizer.from_pretrained(folder).save_pretrained(folder)
    assert (folder / weights).is_file() and (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file()
    return family, folder


@pytest.fixture(scope="module")
def sst2_run(checkpoint, data, tmp_path_factory):
    family, folder = checkpoint
    out = tmp_path_factory.mktemp(f"runs-{family}") / "sst2"
    assert main(as_documented(["finetune", "--task", "sst2", "--data", str(data["sst2"]), "--init", str(folder),
                               "--out", str(out), "--epochs", "1", "--batch-size", "8", "--max-length", "32",
                               "--lr", "1e-3", "--quiet"])) == 0
    return out


@pytest.fixture(scope="module")
def squad_run(checkpoint, data, tmp_path_factory):
    family, folder = checkpoint
    out = tmp_path_factory.mktemp(f"runs-{family}") / "squad"
    assert main(as_documented(["finetune", "--task", "squad", "--data", str(data["squad"] / "train-v1.1.json"),
                               "--eval-data", str(data["squad"] / "dev-v1.1.json"), "--init", str(folder),
                               "--out", str(out), "--epochs", "1", "--batch-size", "4",
                               "--max-length", str(SQUAD_LENGTH), "--lr", "1e-3", "--quiet"])) == 0
    return out


def test_the_cli_reads_the_folders_tokenizer_as_transformers_does(checkpoint):
    """The tokenizer `finetune --init FOLDER` takes from the folder encodes as `transformers`' own reader."""
    family, folder = checkpoint
    ours = load_tokenizer(folder)
    theirs = transformers.AutoTokenizer.from_pretrained(folder)
    assert (ours.cls_id, ours.pad_id, ours.sep_id, ours.unk_id) == (0, 1, 2, 3)
    assert ours.mask_id == theirs.mask_token_id == ours.vocab_size - 1  # <mask> last, as in the release
    texts = ["Was ist die Hauptstadt von Österreich?", "this movie was really great", "¿Qué río pasa?"]
    for text in texts:
        assert ours.encode(text) == theirs(text)["input_ids"], text
    assert ours.encode_pair(texts[0], texts[1]).input_ids == theirs(texts[0], texts[1])["input_ids"]


def test_sst2_from_the_folder(checkpoint, sst2_run):
    family, _ = checkpoint
    metrics = json.loads((sst2_run / "metrics.json").read_text())
    assert metrics["init"] == f"huggingface:{family}"
    assert metrics["main_metric"] == "score" and len(metrics["history"]) == 1
    assert metrics["train_examples"] == 24 and metrics["eval_examples"] == 12
    assert {"accuracy", "score", "epoch"} <= set(metrics["best"]) and 0 <= metrics["best"]["accuracy"] <= 100
    # 12 dev sentences: an accuracy is a whole number of them
    assert metrics["best"]["accuracy"] * 12 / 100 == pytest.approx(round(metrics["best"]["accuracy"] * 12 / 100))
    assert metrics["steps"] == 3  # 24 sentences / batch 8, one epoch
    assert (sst2_run / "best" / "model.safetensors").is_file() and (sst2_run / "tokenizer" / "tokenizer.json").is_file()


def test_squad_from_the_folder_then_xquad_zero_shot(checkpoint, squad_run, data, tmp_path, capsys):
    family, _ = checkpoint
    counts = data["counts"]
    metrics = json.loads((squad_run / "metrics.json").read_text())
    assert metrics["init"] == f"huggingface:{family}" and metrics["main_metric"] == "f1"
    assert metrics["train_questions"] == counts["train"] and metrics["eval_questions"] == counts["dev"]
    best = metrics["best"]
    for name in ("exact_match", "f1"):
        assert 0 <= best[name] <= 100
    em_count = best["exact_match"] * counts["dev"] / 100  # EM is 0 or 1 per question
    assert em_count == pytest.approx(round(em_count))
    assert best["f1"] > 0  # the long dev answers: else the XQuAD-en comparison below would compare zeros
    for language in ("en", "de", "es"):
        out = tmp_path / f"xquad-{language}"
        code = main(as_documented(["finetune", "--task", "xquad", "--eval-only", "--init", str(squad_run / "best"),
                                   "--data", str(data["xquad"]), "--language", language, "--out", str(out),
                                   "--max-length", str(SQUAD_LENGTH)]))
        assert code == 0, capsys.readouterr().err
        assert "restored the task head" in capsys.readouterr().out
        xq = json.loads((out / "metrics.json").read_text())
        assert xq["eval_only"] and xq["eval_data"].endswith(f"xquad.{language}.json")
        assert xq["eval_questions"] == counts[language] and xq["eval_examples"] >= counts[language]
        for name in ("exact_match", "f1"):
            assert 0 <= xq["final"][name] <= 100
        em_count = xq["final"]["exact_match"] * counts[language] / 100  # EM is 0 or 1 per question
        assert em_count == pytest.approx(round(em_count))
        if language == "en":  # the same file the SQuAD run evaluated, the same weights: the same scores
            assert xq["final"]["exact_match"] == pytest.approx(best["exact_match"])
            assert xq["final"]["f1"] == pytest.approx(best["f1"])


def test_convert_back_to_hf_and_transformers_reproduces_it(checkpoint, sst2_run, data, tmp_path):
    family, folder = checkpoint
    export = tmp_path / "hf"
    assert main(as_documented(["convert", "--to-hf", str(sst2_run / "best"), "--out", str(export), "--family", family,
                               "--tokenizer", str(folder)])) == 0
    config = json.loads((export / "config.json").read_text())
    assert config["model_type"] == family and config["pad_token_id"] == 1
    for name in ("vocab.json", "merges.txt"):
        assert (export / name).read_bytes() == (folder / name).read_bytes()
    hf = transformers.AutoModelForSequenceClassification.from_pretrained(export, attn_implementation="eager").eval()
    assert type(hf).__name__ == FAMILIES[family][1].replace("Model", "ForSequenceClassification")
    tokenizer = transformers.AutoTokenizer.from_pretrained(export)
    rows = [line.split("\t") for line in (data["sst2"] / "dev.tsv").read_text().splitlines()[1:]]
    batch = tokenizer([s for s, _ in rows], padding=True, return_tensors="pt")  # (12, T), pads = 1
    ours = load_pretrained(sst2_run / "best")
    with torch.no_grad():
        theirs = hf(**batch).logits  # (12, 2)
        mine = ours.logits(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])  # (12, 2)
    assert_close_scaled(mine, theirs)
    # transformers alone, on the export, gives the dev accuracy our run recorded for its best epoch
    labels = torch.tensor([int(y) for _, y in rows])
    accuracy = 100.0 * (theirs.argmax(-1) == labels).float().mean().item()
    recorded = json.loads((sst2_run / "metrics.json").read_text())["best"]["accuracy"]
    assert accuracy == pytest.approx(recorded)


def test_every_documented_command_parses():
    """The page's commands are real: the CLI's own parser accepts each (an unknown flag or choice exits)."""
    parser = build_parser()
    commands = documented_commands()
    for argv in commands:
        try:
            parser.parse_args(argv)
        except SystemExit:
            pytest.fail(f"{DOC.name}: `data2vec {shlex.join(argv)}` does not parse")
    keys = {key(argv) for argv in commands}
    for task in ("sst2", "squad"):
        assert ("finetune", task, None, None) in keys
    for language in ("en", "de", "es"):
        assert ("finetune", "xquad", language, None) in keys
    for family in FAMILIES:
        assert ("convert", None, None, family) in keys
    inits = {dict(zip(a, a[1:], strict=False)).get("--init") for a in commands if a[0] == "finetune"}
    assert {"d2v-text-base", "roberta-base"} <= inits  # both released models, not only one
