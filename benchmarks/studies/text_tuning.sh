#!/usr/bin/env bash
# Text recipe tuning trials of issue 16, one after another; rerun it to continue (finished trials are skipped,
# an interrupted pretraining resumes from its checkpoint).
#
# Each trial changes ONE setting of one method's study recipe (`data2vec compare --set METHOD.KEY=VALUE`), pretrains
# seed 1 on the study's corpus and encoder, and fine-tunes SST-2 and STS-B. Every setting tried here is cost-neutral
# (COST_NEUTRAL_SETS in data2vec/study/text.py), so a trial starts from a copy of the study's calibration and
# runs the study's update count; the study's own floors (random init, majority class) are copied too, not recomputed.
# Compare a trial with the study's seed-1 run of the same method on the "validation split carved from the training
# data" block of its table.md (GLUE dev is never used to choose). Cost: ~20 min of pretraining plus ~25 min of
# fine-tuning per trial on one core.
#
#   python -m tasks.text.study_corpus --data ../shared/data --out runs/text-corpus   # once, ~15 s
#   bash benchmarks/studies/text_tuning.sh >> runs/tune.log 2>&1
set -euo pipefail

study=benchmarks/results/studies/text
trials=(  # METHOD KEY VALUE, in the order they run
  "data2vec lr 1e-3"        # peak lr 2x the registry's 5e-4: ~300 updates may be too few to move at 5e-4
  "data2vec tau_end 0.99"   # constant tau 0.99 (time constant 100 updates); the ramp to 0.999 (1,000) outlasts the run
  "data2vec2 lr 1e-3"
  "bert lr 1e-3"
)

for trial in "${trials[@]}"; do
  read -r method key value <<< "$trial"
  name="$method-$key-$value"
  out="benchmarks/results/studies/text-tuning/$name"
  mkdir -p "$out"
  [ -f "$out/calibration.json" ] || cp "$study/calibration.json" "$out/"
  [ -d "$out/majority" ] || cp -r "$study/majority" "$out/"  # the training labels' majority: no seed
  [ -d "$out/random/seed1" ] || { mkdir -p "$out/random" && cp -r "$study/random/seed1" "$out/random/"; }  # seed 1 only
  echo "[tuning $(date +%H:%M:%S)] $name"
  data2vec compare --modality text --data runs/text-corpus/corpus.txt --tokenizer runs/text-corpus/tokenizer \
    --glue ../shared/data/glue --methods "$method" --set "$method.$key=$value" --tasks sst2,stsb \
    --depth 4 --heads 4 --budget-minutes 20 --seeds 1 --threads 1 --out "$out" --runs "runs/tune/$name"
done
