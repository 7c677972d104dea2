#!/usr/bin/env bash
# Prepares what benchmarks/gpu_check.sh needs on a GPU machine without network: the wheels of the packages such a
# machine may lack (this project's light dependencies and pytest) for its Python version, and the CIFAR-10 archive,
# in one git-ignored folder that the run carries (benchmarks/README.md, "The GPU check").
#
#   bash benchmarks/gpu_wheels.sh 3.11 ../shared/data/cifar10-jpeg/CIFAR-10-images-jpeg.tar.gz   # -> gpu_carry/
#
# The Python version is the GPU machine's (`python -V` there); torch, torchvision, transformers, scikit-learn and
# scipy are expected to be installed there and are not downloaded.
set -eu
PY=${1:?the GPU machine\'s python version, e.g. 3.11}
CIFAR=${2:-}
DEST=${DEST:-gpu_carry}
mkdir -p "$DEST/wheels" "$DEST/data"
python -m pip download --only-binary=:all: --python-version "$PY" --platform manylinux2014_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 --dest "$DEST/wheels" \
    einops pytest matplotlib tqdm safetensors tokenizers
if [ -n "$CIFAR" ]; then
    cp "$CIFAR" "$DEST/data/"
fi
du -sh "$DEST"
