"""Dataset manifest: checked counts of every artefact, crop window, focal, backends, versions, timings.

``manifest.json`` is the last file the dataset builder writes; its presence means the dataset under
``results/data/{identity}/`` is complete and consistent. Every per-frame artefact is counted (not
assumed) and must equal the frame count of the cropped video (``crop.json`` ``n_frames``); a
mismatch raises :class:`InputError` naming the artefact.

Fields (see docs/preprocess-tracking.md): ``identity``, ``frames``, ``fps``, ``size``, ``counts``
(artefact -> count), ``crop`` (fixed or moving window, first/last window, jitter), ``av_durations``
(audio and video stream durations of the raw video, from ``probe.json``), ``focal_len``,
``reproj_error_px``, ``threedmm`` (status and mean landmark error of the SFM fit), ``failed_frames``,
``excluded_frames`` (face-less stretches, in neither split), ``train_val_frames``, ``backends`` (stage -> backend), ``tool_versions``,
``timings`` (stage -> seconds, frames/s; ``total``), ``config_hash``, ``files``.
"""
from __future__ import annotations

import argparse
import json
import logging
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.common.config import config_hash, parse_cfg_arg
from pipeline.common.errors import InputError
from pipeline.common.io import atomic_write_json, read_json
from pipeline.common.layout import AUDIO_FEATURE_FILES, DatasetLayout
from pipeline.common.log import run_main, setup_logging

log = logging.getLogger("pipeline.preprocess.manifest")

#: per-frame image folders: artefact name -> (folder attribute of DatasetLayout, suffix)
FRAME_FOLDERS = {
    "ori_imgs": ("ori_imgs", ".jpg"),
    "lms": ("ori_imgs", ".lms"),
    "parsing": ("parsing", ".png"),
    "gt_imgs": ("gt_imgs", ".jpg"),
    "torso_imgs": ("torso_imgs", ".png"),
}
#: optional per-frame folders (TalkingGaussian extras, preprocess.teeth_mask.enabled): name -> suffix
OPTIONAL_FRAME_FOLDERS = {"teeth_mask": ".npy", "parsing_tg": ".png"}
#: python distributions whose versions are recorded
PACKAGES = {"mediapipe": "mediapipe", "dlib": "dlib-bin", "torch": "torch", "snakemake": "snakemake",
            "opencv": "opencv-python-headless", "numpy": "numpy", "eos": "eos-py"}


def count_frame_files(folder: Path, suffix: str) -> tuple[int, list[int]]:
    """Count ``{i}{suffix}`` files in ``folder``.

    Returns:
        (count, missing indices in ``0..count-1``); a missing folder counts 0.
    """
    if not folder.is_dir():
        return 0, []
    idx = sorted(int(p.stem) for p in folder.glob(f"*{suffix}") if p.stem.isdigit())
    missing = sorted(set(range(len(idx))) - set(idx))
    return len(idx), missing


def count_rows(path: Path) -> int:
    """Rows of a per-frame artefact: ``.npy`` first dimension, ``.csv`` data rows, transforms frames."""
    if not path.exists():
        raise InputError(path, "missing dataset artefact")
    if path.suffix == ".npy":
        return int(np.load(path, mmap_mode="r").shape[0])
    if path.suffix == ".csv":
        return len(pd.read_csv(path, skipinitialspace=True))
    raise ValueError(f"no row count for {path}")


