#!/usr/bin/env bash
# The GPU check: everything this project claims about GPUs, run once on a bare GPU machine in at most 9 minutes.
#
# Rehearsal on a CPU (the commands start and their flags parse; the GPU-sized steps run out of time):
#   OUT=/tmp/rehearsal DEVICE=cpu DATA=../shared/data/cifar10-jpeg bash benchmarks/gpu_check.sh
#
# Where: the repository root of a copy of this repository on a machine with one CUDA GPU, torch preinstalled and
# no network. The project is not installed there: it runs from PYTHONPATH. Packages the machine lacks come from
# a wheel folder made here beforehand (benchmarks/gpu_wheels.sh); the CIFAR-10 archive is carried in a git-ignored
# folder. Usage (benchmarks/README.md, "The GPU check"):
#
#   OUT=$OUT DATA=gpu_carry/data WHEELS=gpu_carry/wheels bash benchmarks/gpu_check.sh
#
# Steps (each under its own time limit; none starts once less than 20 s of the 9 minutes is left):
#   0 env       the GPU, versions, the imports this project needs (missing ones installed from $WHEELS)
#   1 tests     pytest -m gpu: the bf16 + compile pretraining smoke test with --resume
#   2 speed     benchmarks/speed.py on CUDA in bf16: our encoder against transformers' BertEncoder and
#               nn.TransformerEncoder (fused attention), with peak memory
#   3 methods   benchmarks/methods.py on CUDA: data2vec and data2vec 2.0 per update in fp32, bf16 and
#               bf16 + compile, with the GPU's matmul rates
#   4 resume    a data2vec 2.0 pretraining with --precision bf16 --compile stopped by SIGTERM, then resumed: the
#               first launch must exit 143, the second 0, metrics.jsonl must hold every update once
#   5 compare   a GPU-sized slice of the CIFAR-10 comparison (data2vec 2.0 against the floors, 6 x 384 encoder,
#               30 s of pretraining); it reports what finished inside its limit (a cut run keeps its results)
# Everything is written under $OUT: one log per step, steps.txt (exit status and seconds per step), the JSON
# reports, the comparison's results folder (its checkpoints deleted at the end).
set -u
OUT=${OUT:-gpu_check_out}
DATA=${DATA:-gpu_carry/data}
WHEELS=${WHEELS:-gpu_carry/wheels}
LIMIT_S=${LIMIT_S:-540}
DEVICE=${DEVICE:-cuda}  # DEVICE=cpu rehearses the script here: every command starts and its flags parse (steps time out)
mkdir -p "$OUT"
export OUT DATA WHEELS DEVICE
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
START=$(date +%s)
: > "$OUT/steps.txt"

step() {  # step NAME SECONDS COMMAND...: run it with a time limit, log to $OUT/NAME.log, record status and time
    local name=$1 limit=$2 began left rc
    shift 2
    began=$(date +%s)
    left=$((START + LIMIT_S - began))
    if [ "$left" -lt 20 ]; then
        echo "$name skipped: the time limit is reached" | tee -a "$OUT/steps.txt"
        return
    fi
    [ "$limit" -gt "$left" ] && limit=$left
    timeout -k 10 "$limit" "$@" > "$OUT/$name.log" 2>&1
    rc=$?
    echo "$name exit $rc after $(( $(date +%s) - began )) s (limit $limit s)" | tee -a "$OUT/steps.txt"
}

env_check() {
    nvidia-smi || true
    python - <<'PY'
import importlib, sys
needed = ["torch", "torchvision", "numpy", "einops", "tokenizers", "safetensors", "tqdm", "matplotlib", "sklearn",
          "scipy", "transformers", "pytest"]
missing = []
for name in needed:
    try:
        module = importlib.import_module(name)
        print(f"{name} {getattr(module, '__version__', '?')}")
    except ImportError:
        missing.append(name)
import torch
print("python", sys.version.split()[0], "| cuda", torch.version.cuda, "| gpu",
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
      "| bf16", torch.cuda.is_available() and torch.cuda.is_bf16_supported())
open("missing.txt", "w").write("\n".join(missing))
print("missing:", missing or "none")
PY
    if [ -s missing.txt ] && [ -d "$WHEELS" ]; then
        sed -e 's/^sklearn$/scikit-learn/' missing.txt | xargs python -m pip install --no-index --find-links "$WHEELS"
    fi
    rm -f missing.txt
}

