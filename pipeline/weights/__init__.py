"""Pretrained-weights manager: one manifest of every pretrained file any stage or metric uses.

The manifest (``pipeline/weights/manifest.yaml``) lists, per file: ``name``, ``filename``, ``url``,
``sha256``, ``size`` (bytes), ``licence``, ``stages`` (which stages/metrics need it). Files live in
the weights folder: ``$TALKING_NERF_WEIGHTS`` or config ``weights_dir`` (default ``weights_cache/``).

Stages never fall back to random or stand-in weights: :func:`require` raises
:class:`WeightsMissing` with a reason that is reported as the metric's n/a reason.

CLI: ``python -m pipeline.weights list|fetch|verify``.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import yaml

from pipeline.common.errors import PipelineError

MANIFEST = Path(__file__).with_name("manifest.yaml")


class WeightsMissing(PipelineError):
    """A pretrained file is absent (or fails its hash check); ``reason`` is user-facing."""

    def __init__(self, name: str, reason: str):
        self.name = name
        self.reason = reason
        super().__init__(f"weights '{name}': {reason}")


@dataclass(frozen=True)
class WeightsEntry:
    """One manifest entry (see module docstring for the fields)."""

    name: str
    filename: str
    url: str
    sha256: str | None
    size: int | None
    licence: str
    stages: tuple[str, ...] = field(default_factory=tuple)
    notes: str = ""


@lru_cache(maxsize=None)
def load_manifest(path: str | Path = MANIFEST) -> dict[str, WeightsEntry]:
    """Read the manifest; returns ``{name: WeightsEntry}``."""
    data = yaml.safe_load(Path(path).read_text()) or {}
    out = {}
    for item in data.get("weights", []):
        item = dict(item)
        item["stages"] = tuple(item.get("stages", ()))
        out[item["name"]] = WeightsEntry(**item)
    return out


def sha256_of(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def weights_path(name: str, weights_dir: str | Path) -> Path:
    """Where the file for manifest entry ``name`` is expected (it may not exist).

    Raises:
        KeyError: ``name`` is not in the manifest.
    """
    entry = load_manifest()[name]
    return Path(weights_dir) / entry.filename


def require(name: str, weights_dir: str | Path, verify: bool = False) -> Path:
    """Path of a present pretrained file.

    Args:
        name: manifest entry name.
        weights_dir: the weights folder.
        verify: also check the sha256 against the manifest.
    Raises:
        WeightsMissing: absent file (reason says which file and how to fetch it) or hash mismatch.
    """
    entry = load_manifest()[name]
    path = Path(weights_dir) / entry.filename
    if not path.is_file():
        raise WeightsMissing(name, f"{entry.filename} not found in {weights_dir} "
                                   f"(run `python -m pipeline.weights fetch {name}` on a machine with internet)")
    if verify and entry.sha256 and sha256_of(path) != entry.sha256:
        raise WeightsMissing(name, f"{path} does not match the manifest sha256")
    return path