def artefact_counts(layout: DatasetLayout, audio_features: list[str]) -> dict[str, int]:
    """Count every per-frame artefact of a dataset.

    Returns:
        {artefact: count}; raises InputError when a folder has gaps in its frame numbering.
    """
    counts: dict[str, int] = {}
    folders = [(name, getattr(layout, attr), suffix) for name, (attr, suffix) in FRAME_FOLDERS.items()]
    # optional TalkingGaussian extras: counted when built
    folders += [(name, layout.root / name, suffix) for name, suffix in OPTIONAL_FRAME_FOLDERS.items()
                if (layout.root / name).is_dir()]
    for name, folder, suffix in folders:
        n, missing = count_frame_files(folder, suffix)
        if missing:
            raise InputError(folder, f"{name}: frame numbering has gaps (missing {missing[:5]})")
        counts[name] = n
    fit = layout.root / "threedmm.npz"  # rows only when the 3DMM fit ran (not n/a)
    if fit.is_file():
        with np.load(fit) as z:
            if "expression" in z:
                counts["threedmm"] = int(z["expression"].shape[0])
    counts["face_mesh"] = count_rows(layout.face_mesh)
    counts["blendshapes"] = count_rows(layout.blendshapes)
    for feat in audio_features:
        counts[Path(AUDIO_FEATURE_FILES[feat]).stem] = count_rows(layout.audio_feature(feat))
    train, val = read_json(layout.transforms_train), read_json(layout.transforms_val)
    excluded = sorted(int(i) for i in read_json(layout.landmarks_report).get("excluded_frames", []))
    counts["transforms"] = len(train.get("frames", [])) + len(val.get("frames", [])) + len(excluded)
    counts["au_csv"] = count_rows(layout.au)
    counts["body_pose"] = count_rows(layout.body_pose)
    counts["body_flow"] = count_rows(layout.body_flow)
    tr_ids = [f["img_id"] for f in train.get("frames", [])]
    va_ids = [f["img_id"] for f in val.get("frames", [])]
    # each split in order, together every frame once (the validation frames are the clip's end, or
    # the end of every emotion segment: pipeline.preprocess.tracking.split_ids)
    # frames of face-less stretches (landmarks.json excluded_frames) are in neither split
    n_all = len(tr_ids) + len(va_ids) + len(excluded)
    if sorted(tr_ids + va_ids + excluded) != list(range(n_all)) or tr_ids != sorted(tr_ids) \
            or va_ids != sorted(va_ids):
        raise InputError(layout.transforms_train, "img_id of transforms_train + transforms_val + the excluded "
                                                  "frames are not 0..N-1, each frame once, each split in order")
    return counts


def check_counts(counts: dict[str, int], n_frames: int, layout: DatasetLayout) -> None:
    """Raise InputError naming the first artefact whose count differs from ``n_frames``."""
    for name, n in counts.items():
        if n != n_frames:
            raise InputError(layout.root / name, f"artefact '{name}' has {n} entries but the video has {n_frames} frames")


def read_benchmarks(paths: list[Path], n_frames: int) -> dict:
    """Per-stage timings from Snakemake ``benchmark:`` TSVs (``s`` column; stage = parent folder name).

    Returns:
        {stage: {"seconds", "frames_per_second"}, ..., "total": {...}} (seconds summed over stages).
    """
    out: dict = {}
    for p in paths:
        p = Path(p)
        try:
            df = pd.read_csv(p, sep="\t")
            sec = float(df["s"].iloc[-1])
        except (FileNotFoundError, KeyError, IndexError, pd.errors.ParserError, pd.errors.EmptyDataError):
            raise InputError(p, "not a Snakemake benchmark TSV (column 's')") from None
        out[p.parent.name] = {"seconds": round(sec, 3),
                              "frames_per_second": round(n_frames / sec, 2) if sec > 0 else None}
    if out:
        total = sum(v["seconds"] for v in out.values())
        out["total"] = {"seconds": round(total, 3),
                        "frames_per_second": round(n_frames / total, 2) if total > 0 else None}
    return out


