#!/usr/bin/env bash
# Copy the trainer's pure-Python dependencies (tqdm, PyYAML, torch_ema) into DIR/pylib, for the CUDA
# machine, which has no package registry (scripts/device_env.sh puts them on its path).
#   usage: bash scripts/device_pylib.sh DIR     (PYTHON: the interpreter whose packages are copied)
set -euo pipefail
cd "$(dirname "$0")/.."
"${PYTHON:-.venv/bin/python}" - "$1/pylib" <<'PY'
import importlib
import pathlib
import shutil
import sys

dst = pathlib.Path(sys.argv[1])
dst.mkdir(parents=True, exist_ok=True)
for name in ("tqdm", "yaml", "torch_ema"):
    src = pathlib.Path(importlib.import_module(name).__file__).parent
    shutil.rmtree(dst / name, ignore_errors=True)
    shutil.copytree(src, dst / name, ignore=shutil.ignore_patterns("*.so", "__pycache__"))
PY
