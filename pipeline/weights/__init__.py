"""Pretrained-weights manager: one manifest of every pretrained file any stage or metric uses.

The manifest (``pipeline/weights/manifest.yaml``) lists, per file: ``name``, ``filename``, ``url``,
``sha256``, ``size`` (bytes), ``licence``, ``stages`` (which stages/metrics need it). Files live in
the weights folder: ``$TALKING_NERF_WEIGHTS`` or config ``weights_dir`` (default ``weights_cache/``).

Stages never fall back to random or stand-in weights: :func:`require` raises
:class:`WeightsMissing` with a reason that is reported as the metric's n/a reason. Files are
checked against the manifest by default (full ``sha256`` where pinned, else the ``sha256_prefix``
published in the file name): a different file under a real file name (e.g. a randomly
initialised network) raises :class:`WeightsMismatch`, an error naming the file and both hashes.
Only tests of loading code with stand-in networks turn the check off (``verify=False`` or
``TALKING_NERF_VERIFY_WEIGHTS=0``).

CLI: ``python -m pipeline.weights list|fetch|verify``.
"""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import yaml

from pipeline.common.errors import InputError, PipelineError

MANIFEST = Path(__file__).with_name("manifest.yaml")
#: environment variable that turns the default hash check off ("0"; for stand-in loading tests)
VERIFY_ENV = "TALKING_NERF_VERIFY_WEIGHTS"


def verify_by_default() -> bool:
    """True unless ``$TALKING_NERF_VERIFY_WEIGHTS`` is ``0``: :func:`require`'s default."""
    return os.environ.get(VERIFY_ENV, "1").strip() != "0"


class WeightsMissing(PipelineError):
    """A pretrained file is absent (or fails its hash check); ``reason`` is user-facing."""

    def __init__(self, name: str, reason: str):
        self.name = name
        self.reason = reason
        super().__init__(f"weights '{name}': {reason}")


class WeightsMismatch(InputError):
    """A present weights file is not the published one (its sha256 differs from the manifest's):
    an error, never a fallback; the message names the file and both hashes."""

    def __init__(self, name: str, path: str | Path, reason: str):
        self.name = name
        super().__init__(path, f"{reason} (weights '{name}'; a stand-in or corrupted file: replace it with "
                               f"`python -m pipeline.weights fetch {name} --force`)")


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
    fetch_command: str = ""
    """For files a tool of their own installs (its downloader asks to accept a licence): the shell
    command, ``{dir}`` standing for the weights folder; :func:`fetch` shows it instead of downloading."""

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


def require(name: str, weights_dir: str | Path, verify: bool | None = None) -> Path:
    """Path of a present pretrained file.

    Args:
        name: manifest entry name.
        weights_dir: the weights folder.
        verify: check the sha256 against the manifest (None: :func:`verify_by_default`, i.e. on).
    Raises:
        WeightsMissing: absent file (reason says which file and how to fetch it).
        WeightsMismatch: the file's sha256 is not the manifest's (file and both hashes named).
    """
    if verify is None:
        verify = verify_by_default()
    entry = load_manifest()[name]
    path = entry.path(weights_dir)
    if not entry.present(weights_dir):
        raise WeightsMissing(name, f"{entry.filename} not found in {weights_dir} "
                                   f"(run `python -m pipeline.weights fetch {name}` on a machine with internet)")
    if verify and entry.kind == "file":
        problem = hash_problem(entry, path)
        if problem:
            raise WeightsMismatch(name, path, problem)
    return path


def hash_problem(entry: WeightsEntry, path: str | Path) -> str | None:
    """Compare a file with the manifest: ``None`` when it matches (or nothing is pinned), else the
    reason. Checks the full ``sha256`` when pinned, else the published ``sha256_prefix``."""
    if not entry.sha256 and not entry.sha256_prefix:
        return None
    digest = file_sha256(path)
    if entry.sha256 and digest != entry.sha256:
        return f"sha256 {digest}, expected {entry.sha256} (manifest)"
    if not entry.sha256 and not digest.startswith(entry.sha256_prefix):
        return f"sha256 {digest}, expected one starting {entry.sha256_prefix} (published prefix)"
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
    if entry.fetch_command:
        raise WeightsMissing(name, f"installed by its own tool after you accept its licence ({entry.licence}): "
                                   f"{entry.fetch_command.format(dir=weights_dir)}")
    if not direct_download(entry):
        raise WeightsMissing(name, f"not a direct download: get it from {entry.url} and place it at {dest}"
                                   + (f"; notes: {entry.notes}" if entry.notes else ""))
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
