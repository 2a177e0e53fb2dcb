"""Which one-shot backend runs (config ``oneshot.backend``: ``auto | liveportrait | meshwarp``)."""
from __future__ import annotations

from pathlib import Path

from pipeline.oneshot import BACKEND_METHODS

#: manifest entries (pipeline/weights/manifest.yaml) the liveportrait backend loads
LIVEPORTRAIT_WEIGHTS = ("liveportrait_appearance_feature_extractor", "liveportrait_motion_extractor",
                        "liveportrait_warping_module", "liveportrait_spade_generator", "liveportrait_stitching")

BACKENDS = ("auto", *BACKEND_METHODS)


def missing_liveportrait(weights_dir: str | Path) -> list[str]:
    """Names of the LivePortrait weight files absent from ``weights_dir``."""
    from pipeline.weights import load_manifest

    man = load_manifest()
    return [n for n in LIVEPORTRAIT_WEIGHTS if not man[n].present(weights_dir)]


def fetch_command(names: list[str] | tuple[str, ...] = LIVEPORTRAIT_WEIGHTS) -> str:
    """The command that downloads the given weight entries (on a machine with internet)."""
    return "python -m pipeline.weights fetch " + " ".join(names)


def resolve_backend(choice: str, weights_dir: str | Path) -> tuple[str, str]:
    """The backend that runs, and why.

    Args:
        choice: ``auto``, ``liveportrait`` or ``meshwarp``.
        weights_dir: the pretrained-weights folder.
    Returns:
        (backend, reason); ``auto`` picks ``liveportrait`` when all its weight files are present,
        else ``meshwarp``. An explicit ``liveportrait`` is returned even when weights are missing
        (running it then raises :class:`pipeline.weights.WeightsMissing` with the fetch command).
    Raises:
        ValueError: an unknown choice.
    """
    if choice not in BACKENDS:
        raise ValueError(f"oneshot.backend {choice!r} not in {BACKENDS}")
    if choice != "auto":
        return choice, f"set in config oneshot.backend: {choice}"
    missing = missing_liveportrait(weights_dir)
    if not missing:
        return "liveportrait", f"auto: all LivePortrait weights present in {weights_dir}"
    return "meshwarp", (f"auto: LivePortrait weights missing in {weights_dir} ({', '.join(missing)}; "
                        f"`{fetch_command(missing)}` on a machine with internet)")
