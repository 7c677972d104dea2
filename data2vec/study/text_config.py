"""The text study's settings: the corpus, the GLUE tasks, the arms, the shared encoder, the budget, the protocols
(GLUE, SQuAD/XQuAD), and the recipe each method trains with (`data2vec compare --modality text`; the pipeline is
`data2vec.study.text`).

Differences from a full study: one fixed fine-tuning recipe (lr 1e-4, RoBERTa's schedule) for every arm, not tuned
per arm; a 4 x 256 encoder (BERT-Mini) pretrained for minutes (docs/design.md section 8).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from .budget import Recipe

TEXT_METHODS = ("bert", "data2vec", "data2vec2")  # registry names this study pretrains
GLUE_STUDY_TASKS = ("sst2", "stsb", "mrpc", "rte", "cola")  # SST-2 and STS-B carry the signal at this size
# The engine's text anisotropy guard (stop when the tokens' mean cosine stays above 0.6) was set from data2vec runs
# with layer-norm targets; an MLM encoder's final tokens are anisotropic by nature (Ethayarajh 2019: BERT's top
# layers), so bert's health is recorded but never stops it
ANISOTROPY_GUARDED = ("data2vec", "data2vec2")
# fine-tuning epochs per task (RoBERTa: 10 for all). At 4 x 256 on one CPU core an epoch of SST-2 (18k sentences)
# takes ~5 min and one of STS-B ~3-4 min; random init's STS-B validation peaks early, so STS-B gets 5; MRPC/RTE/CoLA
# carry no pretraining signal at this size and get 3: ~50 min of fine-tuning per arm and seed
# (benchmarks/studies/README.md)
TASK_EPOCHS = {"sst2": 3, "stsb": 5, "mrpc": 3, "rte": 3, "cola": 3}

# Starting points: the registry's reduced text presets (instance-norm targets for data2vec, tau ramp 0.3 of the run)
TEXT_STUDY_RECIPES = {
    "bert": Recipe(),  # BERT's 15 % with 80/10/10, RoBERTa-style optimiser
    "data2vec": Recipe(),  # REDUCED["text"]: instance norm per layer (layer norm left the tokens anisotropic)
    # data2vec 2.0: 2 masks per sample (released clone_batch: 8) and a 2-block conv decoder (released: 5): with the
    # released pair one update costs ~7x BERT's at 4 x 256 (benchmarks/studies/text_costs.py prices them). A
    # starting point priced, not yet tuned; the `mini` text preset carries the same pair, kept here so that every
    # --preset runs it
    "data2vec2": Recipe(overrides=dict(num_masks=2, decoder_layers=2)),
}


@dataclass
class TextCompareConfig:
    """One text comparison: the corpus, the GLUE tasks, the arms, the shared encoder, the budget, the protocols."""

    data: str  # the pretraining corpus: a .txt file, a folder of them, or 'python-docs'
    glue: str  # the GLUE root (one folder per task: SST-2/, STS-B/, ... with train.tsv and dev.tsv)
    out: str  # results folder (JSON per result, table, plots): small, meant to be committed
    runs: str  # run folders (tokenizer, checkpoints): large, keep them out of git
    methods: tuple[str, ...] = TEXT_METHODS  # pretraining arms (registry names)
    tasks: tuple[str, ...] = GLUE_STUDY_TASKS  # GLUE tasks fine-tuned
    budget_minutes: float = 20.0  # pretraining wall-clock per method and seed
    seeds: tuple[int, ...] = (1, 2, 3)  # one pretraining run and one fine-tuning order per seed
    preset: str = "mini"  # the registry preset each method's recipe starts from
    dim: int = 256  # encoder width (4 x 256 = BERT-Mini, the size docs/design.md section 8 quotes)
    depth: int = 4  # encoder blocks
    heads: int = 4  # attention heads
    batch_size: int = 64  # pretraining batch (token blocks of seq_len)
    seq_len: int = 128  # tokens per pretraining block
    vocab_size: int = 8192  # BPE vocabulary trained on the corpus when no tokenizer is given
    tokenizer: str | None = None  # a tokenizer.json (or folder) to use instead of training one
    heldout: str | None = None  # held-out text for the MLM arm's masked-token accuracy (None = that protocol off)
    sst2_train_examples: int | None = 20000  # seeded SST-2 training subset (None = all 67,349)
    task_epochs: dict = field(default_factory=lambda: dict(TASK_EPOCHS))  # fine-tuning epochs per task
    finetune_lr: float = 1e-4  # one recipe for every arm: AdamW, 6 % warm-up, linear decay, wd 0.1 (RoBERTa GLUE)
    finetune_batch_size: int = 32  # RoBERTa GLUE: 16 or 32
    max_length: int = 128  # GLUE tokens per example
    val_fraction: float = 0.1  # validation split carved from each task's training data
    val_max: int = 2000  # at most this many validation examples per task
    calibration_steps: int = 6  # timed updates per method (after 2 untimed ones) that fix the step counts
    heldout_max_blocks: int = 512  # at most this many held-out blocks scored for masked-token accuracy
    squad: str | None = None  # SQuAD v1.1 dev-v1.1.json for the held-out-article protocol (None = off)
    xquad: str | None = None  # folder of xquad.<lang>.json scored zero-shot (needs squad)
    xquad_languages: tuple[str, ...] = ("en", "de", "es")  # Latin-script languages (suit the English BPE)
    squad_arms: tuple[str, ...] | None = None  # arms fine-tuned on SQuAD; None = random and every method
    # the SQuAD recipe for every arm, chosen for a 4 x 256 encoder on a CPU: 3 epochs (BERT: 2-3 on 88k questions; the
    # training half has 4.3k), lr 1e-4 as the GLUE recipe (BERT's 5e-5 and RoBERTa's 1.5e-5 are for 110M-parameter
    # models), batch finetune_batch_size (32, BERT's); one epoch is ~184 updates of ~4 CPU-seconds (32 x 256 tokens)
    squad_epochs: int = 3
    squad_lr: float = 1e-4
    squad_max_length: int | None = None  # tokens per window; None = 384 (BERT) capped at the encoder's positions
    squad_doc_stride: int = 128  # BERT run_squad.py: consecutive windows of a long context start 128 tokens apart
    squad_max_questions: int | None = None  # seeded subset of the training-half questions (None = all)
    squad_eval_max_questions: int | None = None  # seeded subset of each scored set (None = all; --quick only)
    device: str = "cpu"
    clock: str = "cpu"  # the budget's clock, as the image comparison's: "cpu" = this process's CPU seconds (CPU
    #   runs: immune to other work on the machine), "wall" = wall-clock (GPU runs)
    threads: int | None = None  # torch CPU threads (None = torch's choice); recorded with every result
    precision: str = "fp32"  # "fp32" or "bf16" (autocast) for every arm's pretraining and fine-tuning, resolved from
    #   --precision (data2vec.precision); one precision per table: it changes the seconds per update
    compile: bool = False  # torch.compile the encoders' blocks (the same math; the calibration includes its cost)
    quick: bool = False  # the smoke version
    command: str = ""  # the command line, stored with every result
    # recipe changes for a tuning run, {method: {field: value}} from --set METHOD.KEY=VALUE ("lr" = the peak lr);
    # empty for the study itself, whose recipes are TEXT_STUDY_RECIPES. A tuning run reads the validation table,
    # never dev
    recipe_sets: dict = field(default_factory=dict)
    recipes: ClassVar[dict] = TEXT_STUDY_RECIPES  # the study's recipe per method (not stored in config.json)
    # fields that define a text study: results made with other values must not be mixed into one table (methods,
    # seeds, tasks and the SQuAD protocol may be added; a task's epoch count may not change once it has a result:
    # `extra_study_changes`)
    study_fields: ClassVar[tuple] = ("precision", "data", "tokenizer", "budget_minutes", "clock", "preset", "dim",
                                     "depth", "heads", "batch_size", "seq_len", "vocab_size", "sst2_train_examples",
                                     "finetune_lr", "finetune_batch_size", "max_length", "val_fraction", "val_max")
    study_defaults: ClassVar[dict] = {"precision": "fp32"}  # studies from before --precision: float32
    study_name: ClassVar[str] = "text comparison"

    @property
    def arms(self) -> tuple[str, ...]:
        return ("majority", "random") + tuple(self.methods)

    @property
    def budget_s(self) -> float:
        return 60.0 * self.budget_minutes

    def extra_study_changes(self, old: dict) -> list[tuple]:
        """(name, stored, new) for every task whose epoch count changed although it has fine-tuned results (the
        majority class has no epochs)."""
        return [(f"task_epochs[{task}]", epochs, self.task_epochs.get(task))
                for task, epochs in old.get("task_epochs", {}).items()
                if self.task_epochs.get(task) != epochs and any(
                    f.parent.parent.name != "majority" for f in Path(self.out).glob(f"*/seed*/{task}.json"))]
