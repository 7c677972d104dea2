"""The SQuAD / XQuAD protocol of the text study (`data2vec compare --modality text`): fine-tune each encoder of the
text study with a span head on one half of the SQuAD v1.1 dev articles, score EM / F1 on the other half, and
score XQuAD zero-shot in other languages with the same weights.

The protocol
- The data: SQuAD v1.1 dev (Rajpurkar et al. 2016, 48 articles, 2,067 paragraphs, 10,570 questions) is the only
  labelled SQuAD text here, so it is split in two halves by ARTICLE (`split_squad_articles`, seeded, SPLIT_SEED for
  every arm and seed, as the GLUE dev set is one fixed set): no paragraph, and no article's topic, is shared between
  the training half and the evaluation half.
- XQuAD (Artetxe et al. 2020) translated 240 paragraphs / 1,190 questions of SQuAD v1.1 dev (5 paragraphs
  of each of the 48 articles) and kept the SQuAD question ids. Every paragraph of the training half that carries an
  XQuAD id is removed from it (counted in the results), so zero-shot XQuAD never scores a context the model was
  trained on. The XQuAD paragraphs of the evaluation half stay in it (the model never saw them either).
- Model selection: a validation split carved from the training half, again by article (val_fraction, 10 %, of its
  articles, at least one), picks the epoch; the evaluation half and XQuAD are scored once, with the selected
  epoch's weights (the last epoch's score on the evaluation half is stored beside it, labelled).
- One recipe for every arm (TextCompareConfig's squad_* fields): AdamW with RoBERTa's schedule (6 % warm-up,
  linear decay), the loss of BERT section 4.2, L = (CE(start) + CE(end)) / 2, and the post-processing / official
  EM-F1 of `tasks.text.squad`.
- Results: OUT/<arm>/seed<k>/squad-heldout.json (score = F1 on the evaluation half; EM, F1, counts, epochs, chosen
  epoch) and OUT/<arm>/seed<k>/xquad-<lang>.json (score = F1; EM). OUT/squad-split.json keeps the split (titles and
  counts); a later run whose split differs (other --squad, --xquad or --squad-max-questions) is refused.

Differences from the original protocols
- The papers fine-tune on SQuAD train (87,599 questions) and report dev; here dev is split in two, so training sees
  4,284 questions (the 24-article training half, 5,290 questions once its 120 XQuAD paragraphs are removed, less
  the 2 validation articles' 1,006), far fewer: expect F1 well below the papers' 80-90.
- max_length defaults to 384 (BERT's run_squad.py) capped at the encoder's positions (mini: 256), doc stride 128.
- XQuAD is scored only for the languages given (Latin script by default: en, de, es), with the English tokenizer of
  the comparison; a byte-level BPE encodes any script, but non-Latin text falls apart into bytes.
"""

from __future__ import annotations

import copy
import random
from dataclasses import dataclass
from pathlib import Path

from .budget import compute_settings
from .errors import StudyError
from .glue import text_record
from .records import result_path, say, write_json
from .text_config import TextCompareConfig

SPLIT_SEED = 0  # the same halves and validation articles for every arm and seed (a fixed evaluation set)
XQUAD_LANGUAGES = ("en", "de", "es")  # Latin-script languages: the English BPE encodes them as words
DEFAULT_MAX_LENGTH = 384  # BERT / the `finetune` CLI; capped at the encoder's position table (mini: 256)


# ---- the split ----------------------------------------------------------------------------------------------


def counts(articles: list) -> dict:
    """Articles, paragraphs and questions of a SQuAD `data` list."""
    return {"articles": len(articles), "paragraphs": sum(len(a["paragraphs"]) for a in articles),
            "questions": sum(len(p["qas"]) for a in articles for p in a["paragraphs"])}


def question_ids(articles: list) -> set[str]:
    return {qa["id"] for a in articles for p in a["paragraphs"] for qa in p["qas"]}


def carrying(paragraph: dict, ids: set[str]) -> bool:
    """True = the paragraph has a question whose id is in `ids` (an XQuAD paragraph)."""
    return any(qa["id"] in ids for qa in paragraph["qas"])


def split_by_article(articles: list, n_first: int, seed: int) -> tuple[list, list]:
    """(first, second): a seeded permutation of the articles, its first n_first in the first part; each part keeps
    the file's article order."""
    order = list(range(len(articles)))
    random.Random(seed).shuffle(order)
    first = set(order[:n_first])
    return ([a for i, a in enumerate(articles) if i in first], [a for i, a in enumerate(articles) if i not in first])


