# Sourced by scripts/gpu_check.sh and scripts/gpu_quality.sh on the CUDA machine (no package
# registry there): puts the project and the carried pure-Python packages ($1/pylib: tqdm, PyYAML,
# torch_ema) on PYTHONPATH, checks the compiled ones the trainer needs (torch, numpy, Pillow, OpenCV
# for the parsing maps) and, where jsonschema is missing, a stand-in that refuses any use (the
# dataset reader imports it at module level; these scripts validate no config). Sets $py.
#   usage: . scripts/device_env.sh DIR   (DIR holds pylib/, made by the script's 'prepare')
py=${PYTHON:-python3}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}:$PWD/$1/pylib"
missing=$("$py" -c "
import importlib.util as u
print(' '.join(m for m in ('torch', 'numpy', 'PIL', 'cv2', 'tqdm', 'yaml', 'torch_ema') if u.find_spec(m) is None))")
[ -z "$missing" ] || { echo "device_env: python modules missing on this machine: $missing" >&2; exit 2; }
if ! "$py" -c "import jsonschema" 2>/dev/null; then
  stub=$(mktemp -d)
  mkdir -p "$stub/jsonschema"
  cat > "$stub/jsonschema/__init__.py" <<'PY'
"""Stand-in for jsonschema (scripts/device_env.sh on a machine without it): importable, never usable."""


class ValidationError(Exception):
    pass


def _unavailable(*args, **kwargs):
    raise RuntimeError("jsonschema is not installed on this machine (scripts/device_env.sh stand-in)")


validate = _unavailable


class Draft202012Validator:
    def __init__(self, *args, **kwargs):
        _unavailable()
PY
  export PYTHONPATH="$stub:$PYTHONPATH"
  echo "device_env: jsonschema not installed here; a stand-in that refuses any use is on the path"
fi
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
