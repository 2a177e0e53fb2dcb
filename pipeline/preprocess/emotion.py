"""Per-frame emotion labels of an identity's dataset (AED-NeRF): ``emotion.npy`` [N, 8] float32
codes (:func:`pipeline.common.emotion.emotion_code`; all zeros when the identity has no label) and
``emotion.json`` (the label of every frame, the segments in frames, the code layout).

    python -m pipeline.preprocess.emotion --frames results/data/X/ori_imgs --label "0-6 happy:3; 6-12 sad:1" \\
        --source identities.tsv --fps 25 --out-npy results/data/X/emotion.npy --out-json results/data/X/emotion.json

``--label`` is the identity's ``emotion`` cell of the identities table (empty: no label).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from pipeline.common.emotion import CATEGORIES, CODE_DIM, LEVELS, frame_labels, label_code, parse_spec
from pipeline.common.errors import InputError
from pipeline.common.io import atomic_path, atomic_write_json, read_json
from pipeline.common.log import run_main, setup_logging


def segments_in_frames(labels: list[str | None]) -> list[dict]:
    """Runs of equal labels: ``[{"start": i0, "end": i1 (exclusive), "label": str | None}]``."""
    out: list[dict] = []
    for i, lab in enumerate(labels):
        if out and out[-1]["label"] == lab:
            out[-1]["end"] = i + 1
        else:
            out.append({"start": i, "end": i + 1, "label": lab})
    return out


def build(n_frames: int, label: str | None, fps: float, source: str) -> tuple[np.ndarray, dict]:
    """(codes [n_frames, 8] float32, emotion.json dict) for a clip of ``n_frames`` frames.

    Raises:
        InputError: naming ``source``, for a bad label or segments that end before the clip.
    """
    if label:
        try:
            segs = parse_spec(label)
        except ValueError as exc:
            raise InputError(source, str(exc)) from None
        labels: list[str | None] = frame_labels(segs, n_frames, fps, source)
        codes = np.stack([label_code(s) for s in labels]) if n_frames else np.zeros((0, CODE_DIM), np.float32)
    else:
        labels = [None] * n_frames
        codes = np.zeros((n_frames, CODE_DIM), np.float32)
    info = {"labels": labels, "segments": segments_in_frames(labels), "fps": fps, "source": label,
            "code": {"dim": CODE_DIM, "categories": list(CATEGORIES), "levels": list(LEVELS),
                     "layout": "one-hot category (5) ++ one-hot level (3); zeros = unlabelled"}}
    return codes.astype(np.float32), info


def read_segments(path: str | Path) -> list[tuple[int, int]]:
    """``(start, end)`` frame ranges of the label runs of an ``emotion.json``."""
    return [(int(s["start"]), int(s["end"])) for s in read_json(path).get("segments", [])]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", required=True, type=Path, help="ori_imgs folder (frame count)")
    ap.add_argument("--label", default="", help="the identity's emotion cell (empty: none)")
    ap.add_argument("--source", default="identities table", help="where the label comes from (error messages)")
    ap.add_argument("--fps", type=float, default=25.0)
    ap.add_argument("--out-npy", required=True, type=Path)
    ap.add_argument("--out-json", required=True, type=Path)
    a = ap.parse_args(argv)
    log = setup_logging("pipeline.preprocess.emotion")
    n = len(list(a.frames.glob("*.jpg")))
    if n == 0:
        raise InputError(a.frames, "no frames (*.jpg)")
    codes, info = build(n, a.label.strip() or None, a.fps, a.source)
    with atomic_path(a.out_npy) as tmp:
        with open(tmp, "wb") as fh:
            np.save(fh, codes)
    atomic_write_json(a.out_json, info)
    log.info("%d frames, segments %s", n, [(s["start"], s["end"], s["label"]) for s in info["segments"]])
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