def split_squad_articles(articles: list, seed: int, xquad_ids: set[str] | frozenset = frozenset()) -> tuple[list, list]:
    """(train_articles, eval_articles): half of the articles (floor(n / 2), seeded) for training, the rest for
    evaluation; every training-half paragraph with a question id in `xquad_ids` is removed (and an article left
    without paragraphs is dropped). The input is not modified."""
    if len(articles) < 4:
        raise ValueError(f"the SQuAD file has {len(articles)} articles; the held-out protocol needs at least 4 (two "
                         "to train and validate on, the rest to evaluate); fix: pass SQuAD v1.1 dev (48 articles)")
    train, evaluation = split_by_article(articles, len(articles) // 2, seed)
    kept = []
    for article in train:
        paragraphs = [p for p in article["paragraphs"] if not carrying(p, xquad_ids)]
        if paragraphs:
            kept.append({**article, "paragraphs": paragraphs})
    return kept, evaluation


def xquad_paragraphs(articles: list, xquad_ids: set[str]) -> int:
    return sum(carrying(p, xquad_ids) for a in articles for p in a["paragraphs"])


# ---- the data, encoded once for every arm ------------------------------------------------------------------


@dataclass
class SquadSet:
    """One scored set: its articles (for the official script), examples and features (windows)."""

    articles: list
    examples: list  # SquadExample
    features: list  # SquadFeature


@dataclass
class SquadData:
    fit: SquadSet  # the training half less the validation articles (and the XQuAD paragraphs)
    val: SquadSet  # validation articles carved from the training half: they choose the epoch
    eval: SquadSet  # the held-out half: only reported
    xquad: dict  # language -> SquadSet
    split: dict  # the counts and titles stored in OUT/squad-split.json and in every results file
    max_length: int
    doc_stride: int


def read_squad(path: str, flag: str) -> list:
    """The `data` list of a SQuAD-format file; a missing or malformed file is a one-line StudyError."""
    from tasks.text.squad import load_squad

    try:
        return load_squad(path)["data"]
    except FileNotFoundError:
        raise StudyError(f"{flag} {path}: no such file; fix: give SQuAD v1.1 dev-v1.1.json (and for --xquad a folder "
                         "of xquad.<lang>.json)") from None
    except ValueError as error:
        fix = "" if "fix:" in str(error) else "; fix: give the official SQuAD v1.1 / XQuAD JSON files"
        raise StudyError(f"{flag}: {error}{fix}") from None


def xquad_file(cfg: TextCompareConfig, lang: str) -> Path:
    return Path(cfg.xquad) / f"xquad.{lang}.json"


def check_squad(cfg: TextCompareConfig) -> None:
    """Every file exists and is SQuAD format (before any pretraining starts)."""
    if not cfg.squad:
        return
    articles = read_squad(cfg.squad, "--squad")
    if len(articles) < 4:
        raise StudyError(f"--squad {cfg.squad}: {len(articles)} articles; the held-out protocol needs at least 4 (two "
                         "to train and validate on, the rest to evaluate); fix: pass SQuAD v1.1 dev (48 articles)")
    for lang in cfg.xquad_languages if cfg.xquad else ():
        if not xquad_file(cfg, lang).is_file():
            raise StudyError(f"--xquad {cfg.xquad}: no xquad.{lang}.json; fix: download XQuAD into that folder or drop "
                             f"{lang} from --xquad-languages")
        read_squad(str(xquad_file(cfg, lang)), "--xquad")


def max_length_for(cfg: TextCompareConfig, backbone_cfg) -> int:
    """--squad-max-length, or 384 capped at the encoder's positions; one that does not fit is a StudyError."""
    limit = backbone_cfg.max_positions - backbone_cfg.position_offset
    if cfg.squad_max_length is None:
        return min(DEFAULT_MAX_LENGTH, limit)
    if cfg.squad_max_length > limit:
        raise StudyError(f"--squad-max-length {cfg.squad_max_length} exceeds the encoder's {limit} positions; fix: use "
                         f"--squad-max-length {limit} or less (or leave it out)")
    return cfg.squad_max_length


def encode(articles: list, tok, max_length: int, stride: int) -> SquadSet:
    from tasks.text import squad

    examples = squad.read_examples({"data": articles})
    try:
        features = squad.prepare_features(examples, tok, max_length, stride)
    except ValueError as error:
        raise StudyError(f"{error}; fix: raise --squad-max-length") from None
    return SquadSet(articles, examples, features)


def load_squad_data(cfg: TextCompareConfig, tok, backbone_cfg) -> SquadData:
    """Read, split, subset and encode SQuAD (and XQuAD) once (`record_squad_split` writes or checks the split)."""
    from tasks.text.squad import limit_questions

    articles = read_squad(cfg.squad, "--squad")
    xquad = {lang: read_squad(str(xquad_file(cfg, lang)), "--xquad") for lang in cfg.xquad_languages} \
        if cfg.xquad else {}
    ids: set[str] = set().union(*(question_ids(a) for a in xquad.values()))  # XQuAD keeps the ids in every language
    train_half, eval_half = split_squad_articles(articles, SPLIT_SEED, ids)
    train_titles = {a["title"] for a in train_half}
    removed = xquad_paragraphs([a for a in articles if a["title"] in train_titles], ids)
    before = counts(train_half)
    train_half = limit_questions(train_half, cfg.squad_max_questions, SPLIT_SEED)
    if len(train_half) < 2:
        raise StudyError(f"--squad {cfg.squad}: the training half keeps {len(train_half)} article(s) once the XQuAD "
                         "paragraphs are removed; it needs 2 (one to validate on); fix: pass SQuAD v1.1 dev, or raise "
                         "--squad-max-questions")
    n_val = min(len(train_half) - 1, max(1, int(round(cfg.val_fraction * len(train_half)))))
    val_articles, fit_articles = split_by_article(train_half, n_val, SPLIT_SEED)
    eval_half = limit_questions(eval_half, cfg.squad_eval_max_questions, SPLIT_SEED)  # --quick only
    xquad = {lang: limit_questions(a, cfg.squad_eval_max_questions, SPLIT_SEED) for lang, a in xquad.items()}
    split = {
        "squad": cfg.squad, "xquad": cfg.xquad, "split_seed": SPLIT_SEED, "squad_file": counts(articles),
        "train_half": before, "fit": counts(fit_articles), "validation": counts(val_articles),
        "eval": counts(eval_half),
        "xquad_questions": len(ids), "xquad_paragraphs_removed_from_train": removed,
        "max_questions": cfg.squad_max_questions, "eval_max_questions": cfg.squad_eval_max_questions,
        "fit_titles": [a["title"] for a in fit_articles], "validation_titles": [a["title"] for a in val_articles],
        "eval_titles": [a["title"] for a in eval_half]}
    max_length = max_length_for(cfg, backbone_cfg)
    stride = min(cfg.squad_doc_stride, max(1, max_length // 2))
    data = SquadData(encode(fit_articles, tok, max_length, stride), encode(val_articles, tok, max_length, stride),
                     encode(eval_half, tok, max_length, stride),
                     {lang: encode(a, tok, max_length, stride) for lang, a in xquad.items()}, split, max_length, stride)
    say(f"SQuAD held-out: {split['fit']['questions']} fine-tuning + {split['validation']['questions']} validation "
        f"questions ({len(data.fit.features)} + {len(data.val.features)} windows of {max_length} tokens; "
        f"{removed} XQuAD paragraphs removed from the training half), {split['eval']['questions']} evaluation "
        "questions" + "".join(f", xquad-{lang} {len(s.examples)}" for lang, s in data.xquad.items()))
    return data


def record_squad_split(cfg: TextCompareConfig, split: dict) -> None:
    """Write OUT/squad-split.json, or check that the one there holds the same split (results made on another split
    are not mixed)."""
    import json

    path = Path(cfg.out) / "squad-split.json"
    if path.is_file():  # the paths may be spelled differently; what was split must be the same
        stored = json.loads(path.read_text())
        if any(stored.get(k) != v for k, v in split.items() if k not in ("squad", "xquad")):
            raise StudyError(f"{path} holds another SQuAD split (other --squad, --xquad or --squad-max-questions) than "
                             "this run's; fix: use the original flags, or another --out")
    else:
        write_json(path, split)


# ---- fine-tuning and scoring -------------------------------------------------------------------------------


def squad_arms(cfg: TextCompareConfig) -> tuple[str, ...]:
    return cfg.squad_arms if cfg.squad_arms is not None else ("random",) + tuple(cfg.methods)


def squad_protocols(cfg: TextCompareConfig, arm: str) -> list[str]:
    """squad-heldout and one xquad-<lang> per language, for the --squad-arms; none without --squad."""
    if not cfg.squad or arm not in squad_arms(cfg):
        return []
    return ["squad-heldout"] + ([f"xquad-{lang}" for lang in cfg.xquad_languages] if cfg.xquad else [])


def score_set(model, data: SquadSet, collate, batch_size: int, device: str) -> dict:
    """{"exact_match", "f1"} (percent) of the model's best spans on one set."""
    from torch.utils.data import DataLoader

    from tasks.text import squad

    from ..finetune import predict

    outputs, _ = predict(model, DataLoader(data.features, batch_size=batch_size, collate_fn=collate), "span", device)
    answers = squad.postprocess_predictions(data.examples, data.features, [s for s, _ in outputs],
                                            [e for _, e in outputs])
    return squad.squad_scores({"data": data.articles}, answers)


def finetune_squad(cfg: TextCompareConfig, arm: str, seed: int, backbone, data: SquadData, tok) -> None:
    """Fine-tune (epoch chosen on the validation articles), score the evaluation half and every XQuAD language with
    the selected weights. Finished results are skipped; XQuAD languages added later are scored from the run's
    kept best checkpoint without fine-tuning again."""
    from tasks.text.squad import SquadCollator

    from ..checkpoint import load_checkpoint, set_seed
    from ..finetune import FinetuneConfig, finetune
    from ..heads import QuestionAnsweringHead, TaskModel

    pending = [p for p in squad_protocols(cfg, arm) if not result_path(cfg, arm, seed, p).is_file()]
    if not pending:
        return
    set_seed(seed)  # the head's initial weights
    model = TaskModel(copy.deepcopy(backbone), QuestionAnsweringHead(backbone.cfg.dim))
    recipe = dict(lr=cfg.squad_lr, batch_size=cfg.finetune_batch_size, epochs=cfg.squad_epochs)
    fcfg = FinetuneConfig(task_type="span", main_metric="f1", seed=seed, device=cfg.device, save_best=True,
                          log_every=0, **recipe, **compute_settings(cfg))
    collate = SquadCollator(tok.pad_id)
    eval_batch = 2 * cfg.finetune_batch_size
    run_dir = Path(cfg.runs) / f"finetune-{arm}-seed{seed}-squad"
    heldout_path = result_path(cfg, arm, seed, "squad-heldout")
    if heldout_path.is_file():  # only XQuAD languages are missing: the selected weights are the kept checkpoint
        if not (run_dir / "best").is_dir():
            raise StudyError(f"{heldout_path} exists but its checkpoint {run_dir / 'best'} is gone, so {pending} "
                             f"cannot be scored with the same weights; fix: delete {heldout_path} to fine-tune again")
        load_checkpoint(run_dir / "best", model=model)
        model.to(cfg.device)
    else:
        def metric_fn(outputs, _labels):  # called on the validation articles only
            from tasks.text import squad

            answers = squad.postprocess_predictions(data.val.examples, data.val.features, [s for s, _ in outputs],
                                                    [e for _, e in outputs])
            return squad.squad_scores({"data": data.val.articles}, answers)

        s = finetune(model, data.fit.features, data.val.features, fcfg, run_dir, metric_fn, collate_fn=collate,
                     quiet=True, resume=True)  # a run stopped between epochs goes on from its last one
        last = score_set(model, data.eval, collate, eval_batch, cfg.device)  # the last epoch's weights, labelled
        load_checkpoint(run_dir / "best", model=model)  # the epoch chosen on the validation articles
        model.to(cfg.device)
        selected = score_set(model, data.eval, collate, eval_batch, cfg.device)
        write_json(heldout_path, text_record(
            cfg, arm, seed, "squad-heldout", selected["f1"], "f1", exact_match=selected["exact_match"],
            f1=selected["f1"], selected_epoch=s["best"]["epoch"], epochs=cfg.squad_epochs,
            last_epoch_f1=last["f1"], last_epoch_exact_match=last["exact_match"], validation_best=s["best"]["f1"],
            counts=data.split, max_length=data.max_length, doc_stride=data.doc_stride, recipe=recipe,
            fit_windows=len(data.fit.features), seconds=s["wall_time_s"], history=s["history"], squad=cfg.squad,
            selection="epoch chosen on validation articles carved from the training half; the evaluation half is "
                      "scored once with those weights (last_epoch_* beside it)"))
        say(f"{arm} seed {seed} squad-heldout: F1 {selected['f1']:.2f} EM {selected['exact_match']:.2f} (epoch "
            f"{s['best']['epoch']} of {cfg.squad_epochs} chosen on validation; last F1 {last['f1']:.2f}; "
            f"{s['wall_time_s']:.0f} s)")
    for lang, xset in data.xquad.items():
        path = result_path(cfg, arm, seed, f"xquad-{lang}")
        if path.is_file():
            continue
        scores = score_set(model, xset, collate, eval_batch, cfg.device)
        write_json(path, text_record(
            cfg, arm, seed, f"xquad-{lang}", scores["f1"], "f1", exact_match=scores["exact_match"], f1=scores["f1"],
            language=lang, questions=len(xset.examples), windows=len(xset.features), xquad=str(xquad_file(cfg, lang)),
            weights="the squad-heldout run's selected epoch (zero-shot: no XQuAD text seen in fine-tuning)"))
        say(f"{arm} seed {seed} xquad-{lang}: F1 {scores['f1']:.2f} EM {scores['exact_match']:.2f} (zero-shot)")
