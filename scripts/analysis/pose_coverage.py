"""Are a clip's validation head poses covered by its training poses (docs/quality.md, "Looked at
and not a cause", "Validation poses that no training frame covers")? For every frame of each split,
the geodesic angle between its head rotation and the nearest training frame's; a training frame
leaves out the training frames within ``--exclude`` frames of its own (its neighbours in time,
which would otherwise always be near). A diagnostic of this project, not a paper's metric.

    .venv/bin/python scripts/analysis/pose_coverage.py results/data/German results/data/longhair_pt

Prints one line per dataset folder: the median and 90th percentile of that angle (degrees) over
the training frames and over the validation frames, and the validation frames' largest. Reads
``transforms_train.json`` and ``transforms_val.json`` (``frames[*].transform_matrix``, camera to
world, and ``img_id``); raises :class:`pipeline.common.errors.InputError` naming a missing or
unreadable file.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from pipeline.common.errors import InputError  # noqa: E402
from pipeline.oneshot.face import rotation_deg  # noqa: E402


def nearest_rotation_deg(train_rot: np.ndarray, train_ids: np.ndarray, query_rot: np.ndarray,
                         query_ids: np.ndarray, exclude: int | None) -> np.ndarray:
    """Geodesic angle from each query rotation to the nearest training rotation.

    Args:
        train_rot: [N, 3, 3] rotation matrices of the training frames.
        train_ids: [N] their frame numbers (``img_id``).
        query_rot: [M, 3, 3] rotation matrices to look up.
        query_ids: [M] their frame numbers.
        exclude: training frames with ``|img_id - query img_id| <= exclude`` are left out (a
            training frame's own neighbours in time); None keeps every training frame.
    Returns: [M] float64 angles in degrees, 0-180: the angle of the relative rotation, by the
        project's :func:`pipeline.oneshot.face.rotation_deg` (each matrix re-orthonormalised by SVD
        first, as the tracked poses are stored in float32); ``inf`` where every training frame is
        left out.
    Raises:
        ValueError: shapes that do not match the above.
    """
    train_rot, query_rot = np.asarray(train_rot, np.float64), np.asarray(query_rot, np.float64)
    if train_rot.ndim != 3 or train_rot.shape[1:] != (3, 3) or query_rot.ndim != 3 or query_rot.shape[1:] != (3, 3):
        raise ValueError("rotations must be [N, 3, 3] arrays")
    if len(train_ids) != len(train_rot) or len(query_ids) != len(query_rot):
        raise ValueError("one frame number per rotation")
    ang = rotation_deg(query_rot[:, None], train_rot[None])   # [M, N]
    if exclude is not None:
        near = np.abs(np.asarray(query_ids)[:, None] - np.asarray(train_ids)[None, :]) <= exclude
        ang = np.where(near, np.inf, ang)
    return ang.min(axis=1)


def read_split(data: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    """[N, 3, 3] head rotations (camera to world) and [N] ``img_id`` of ``transforms_{split}.json``.

    Raises:
        InputError: the file is missing, not JSON, or lacks ``frames[*].transform_matrix`` / ``img_id``.
    """
    path = data / f"transforms_{split}.json"
    try:
        frames = json.loads(path.read_text())["frames"]
        mats = np.array([f["transform_matrix"] for f in frames], np.float64)
        ids = np.array([int(f["img_id"]) for f in frames])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(path, f"cannot read the frames' transform_matrix and img_id ({exc})") from None
    if mats.ndim != 3 or mats.shape[1:] != (4, 4):
        raise InputError(path, f"transform_matrix must be 4x4, got shape {list(mats.shape[1:])}")
    return mats[:, :3, :3], ids


def coverage(data: Path, exclude: int = 5) -> dict:
    """The nearest-training-rotation angles of one dataset folder, summarised: median and 90th
    percentile (degrees) over the training frames (``exclude`` as in :func:`nearest_rotation_deg`)
    and over the validation frames (every training frame kept), and the validation maximum.

    Raises:
        InputError: as :func:`read_split`.
    """
    rt, it = read_split(data, "train")
    rv, iv = read_split(data, "val")
    a_t = nearest_rotation_deg(rt, it, rt, it, exclude)
    a_v = nearest_rotation_deg(rt, it, rv, iv, None)
    a_t = a_t[np.isfinite(a_t)]
    return {"train_median": float(np.median(a_t)), "train_p90": float(np.percentile(a_t, 90)),
            "val_median": float(np.median(a_v)), "val_p90": float(np.percentile(a_v, 90)),
            "val_max": float(a_v.max()), "train_frames": int(len(rt)), "val_frames": int(len(rv))}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("data", nargs="+", type=Path, help="dataset folders (results/data/ID)")
    ap.add_argument("--exclude", type=int, default=5, help="a training frame's neighbours left out (frames)")
    a = ap.parse_args(argv)
    for d in a.data:
        c = coverage(d, a.exclude)
        print(f"{d.name}: nearest training rotation (deg), median / p90: training frames "
              f"{c['train_median']:.2f} / {c['train_p90']:.2f} ({c['train_frames']}), validation frames "
              f"{c['val_median']:.2f} / {c['val_p90']:.2f} ({c['val_frames']}), validation max {c['val_max']:.2f}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except InputError as exc:
        sys.exit(f"error: {exc}")
