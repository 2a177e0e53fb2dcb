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
# use lets the dataset reader import. No package registry is used.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-run}
shift || true
dir=results/gpu_check
case "$mode" in
  prepare)
    py=${PYTHON:-.venv/bin/python}
    mkdir -p "$dir/pylib"
    # pure-Python dependencies of the trainer, for a machine without a registry
    "$py" - "$dir/pylib" <<'PY'
import shutil, sys, pathlib, importlib
dst = pathlib.Path(sys.argv[1])
for name in ("tqdm", "yaml", "torch_ema"):
    src = pathlib.Path(importlib.import_module(name).__file__).parent
    shutil.rmtree(dst / name, ignore_errors=True)
    shutil.copytree(src, dst / name, ignore=shutil.ignore_patterns("*.so", "__pycache__"))
PY
    exec nice -n 19 "$py" -m pipeline.train.gpu_check prepare --dir "$dir" "$@"
    ;;
  run)
    py=${PYTHON:-python3}
    [ -f "$dir/cpu_losses.json" ] || { echo "gpu_check: $dir/cpu_losses.json missing (run 'bash scripts/gpu_check.sh prepare' on the CPU machine and carry $dir)" >&2; exit 2; }
    export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}:$PWD/$dir/pylib"
    missing=$("$py" -c "
import importlib.util as u
print(' '.join(m for m in ('torch', 'numpy', 'PIL', 'tqdm', 'yaml', 'torch_ema') if u.find_spec(m) is None))")
    [ -z "$missing" ] || { echo "gpu_check: python modules missing on this machine: $missing" >&2; exit 2; }
    if ! "$py" -c "import jsonschema" 2>/dev/null; then
      # pipeline.common.config imports jsonschema at module level (through the dataset reader);
      # the check validates no config, so a stand-in that refuses any use lets it import
      stub=$(mktemp -d)
      mkdir -p "$stub/jsonschema"
      cat > "$stub/jsonschema/__init__.py" <<'PY'
"""Stand-in for jsonschema (scripts/gpu_check.sh on a machine without it): importable, never usable."""


class ValidationError(Exception):
    pass


def _unavailable(*args, **kwargs):
    raise RuntimeError("jsonschema is not installed on this machine (scripts/gpu_check.sh stand-in)")


validate = _unavailable


class Draft202012Validator:
    def __init__(self, *args, **kwargs):
        _unavailable()
PY
      export PYTHONPATH="$stub:$PYTHONPATH"
      echo "gpu_check: jsonschema not installed here; a stand-in that refuses any use is on the path"
    fi
    command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
    out=${OUT:-$dir}
    exec "$py" -m pipeline.train.gpu_check run --dir "$dir" --json "$out/gpu_check.json" "$@"
    ;;
  *) echo "usage: bash scripts/gpu_check.sh prepare|run [options of python -m pipeline.train.gpu_check]" >&2; exit 2 ;;
esac
