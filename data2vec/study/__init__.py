"""The equal-budget study: several pretraining methods on one data set, each for the same wall-clock budget,
every encoder scored with the same protocols against the floors (docs/design.md section 8).

One pipeline serves every modality (`pipeline.run_comparison`): the budget and its calibration (`budget`), the
results files (`records`) and the report (`report`) are shared; a modality adds its settings and recipes
(`vision_config`, `text_config`), its part of the run (`vision`, `text`) and its protocols (`vision_protocols`;
`glue`, `squad`). `data` wires the data sets of `tasks/` in; `digits` holds the demo's pieces. The `data2vec
compare` and `data2vec demo` commands only parse flags and call these modules.

Differences from the papers: they compare methods at full scale and equal epochs; this project compares them at
reduced scale and an equal budget in seconds, every number a mean over seeds of stored per-run results.
"""