resume_check() {  # exit 0 only when the first launch was stopped (143), the second finished and no update repeats
    local run="$OUT/resume-run" pid first second checked waited=0
    local args=(-m data2vec pretrain --method data2vec2 --modality vision --preset "${RESUME_PRESET:-mini}"
                --data digits --image-size 32 --batch-size "${RESUME_BATCH:-128}" --steps "${RESUME_STEPS:-400}"
                --save-every 50 --device "$DEVICE" --precision bf16 --compile --out "$run" --health-every 100)
    local stop_at=${STOP_AT:-120}  # updates logged before the signal: after compiling, past two checkpoints
    python "${args[@]}" &
    pid=$!
    # SIGTERM to the Python process alone once it has trained a while, as a scheduler would: a signal to the whole
    # process group (what `timeout` sends) also kills the compiler's workers mid-compile, and the rehearsal on the
    # CPU showed what follows: the run dies of a compile error instead of saving, and a truncated kernel is left
    # in the compile cache for the relaunch to trip over
    while kill -0 "$pid" 2>/dev/null && [ "$waited" -lt 150 ]; do
        [ -f "$run/metrics.jsonl" ] && [ "$(wc -l < "$run/metrics.jsonl")" -ge "$stop_at" ] && break
        sleep 0.5
        waited=$((waited + 1))
    done
    kill -TERM "$pid" 2>/dev/null
    wait "$pid"
    first=$?
    echo "first launch exit $first (143 = stopped by SIGTERM, as intended) after $(wc -l < "$run/metrics.jsonl") updates"
    python "${args[@]}" --resume
    second=$?
    echo "second launch exit $second"
    python - "$run/metrics.jsonl" <<'PY'
import json, sys
steps = [json.loads(line)["step"] for line in open(sys.argv[1]) if line.strip()]
assert steps == list(range(1, len(steps) + 1)), "updates missing or repeated"
print(f"metrics.jsonl: updates 1..{steps[-1]}, each once")
PY
    checked=$?
    rm -rf "$run/checkpoint" "$run/checkpoint.old"
    [ "$first" -eq 143 ] && [ "$second" -eq 0 ] && [ "$checked" -eq 0 ]
}

compare_slice() {
    python -m data2vec compare --data "$DATA/CIFAR-10-images-jpeg.tar.gz" --methods data2vec2 --budget-minutes 0.5 \
        --seeds 1 --dim 384 --depth 6 --heads 6 --batch-size 256 --device "$DEVICE" --precision bf16 \
        --out "$OUT/compare-cifar10" --runs "$OUT/compare-runs"
    local rc=$?
    rm -rf "$OUT/compare-runs"
    return $rc
}

export -f env_check resume_check compare_slice  # `timeout` runs them in a child bash
step env 60 bash -c env_check
step tests 120 python -m pytest -o addopts="" -p no:cacheprovider -q -rs -m gpu tests/test_smoke_compile.py
step speed 75 python benchmarks/speed.py --device "$DEVICE" --bf16 --reps 10 --reps-large 10 --out "$OUT/speed_bf16.json"
step methods 120 python benchmarks/methods.py --device "$DEVICE" --threads 0 --variants fp32,bf16,bf16+compile \
    --methods data2vec2/vision,data2vec2/text,data2vec/vision --batch-size 128 --steps 30 --skip 10 \
    --out "$OUT/methods_cuda.json"
step resume 110 bash -c resume_check
step compare 170 bash -c compare_slice
echo "total $(( $(date +%s) - START )) s" | tee -a "$OUT/steps.txt"