def tool_versions() -> dict[str, str | None]:
    """Versions of python, ffmpeg and the main libraries (None when not installed)."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    try:
        first = subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True, timeout=30).stdout.splitlines()
        out["ffmpeg"] = first[0].split()[2] if first else None
    except (OSError, subprocess.TimeoutExpired, IndexError):
        out["ffmpeg"] = None
    for key, dist in PACKAGES.items():
        try:
            out[key] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[key] = None
    return out


def stage_backends(root: Path) -> dict:
    """Backends recorded by the stage reports (``*.json`` in the dataset folder and its subfolders'
    report files): keys ``backend``, ``backends`` and ``extractor``."""
    out: dict = {}
    for p in sorted(root.glob("*.json")) + sorted(root.glob("*/report.json")):
        if p.name in ("manifest.json", "transforms_train.json", "transforms_val.json"):
            continue
        try:
            rep = json.loads(p.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if not isinstance(rep, dict):
            continue
        stage = p.stem if p.name != "report.json" else p.parent.name
        for key in ("backends", "backend", "extractor", "exp_model"):
            if key in rep and not isinstance(rep[key], (list,)):
                out.setdefault(stage, {})[key] = rep[key]
    return out


def threedmm_summary(path: Path) -> dict | None:
    """``status``, ``mean_landmark_error_px``, ``identity_frames`` count and ``reason`` (n/a) from
    ``threedmm.json``; None when the stage did not run."""
    if not path.is_file():
        return None
    rep = read_json(path)
    out = {"status": rep.get("status"), "mean_landmark_error_px": rep.get("mean_landmark_error_px"),
           "identity_frames": len(rep.get("identity_frames", [])), "frames_per_second": rep.get("frames_per_second")}
    if rep.get("reason"):
        out["reason"] = rep["reason"]
    return out


def build_manifest(layout: DatasetLayout, cfg: dict, bench: list[Path]) -> dict:
    """Collect and check everything ``manifest.json`` records (module docstring).

    Raises:
        InputError: a missing report, or an artefact whose count differs from the frame count.
    """
    crop = read_json(layout.crop)
    n = int(crop.get("n_frames", 0)) or count_frame_files(layout.ori_imgs, ".jpg")[0]
    feats = list(cfg.get("audio", {}).get("features", ["mel"]))
    counts = artefact_counts(layout, feats)
    check_counts(counts, n, layout)
    lm = read_json(layout.landmarks_report)
    probe = read_json(layout.probe) if layout.probe.is_file() else {}
    tracking = read_json(layout.root / "tracking.json")
    windows = np.asarray(crop.get("windows", []), dtype=float)
    crop_info = {
        "fixed": crop.get("fixed"),
        "window_format": crop.get("window_format"),
        "first_window": windows[0].tolist() if len(windows) else None,
        "last_window": windows[-1].tolist() if len(windows) else None,
        "mean_window": windows.mean(0).round(2).tolist() if len(windows) else None,
        "jitter": crop.get("jitter"),
        "source": crop.get("source"),
        "span": crop.get("span"),
        "camera_moving_steps": (crop.get("camera") or {}).get("moving_steps"),
    }
    return {
        "identity": layout.identity,
        "frames": n,
        "fps": crop.get("fps"),
        "size": crop.get("size"),
        "counts": counts,
        "crop": crop_info,
        "av_durations": probe.get("av_durations"),
        "focal_len": tracking.get("focal_len"),
        "focal_at_grid_border": tracking.get("focal_search", {}).get("at_grid_border"),
        "focal_source": tracking.get("focal_source", "search"),
        "focal_prior_reason": tracking.get("focal_prior_reason"),
        "reproj_error_px": tracking.get("reproj_error_px", {}).get("mean"),
        "threedmm": threedmm_summary(layout.root / "threedmm.json"),
        "failed_frames": lm.get("failed_frames", []),
        "excluded_frames": lm.get("excluded_frames", []),
        "train_val_frames": [tracking.get("train_frames"), tracking.get("val_frames")],
        "backends": stage_backends(layout.root),
        "audio_features": feats,
        "tool_versions": tool_versions(),
        "timings": read_benchmarks(bench, n),
        "config_hash": config_hash(cfg),
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, type=Path, help="the dataset folder results/data/{identity}")
    ap.add_argument("--identity", required=True)
    ap.add_argument("--bench", nargs="*", default=[], type=Path, help="benchmark TSVs of the dataset rules")
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--cfg", default="{}", help="JSON of config preprocess")
    args = ap.parse_args(argv)
    setup_logging("pipeline.preprocess.manifest")
    layout = DatasetLayout(args.data, args.identity)
    manifest = build_manifest(layout, parse_cfg_arg(args.cfg), args.bench)
    atomic_write_json(args.out, manifest)
    log.info("%s: %d frames, every artefact counted; focal %.1f px, reprojection error %.2f px",
             args.identity, manifest["frames"], manifest["focal_len"] or 0, manifest["reproj_error_px"] or 0)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
