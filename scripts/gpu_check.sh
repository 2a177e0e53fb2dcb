#!/usr/bin/env bash
# GPU check of the paper settings (512x512): CUDA loss curve vs the CPU one, training rays/s and
# steps/s, render FPS at 512x512 (head + torso), GPU memory. docs/performance.md#gpu-check.
#
#   on this (CPU) machine, once:  bash scripts/gpu_check.sh prepare
#       -> results/gpu_check/ (100 real frames of the sample + the CPU loss curves; ~30 MB; several
#          minutes of CPU: 8 paper-size steps per method)
#   on the CUDA machine:          bash scripts/gpu_check.sh run      (carry results/gpu_check)
#       prints the figures; writes $OUT/gpu_check.json when $OUT is set (else results/gpu_check/)
#
# The CUDA machine needs python3 with a CUDA build of torch, numpy and Pillow; tqdm, PyYAML and torch_ema
# (pure Python) travel in results/gpu_check/pylib; without jsonschema a stand-in that refuses any
# use lets the dataset reader import (scripts/device_env.sh). No package registry is used.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-run}
shift || true
dir=results/gpu_check
case "$mode" in
  prepare)
    py=${PYTHON:-.venv/bin/python}
    bash scripts/device_pylib.sh "$dir"
    exec nice -n 19 "$py" -m pipeline.train.gpu_check prepare --dir "$dir" "$@"
    ;;
  run)
    [ -f "$dir/cpu_losses.json" ] || { echo "gpu_check: $dir/cpu_losses.json missing (run 'bash scripts/gpu_check.sh prepare' on the CPU machine and carry $dir)" >&2; exit 2; }
    . scripts/device_env.sh "$dir"
    out=${OUT:-$dir}
    exec "$py" -m pipeline.train.gpu_check run --dir "$dir" --json "$out/gpu_check.json" "$@"
    ;;
  *) echo "usage: bash scripts/gpu_check.sh prepare|run [options of python -m pipeline.train.gpu_check]" >&2; exit 2 ;;
esac
