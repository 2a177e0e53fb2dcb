#!/usr/bin/env bash
# One-time, idempotent set-up on a fresh Debian/Ubuntu machine (or re-run: it only adds what is missing).
#   - system packages: ffmpeg (video I/O), chromium (report browser test), pdflatex (the test that
#     compiles the tables' LaTeX); SLURM is installed by scripts/local_slurm.sh only when the SLURM
#     test runs.
#   - a virtual environment in .venv with the project installed editable.
# Usage: bash scripts/bootstrap.sh        (then use .venv/bin/snakemake, .venv/bin/python)
set -euo pipefail
cd "$(dirname "$0")/.."
need_apt=()
command -v ffmpeg >/dev/null 2>&1 || need_apt+=(ffmpeg)
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
command -v pdflatex >/dev/null 2>&1 || need_apt+=(texlive-latex-base texlive-latex-recommended)
if [ ${#need_apt[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get -o DPkg::Lock::Timeout=600 update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.bootstrap-$(sha256sum pyproject.toml scripts/bootstrap.sh | sha256sum | cut -c1-16)
if [ ! -f "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade "pip>=24"
  # torch first, pinned: on these machines 2.13.0 resolves to a local CPU build; an unpinned torch
  # would pull several GB of CUDA packages.
  .venv/bin/python -m pip install -q "torch==2.13.0"
  .venv/bin/python -m pip install -q -e ".[test]"
  # packages whose declared dependencies must not be resolved (see pyproject 'nodeps')
  .venv/bin/python -m pip install -q --no-deps "torchvision==0.28.0" "lpips==0.1.4" "pytorch-fid==0.3.0" \
      "syncnet-python==0.2.3" "scenedetect>=0.6,<0.7" "face-alignment==1.5.0"
  # every conflict fails, except face-alignment's opencv-python (cv2 comes from opencv-python-headless)
  if ! check=$(.venv/bin/python -m pip check); then
    rest=$(printf '%s\n' "$check" | grep -v "^face-alignment 1.5.0 requires opencv-python, which is not installed.$" || true)
    if [ -n "$rest" ]; then printf '%s\n' "$rest" >&2; exit 1; fi
  fi
  rm -f .venv/.bootstrap-*; touch "$stamp"
fi
echo "bootstrap: ok ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"
