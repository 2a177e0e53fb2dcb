"""Body pose per frame: ``body_pose.npy`` with MediaPipe Pose's 33 landmarks of every frame.

The torso of a talking-head NeRF is a 2D field that RAD-NeRF and ER-NeRF deform by the head pose
alone; the shoulders of a speaker who leans, shrugs or walks move independently of it (the error
budget of ``docs/quality.md``: the body holds most of the validation error on real clips). This
stage tracks the body so that a torso can be conditioned on it (``TrainConfig.torso_body_pose``,
condition ``body_pose`` in :mod:`pipeline.models.conditions`).

Tracker: MediaPipe Pose (BlazePose GHUM, Bazarevsky et al. 2020), the legacy ``solutions.pose``
graph whose ``pose_detection`` and ``pose_landmark_full`` models ship inside the ``mediapipe``
wheel (Apache-2.0), so nothing is downloaded: video mode (``static_image_mode=False``: the landmarks
of one frame seed the next and are smoothed by MediaPipe's own filter), ``model_complexity`` 1.

Output ``body_pose.npy``: float32 [N, 33, 4] indexed by ``img_id`` (frame ``ori_imgs/{i}.jpg``):
``x``, ``y`` in [0, 1] of the frame's width and height (may leave [0, 1] for landmarks outside the
frame), ``z`` (MediaPipe's relative depth, in units of the width, hip-centred) and ``visibility``
in [0, 1]. Landmark order is MediaPipe's (0 nose, 11 left shoulder, 12 right shoulder, ...).
Frames where no body is found take the landmarks of the nearest frame where one is (their count is
in the report); a clip where no frame has a body (a face-only crop) keeps NaN with a warning, and
only a torso that needs the shoulders refuses it (:data:`pipeline.models.conditions.BODY_POSE`). The report ``body_pose.json`` gives
the frames, the detections, the mean shoulder visibility and the shoulders' spread in pixels.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from pipeline.common.errors import InputError
from pipeline.common.io import atomic_path, atomic_write_json
from pipeline.common.log import run_main, setup_logging
from pipeline.preprocess.landmarks import list_frames, read_bgr

log = logging.getLogger("pipeline.preprocess.body_pose")

#: MediaPipe Pose landmark indices of the shoulders (left, right): the torso condition
SHOULDERS = (11, 12)
N_LANDMARKS = 33


def fill_missing(landmarks: np.ndarray, found: np.ndarray) -> np.ndarray:
    """Frames without a detection take the landmarks of the nearest frame with one (the earlier
    one on a tie).

    Args:
        landmarks: [N, 33, 4] float32; rows where ``found`` is False are ignored.
        found: [N] bool.
    Returns: [N, 33, 4] float32 copy.
    Raises:
        ValueError: no frame has a detection.
    """
    idx = np.flatnonzero(found)
    if idx.size == 0:
        raise ValueError("no frame has a body")
    frames = np.arange(len(found))
    pos = np.searchsorted(idx, frames)                     # first found frame at or after each frame
    left, right = idx[np.clip(pos - 1, 0, idx.size - 1)], idx[np.clip(pos, 0, idx.size - 1)]
    nearest = np.where(np.abs(frames - left) <= np.abs(right - frames), left, right)
    return landmarks[nearest].astype(np.float32)


def track(images: Iterable[np.ndarray], n: int | None = None, model_complexity: int = 1
          ) -> tuple[np.ndarray, np.ndarray]:
    """MediaPipe Pose in video mode over ``images`` (RGB uint8 [H, W, 3] frames, in order; ``n``
    their count for the progress log).

    Returns ``landmarks`` [N, 33, 4] float32 (x, y in [0, 1] of the frame, z, visibility; NaN where
    nothing was found) and ``found`` [N] bool.
    """
    import mediapipe as mp

    rows, found = [], []
    with mp.solutions.pose.Pose(static_image_mode=False, model_complexity=model_complexity,
                                smooth_landmarks=True, enable_segmentation=False) as pose:
        for i, img in enumerate(images):
            res = pose.process(np.ascontiguousarray(img))
            if res.pose_landmarks is not None:
                rows.append([[p.x, p.y, p.z, p.visibility] for p in res.pose_landmarks.landmark])
                found.append(True)
            else:
                rows.append(np.full((N_LANDMARKS, 4), np.nan))
                found.append(False)
            if i and i % 250 == 0:
                log.info("body pose: %d / %s frames", i, n if n is not None else "?")
    return np.asarray(rows, np.float32).reshape(-1, N_LANDMARKS, 4), np.asarray(found, bool)


def model_versions() -> dict:
    """The mediapipe version and the sha256 of the two pose models inside its wheel
    (``modules/pose_detection/pose_detection.tflite``, ``modules/pose_landmark/pose_landmark_full.tflite``)."""
    import mediapipe as mp

    from pipeline.render.contract import sha256_file

    root = Path(mp.__file__).parent / "modules"
    models = {}
    for rel in ("pose_detection/pose_detection.tflite", "pose_landmark/pose_landmark_full.tflite"):
        models[rel] = sha256_file(root / rel) if (root / rel).is_file() else None
    return {"mediapipe": getattr(mp, "__version__", "unknown"), "models": models}


def read_frames(paths: list[Path]) -> Iterator[np.ndarray]:
    """RGB uint8 [H, W, 3] frames of ``paths`` (ori_imgs/{i}.jpg), one at a time
    (:func:`pipeline.preprocess.landmarks.read_bgr`).

    Raises:
        InputError: a frame cannot be read (named).
    """
    for path in paths:
        yield read_bgr(path)[..., ::-1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", required=True, type=Path, help="ori_imgs folder ({i}.jpg)")
    ap.add_argument("--out", required=True, type=Path, help="body_pose.npy")
    ap.add_argument("--report", required=True, type=Path, help="body_pose.json")
    a = ap.parse_args(argv)
    setup_logging("pipeline.preprocess.body_pose")
    frames = list_frames(a.frames)
    if not frames:
        raise InputError(a.frames, "no frames (*.jpg)")
    t0 = time.perf_counter()
    h, w = read_bgr(frames[0]).shape[:2]
    landmarks, found = track(read_frames(frames), len(frames))
    if found.any():
        filled = fill_missing(landmarks, found)
    else:   # a face-only crop: the dataset stays usable; a torso that needs the shoulders says so
        filled = landmarks
        log.warning("%s: MediaPipe Pose found no body in any of the %d frames; body_pose.npy holds NaN and a "
                    "torso with torso_body_pose cannot train on this identity", a.frames, len(frames))
    sh = filled[:, list(SHOULDERS)]
    versions = model_versions()
    report = {
        "frames": len(frames), "found": int(found.sum()), "filled_from_nearest": int((~found).sum()),
        "tracker": "mediapipe.solutions.pose (model_complexity 1, video mode)",
        "backend": f"mediapipe {versions['mediapipe']}",
        "models": versions["models"],
        "shoulder_visibility_mean": [float(v) for v in sh[:, :, 3].mean(0)] if found.any() else None,
        "shoulder_std_px": ([[float(sh[:, k, 0].std() * w), float(sh[:, k, 1].std() * h)] for k in range(2)]
                            if found.any() else None),
        "seconds": round(time.perf_counter() - t0, 2),
    }
    with atomic_path(a.out) as tmp:
        np.save(tmp, filled)
    atomic_write_json(a.report, report)
    if (~found).any():
        log.warning("%s: no body found in %d of %d frames; they take the nearest frame's landmarks",
                    a.frames, int((~found).sum()), len(frames))
    log.info("body pose of %d frames in %.1f s; shoulder spread (px) %s", len(frames), report["seconds"],
             report["shoulder_std_px"])
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
