#!/usr/bin/env bash
# Quality-benchmark runs trained on a CUDA machine and scored here (docs/quality.md, "Does a
# larger training budget close it?"): the machine lent for a few minutes has no package registry and takes a small working
# tree, so the datasets travel packed at the training resolution and the scoring (dlib, scikit-image)
# stays on this machine.
#
#   here:              bash scripts/gpu_quality.sh prepare [ID ...]
#       builds the datasets of the identities (default: German longhair_pt shoulderhair_garden) in
#       results/quality with the project's rules (if not built) and packs them into
#       results/gpu_quality/ (pipeline.train.quality.pack_dataset: ~15 MB each at 128 px)
#   on the CUDA machine (carry results/gpu_quality; the device tool takes a 64 MiB working tree: the
#   git-tracked files are 23 MB, 15 MB of them the JPEGs of docs/assets/quality, and three packed
#   clips 48 MB, so move docs/assets/quality aside for the call and back after it, or pack two clips):
#                      bash scripts/gpu_quality.sh run LABEL=OVERRIDES_JSON [LABEL=OVERRIDES_JSON ...]
#       trains rad_nerf (METHOD) with the quick profile and each label's overrides on every packed
#       identity on DEVICE (default cuda), all runs at once (one process each; SECONDS_LEFT, default
#       540, stops what is not done),
#       and writes the runs' records, validation panels and training logs to
#       $OUT/gpu_quality.tar.gz (unscored: --train-only)
#   here:              bash scripts/gpu_quality.sh score FILE.tar.gz
#       unpacks the runs into results/quality and their montages into docs/assets/quality/, and
#       scores them against the full datasets (benchmark --quality --rescore per label), writing
#       their sections into docs/quality.md
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-}
shift || true
dir=results/gpu_quality
case "$mode" in
  prepare)
    py=${PYTHON:-.venv/bin/python}
    ids=("$@")
    [ ${#ids[@]} -gt 0 ] || ids=(German longhair_pt shoulderhair_garden)
    "$py" - "${ids[@]}" <<'PY'
import sys
from pathlib import Path

from pipeline.train.quality import build_datasets, default_identities

want = sys.argv[1:]
rows = [r for r in default_identities() if r[0] in want]
unknown = set(want) - {r[0] for r in rows}
if unknown:
    sys.exit(f"gpu_quality: no identity {sorted(unknown)} among the sample and ../shared/data/identities/")
todo = [r for r in rows if not (Path("results/quality/results/data") / r[0] / "manifest.json").is_file()]
failed = build_datasets(Path("results/quality").resolve(), todo) if todo else {}
for i, why in failed.items():
    print(f"gpu_quality: {i}: dataset not built: {why}", file=sys.stderr)
sys.exit(1 if failed else 0)
PY
    "$py" -m pipeline.train.benchmark --quality --only "${ids[@]}" --workdir results/quality --pack "$dir"
    bash scripts/device_pylib.sh "$dir"
    du -sh "$dir"
    ;;
  run)
    [ $# -gt 0 ] || { echo "usage: bash scripts/gpu_quality.sh run LABEL=OVERRIDES_JSON ..." >&2; exit 2; }
    [ -d "$dir/results/data" ] || { echo "gpu_quality: $dir/results/data missing (run 'bash scripts/gpu_quality.sh prepare' on the CPU machine and carry $dir)" >&2; exit 2; }
    . scripts/device_env.sh "$dir"
    # many small processes on one GPU: the Multi-Process Service lets their kernels overlap
    command -v nvidia-cuda-mps-control >/dev/null && nvidia-cuda-mps-control -d 2>/dev/null && echo "gpu_quality: MPS on" || true
    export OMP_NUM_THREADS=1 PYTHONUNBUFFERED=1
    mkdir -p "$dir/logs"
    pids=()
    for spec in "$@"; do
      label=${spec%%=*}; overrides=${spec#*=}
      for d in "$dir"/results/data/*/; do
        ident=$(basename "$d")
        "$py" - "$dir" "$label" "$overrides" "$ident" "${METHOD:-rad_nerf}" > "$dir/logs/${label}__$ident.log" 2>&1 <<'PY' &
import json
import os
import sys
from pathlib import Path

import torch

from pipeline.common.log import setup_logging
from pipeline.train.quality import run_quality

work, label, overrides, ident, method = sys.argv[1:]
setup_logging("pipeline.train.quality")
torch.set_num_threads(1)
run_quality([(ident, Path(ident))], [method], {"profile": "quick", "device": os.environ.get("DEVICE", "cuda"), "overrides": json.loads(overrides)},
            label, Path(work).resolve(), None, Path(work) / "montages", note="trained by scripts/gpu_quality.sh",
            build=False, score=False)
PY
        pids+=($!)
      done
    done
    end=$((SECONDS + ${SECONDS_LEFT:-540}))
    while [ $SECONDS -lt $end ] && kill -0 "${pids[@]}" 2>/dev/null; do sleep 5; done
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null && echo "gpu_quality: run $p stopped at the time limit" || true; done
    wait || true
    tail -n 3 "$dir"/logs/*.log
    out=${OUT:-$dir}
    mkdir -p "$dir/runs" "$dir/montages" "$dir/models"
    find "$dir/runs" -name '*.json' -print
    tar czf "$out/gpu_quality.tar.gz" -C "$dir" runs logs montages \
      $(cd "$dir" && find models -name '*.png' -o -name '*.json' -o -name '*.csv' | sort)
    ls -la "$out/gpu_quality.tar.gz"
    ;;
  score)
    py=${PYTHON:-.venv/bin/python}
    [ -f "${1:-}" ] || { echo "usage: bash scripts/gpu_quality.sh score FILE.tar.gz" >&2; exit 2; }
    mkdir -p results/quality
    tar xzf "$1" -C results/quality runs models
    # the montages (render | ground truth) go where the page's sections look for them
    tmp=$(mktemp -d)
    tar xzf "$1" -C "$tmp" montages
    cp -r "$tmp"/montages/. docs/assets/quality/
    rm -rf "$tmp"
    for label in $(tar tzf "$1" | sed -n 's|^runs/\([^/]*\)/.*\.json$|\1|p' | sort -u); do
      "$py" -m pipeline.train.benchmark --quality --rescore --label "$label" --workdir results/quality
    done
    ;;
  *) echo "usage: bash scripts/gpu_quality.sh prepare [ID ...] | run LABEL=OVERRIDES_JSON ... | score FILE.tar.gz" >&2; exit 2 ;;
esac
