"""Loading and validating ``config.yaml`` and the identities table.

The same validation runs in the Snakefile at start-up and in every stage entry point, against
``workflow/schemas/config.schema.yaml`` and ``workflow/schemas/identities.schema.yaml``.
"""
from __future__ import annotations

import copy
import csv
import hashlib
import json
import os
from dataclasses import fields
from pathlib import Path
from typing import Any, Self

import jsonschema
import yaml

from pipeline.common.emotion import check_spec as check_emotion
from pipeline.common.errors import InputError

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SCHEMA_DIR = PROJECT_ROOT / "workflow" / "schemas"
ID_PATTERN = r"^[A-Za-z0-9_-]+$"


def _load_schema(name: str) -> dict:
    return yaml.safe_load((SCHEMA_DIR / name).read_text())


def _fill_defaults(instance: Any, schema: dict) -> Any:
    """Fill ``default`` values of object properties, recursively (jsonschema does not)."""
    if not isinstance(instance, dict) or schema.get("type") != "object":
        return instance
    for key, sub in schema.get("properties", {}).items():
        if key not in instance and "default" in sub:
            instance[key] = copy.deepcopy(sub["default"])
        if key not in instance and sub.get("type") == "object" and "properties" in sub:
            instance[key] = {}
        if key in instance:
            _fill_defaults(instance[key], sub)
    return instance


def validate_config(config: dict, source: str | Path = "config.yaml") -> dict:
    """Validate a config dict against the schema and fill defaults (in place; also returned).

    Raises:
        InputError: naming ``source``, the offending key path and the reason.
    """
    schema = _load_schema("config.schema.yaml")
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        err = errors[0]
        where = "/".join(str(p) for p in err.absolute_path) or "(top level)"
        raise InputError(source, f"invalid config at '{where}': {err.message}")
    return _fill_defaults(config, schema)


def load_config(path: str | Path) -> dict:
    """Read and validate a YAML config file.

    Raises:
        InputError: file missing, not YAML, or not valid against the schema.
    """
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise InputError(path, "config file not found") from None
    except yaml.YAMLError as exc:
        raise InputError(path, f"not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise InputError(path, "config must be a mapping of keys to values")
    return validate_config(data, path)


def resolve_path(p: str | Path, root: Path = PROJECT_ROOT) -> Path:
    """Absolute path: ``~`` expanded, relative paths taken from the project root."""
    p = Path(os.path.expanduser(str(p)))
    return p if p.is_absolute() else (root / p)


def load_identities(path: str | Path, root: Path = PROJECT_ROOT) -> list[dict]:
    """Read the identities TSV (lines starting with ``#`` are comments).

    Returns:
        list of rows ``{"id", "video", "emotion", "notes"}`` in file order; ``video`` is kept as
        written (resolve with :func:`resolve_path`).
    Raises:
        InputError: missing file, missing columns, invalid or duplicate ids.
    """
    path = resolve_path(path, root)
    try:
        lines = [ln for ln in path.read_text().splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    except FileNotFoundError:
        raise InputError(path, "identities table not found") from None
    reader = csv.DictReader(lines, delimiter="\t")
    if reader.fieldnames is None or not {"id", "video"} <= set(reader.fieldnames):
        raise InputError(path, "identities table needs tab-separated columns 'id' and 'video'")
    schema = _load_schema("identities.schema.yaml")
    rows, seen = [], set()
    for lineno, row in enumerate(reader, start=2):
        row = {k: (v.strip() if isinstance(v, str) and v.strip() else None) for k, v in row.items() if k}
        try:
            jsonschema.validate(row, schema)
        except jsonschema.ValidationError as exc:
            raise InputError(path, f"row {lineno - 1} ({row.get('id')!r}): {exc.message}") from None
        check_emotion(row.get("emotion"), path, lineno - 1, row.get("id"))
        if row["id"] in seen:
            raise InputError(path, f"duplicate identity id {row['id']!r}")
        seen.add(row["id"])
        rows.append(row)
    if not rows:
        raise InputError(path, "identities table has no rows")
    return rows


def config_hash(section: Any) -> str:
    """Stable sha256 (first 16 hex digits) of a config (sub)tree, for manifests."""
    blob = json.dumps(section, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def weights_dir(config: dict | None = None) -> Path:
    """The weights cache folder: ``$TALKING_NERF_WEIGHTS``, else ``config['weights_dir']``."""
    env = os.environ.get("TALKING_NERF_WEIGHTS")
    if env:
        return resolve_path(env)
    return resolve_path((config or {}).get("weights_dir", "weights_cache"))


def stage_weights_dir(arg: str | Path | None) -> Path:
    """The weights folder of a stage whose rule passes config ``weights_dir`` as it is written
    (``--weights-dir``; kept relative in the rule's params so that moving the project does not
    rerun it): ``$TALKING_NERF_WEIGHTS`` when set, as the config documents, else ``arg`` (default
    ``weights_cache``), a relative path taken from the project root like :func:`weights_dir`, not
    from the directory Snakemake runs in (``snakemake -d``)."""
    return weights_dir({"weights_dir": str(arg or "weights_cache")})


def parse_cfg_arg(text: str, option: str = "--cfg") -> dict:
    """Parse a stage's ``--cfg`` JSON (a config sub-tree passed by the rule, see common.smk
    ``cfg_arg``).

    Returns:
        the decoded object (a dict; ``{}`` for an empty string).
    Raises:
        InputError: naming ``option``, when the text is not JSON or not a JSON object.
    """
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(option, f"not valid JSON ({exc.msg})") from None
    if not isinstance(value, dict):
        raise InputError(option, "must be a JSON object")
    return value


class StageConfig:
    """Base of a preprocessing stage's dataclass config (``@dataclass class CropConfig(StageConfig)``):
    builds it from its section of ``config.yaml`` as the rule passes it (``--cfg`` JSON,
    :func:`parse_cfg_arg`), already checked against the schema by :func:`validate_config`."""

    @classmethod
    def from_dict(cls, d: dict | None) -> Self:
        """The config with the fields ``d`` gives and the defaults for the others; keys that are
        not fields are ignored (the schema, not this, refuses unknown keys). A subclass that
        converts a field (a JSON list to a tuple) does it in ``__post_init__``."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in (d or {}).items() if k in names})


def audio_config_for(section: dict, features: list[str] | tuple[str, ...]) -> dict:
    """Config ``preprocess.audio`` as a job that computes ``features`` needs it: ``features`` and
    the model folders of those features only (``{"features": [...], "hubert": ...}``), so that the
    folder of a feature nobody computes does not rerun the job (the audio-features, render and
    dataset-manifest rules, workflow/rules/common.smk)."""
    return {"features": list(features), **{k: v for k, v in section.items() if k in features}}


def manifest_config(preprocess: dict) -> dict:
    """The ``preprocess`` section as the dataset manifest gets and records it (``--cfg``,
    ``config_hash``): without settings that no job of the dataset reads, so that changing them
    reruns neither the manifest nor the trainings that read it: those of a stage that is switched
    off and so not run (``teeth_mask`` with ``enabled: false`` keeps only that flag) and the model
    folders of audio features not computed (:func:`audio_config_for`)."""
    out = dict(preprocess)
    if isinstance(out.get("audio"), dict):
        out["audio"] = audio_config_for(out["audio"], out["audio"].get("features", ["mel"]))
    teeth = out.get("teeth_mask")
    if isinstance(teeth, dict) and not teeth.get("enabled", False):
        out["teeth_mask"] = {"enabled": False}
    return out
