"""One study, any modality: the equal-budget comparison's run, from the stored settings to the report.

`run_comparison(cfg)` does the same steps for images, text and speech (docs/design.md section 8): check the inputs
and the stored settings, write OUT/config.json (with every machine that has launched the study), load the data (or
take what a budget curve loaded once for all its points), calibrate every method back to back, then for every seed
score every arm (a method is pretrained first; finished results are skipped, so a rerun continues) and rebuild the
report after each. The modality's part is a module with the same seven functions: `check`, `config_record`,
`load`, `prepare`, `scored_arms`, `start_seed`, `score_arm` (`data2vec.study.vision` for `CompareConfig`,
`data2vec.study.text` for `TextCompareConfig`, `data2vec.study.audio` for `AudioCompareConfig`).

Differences from the papers: they report single runs at full scale; every number here is a mean over seeds of
runs at an equal pretraining budget, each stored as its own results file.
"""

from __future__ import annotations

from pathlib import Path

from . import audio, text, vision
from .audio_config import AudioCompareConfig
from .records import config_with_machines, say, write_json
from .report import write_report
from .text_config import TextCompareConfig
from .vision_config import CompareConfig

STUDY_MODALITIES = {CompareConfig: vision, TextCompareConfig: text, AudioCompareConfig: audio}  # config -> its part


def load_data(cfg: CompareConfig | TextCompareConfig | AudioCompareConfig):
    """The study's data in memory (`load` of its modality): what every budget of the same study reads."""
    return STUDY_MODALITIES[type(cfg)].load(cfg)


def run_comparison(cfg: CompareConfig | TextCompareConfig | AudioCompareConfig, plots: bool = True,
                   data=None) -> dict:
    """Every arm and seed (finished results are skipped), then the report (with its plots unless `plots` is False:
    a curve draws its points' plots once, at its end). `data`: what `load_data` returned for a study of the same
    settings (a curve loads it once for all its points); None loads it here. Returns the summary."""
    from ..devices import set_threads

    modality = STUDY_MODALITIES[type(cfg)]
    if cfg.threads:
        set_threads(cfg.threads)
    modality.check(cfg)
    Path(cfg.out).mkdir(parents=True, exist_ok=True)
    config_path = Path(cfg.out) / "config.json"
    write_json(config_path, config_with_machines(config_path, modality.config_record(cfg)))
    data = modality.load(cfg) if data is None else data
    modality.prepare(cfg, data)
    arms = modality.scored_arms(cfg)
    total, done = len(cfg.seeds) * len(arms), 0
    for seed in cfg.seeds:
        context = modality.start_seed(cfg, seed, data)
        for arm in arms:
            done += 1
            say(f"[{done}/{total}] {arm} seed {seed}")
            modality.score_arm(cfg, arm, seed, data, context)
            write_report(cfg.out, plots=False)  # the tables as results land; the plots once, below
    return write_report(cfg.out, plots=plots)
