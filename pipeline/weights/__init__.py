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
    sha256_prefix: str | None = None
    """Leading hex digits of the sha256 given in the published file name (torch.hub convention);
    checked when the full ``sha256`` is unknown."""
    kind: str = "file"
    """``file`` or ``folder`` (a from_pretrained directory; present when it exists, not hashed)."""

    def path(self, weights_dir: str | Path) -> Path:
        """Where this entry lives in ``weights_dir``."""
        return Path(weights_dir) / self.filename

    def present(self, weights_dir: str | Path) -> bool:
        """True when the file (or folder, for ``kind: folder``) exists."""
        p = self.path(weights_dir)
        return p.is_dir() if self.kind == "folder" else p.is_file()


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


def present_files(stages: list[str] | tuple[str, ...], weights_dir: str | Path) -> list[Path]:
    """The present weight files (``kind: file``) of the manifest entries used by any of
    ``stages`` (e.g. ``["metrics.lpips", "metrics.lse"]``), sorted: the weights a metrics job
    depends on (its rule lists them as inputs, so fetching or replacing one reruns exactly the
    jobs that use it)."""
    out = {e.path(weights_dir) for e in load_manifest().values()
           if e.kind == "file" and set(e.stages) & set(stages) and e.present(weights_dir)}
    return sorted(out)


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
    path = entry.path(weights_dir)
    if not entry.present(weights_dir):
        raise WeightsMissing(name, f"{entry.filename} not found in {weights_dir} "
                                   f"(run `python -m pipeline.weights fetch {name}` on a machine with internet)")
    if verify and entry.kind == "file":
        problem = hash_problem(entry, path)
        if problem:
            raise WeightsMissing(name, problem)
    return path


def hash_problem(entry: WeightsEntry, path: str | Path) -> str | None:
    """Compare a file with the manifest: ``None`` when it matches (or nothing is pinned), else the
    reason. Checks the full ``sha256`` when pinned, else the published ``sha256_prefix``."""
    if not entry.sha256 and not entry.sha256_prefix:
        return None
    digest = sha256_of(path)
    if entry.sha256 and digest != entry.sha256:
        return f"{path} has sha256 {digest}, the manifest pins {entry.sha256}"
    if not entry.sha256 and not digest.startswith(entry.sha256_prefix):
        return f"{path} has sha256 {digest}, the published prefix is {entry.sha256_prefix}"
    return None


@lru_cache(maxsize=64)
def _cached_sha256(path: str, mtime_ns: int, size: int) -> str:
    return sha256_of(path)


def file_sha256(path: str | Path) -> str:
    """sha256 of a weights file, cached by (path, mtime, size): metrics record it per value."""
    st = Path(path).stat()
    return _cached_sha256(str(path), st.st_mtime_ns, st.st_size)


def direct_download(entry: WeightsEntry) -> bool:
    """True when ``entry.url`` is the file itself (not a web page, a repository or an archive)."""
    url = entry.url
    return entry.kind == "file" and not ("/tree/" in url or url.endswith((".tar.gz", ".zip")))


def fetch(name: str, weights_dir: str | Path, force: bool = False, timeout: float = 60.0,
          manifest: str | Path = MANIFEST) -> Path:
    """Download one manifest entry into ``weights_dir`` (urllib; ``file://`` URLs work too) and
    check it against the manifest hash before it is put in place (atomic: a failed or mismatching
    download leaves nothing behind). A present file is kept unless ``force``.

    Raises:
        WeightsMissing: the entry is not a direct download (folder, archive, model-zoo page: the
            reason says where to get it), the download failed, or the file does not match the
            manifest sha256 / published prefix.
    """
    import urllib.request

    from pipeline.common.io import atomic_path

    entry = load_manifest(manifest)[name]
    dest = entry.path(weights_dir)
    if entry.present(weights_dir) and not force:
        return dest
    if not direct_download(entry):
        raise WeightsMissing(name, f"not a direct download: get it from {entry.url} and place it at {dest}")
    try:
        with atomic_path(dest) as tmp:
            with urllib.request.urlopen(entry.url, timeout=timeout) as resp, open(tmp, "wb") as fh:
                while block := resp.read(1 << 20):
                    fh.write(block)
            problem = hash_problem(entry, tmp)
            if problem:
                raise WeightsMissing(name, f"download from {entry.url} rejected: {problem}")
    except OSError as exc:
        raise WeightsMissing(name, f"download from {entry.url} failed: {exc}") from None
    return dest
