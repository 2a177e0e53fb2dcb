"""``python -m pipeline.oneshot.benchmark``: milliseconds per frame of each one-shot backend.

Drives the shipped reference photo (``resources/photos/Macron.png``) with the first ``--frames``
frames of the shipped sample video (``resources/sample/German_12s.mp4``) at each ``--size``
(output longer side) and prints one line per backend x size x device: the time per frame of the
one-shot stage (driving-frame landmarks + generation; photo analysis, model loading and I/O
excluded, one warm-up frame not counted for liveportrait). ``liveportrait`` needs its weights
(``python -m pipeline.weights list``); without them its line says n/a and the fetch command.
On a CUDA machine liveportrait is also timed on the GPU. ``--out`` writes the numbers as JSON.

Usage::

    python -m pipeline.oneshot.benchmark [--frames 25] [--size 128 512] [--threads 1] [--out bench.json]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from pipeline.common.config import PROJECT_ROOT
from pipeline.common.log import run_main, setup_logging

PHOTO = PROJECT_ROOT / "resources" / "photos" / "Macron.png"
VIDEO = PROJECT_ROOT / "resources" / "sample" / "German_12s.mp4"


def _frames(n: int) -> np.ndarray:
    from pipeline.preprocess.media import iter_frames, probe_media

    info = probe_media(VIDEO)
    out = []
    for f in iter_frames(VIDEO, fps=25, width=info.width, height=info.height):
        out.append(f)
        if len(out) >= n:
            break
    return np.stack(out)


def bench_meshwarp(photo: np.ndarray, frames: np.ndarray) -> float:
    """ms per frame of the meshwarp backend (tracking + warp)."""
    from pipeline.oneshot.face import choose_anchor, photo_face, track_frames
    from pipeline.oneshot.meshwarp import MeshWarp

    ptrack = photo_face(photo, PHOTO)
    t0 = time.perf_counter()
    track = track_frames(frames)
    a, _ = choose_anchor(track)
    mw = MeshWarp(photo, ptrack, track, a)
    for t in range(len(frames)):
        mw.frame(t, frames[t])
    return 1000 * (time.perf_counter() - t0) / len(frames)


def bench_liveportrait(photo: np.ndarray, frames: np.ndarray, weights_dir, device: str) -> float:
    """ms per frame of the liveportrait backend (tracking + networks + paste-back), after one
    warm-up frame. Raises WeightsMissing without the weight files."""
    import torch

    from pipeline.oneshot.face import choose_anchor, photo_face, track_frames
    from pipeline.oneshot.liveportrait import LivePortrait

    eng = LivePortrait.from_weights_dir(weights_dir, device=device)
    ptrack = photo_face(photo, PHOTO)
    track = track_frames(frames)
    a, _ = choose_anchor(track)
    eng.animate(photo, ptrack, frames[:1], track, 0)          # warm-up
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    track = track_frames(frames)
    eng.animate(photo, ptrack, frames, track, a)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return 1000 * (time.perf_counter() - t0) / len(frames)


def main(argv=None) -> int:
    """CLI entry point (see module docstring)."""
    ap = argparse.ArgumentParser(prog="python -m pipeline.oneshot.benchmark", description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=25)
    ap.add_argument("--size", type=int, nargs="+", default=[128, 512])
    ap.add_argument("--backend", nargs="+", default=["meshwarp", "liveportrait"])
    ap.add_argument("--weights-dir", default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None, help="JSON with the numbers")
    args = ap.parse_args(argv)
    log = setup_logging("pipeline.oneshot.benchmark")
    import cv2
    import torch

    from pipeline.common.config import weights_dir as config_weights_dir
    from pipeline.common.io import atomic_write_json
    from pipeline.oneshot.backends import fetch_command, missing_liveportrait
    from pipeline.oneshot.face import read_image, resize_max

    cv2.setNumThreads(args.threads)
    torch.set_num_threads(args.threads)
    wdir = Path(args.weights_dir) if args.weights_dir else config_weights_dir()
    frames = _frames(args.frames)
    rows = []
    for size in args.size:
        photo = resize_max(read_image(PHOTO), size)
        for backend in args.backend:
            devices = ["cpu"] + (["cuda"] if backend == "liveportrait" and torch.cuda.is_available() else [])
            for dev in devices:
                row = {"backend": backend, "size": size, "device": dev, "frames": len(frames), "threads": args.threads}
                if backend == "meshwarp":
                    row["ms_per_frame"] = bench_meshwarp(photo, frames)
                elif missing_liveportrait(wdir):
                    row["ms_per_frame"] = None
                    row["na_reason"] = f"weights missing in {wdir}: `{fetch_command(missing_liveportrait(wdir))}`"
                else:
                    row["ms_per_frame"] = bench_liveportrait(photo, frames, wdir, dev)
                rows.append(row)
                ms = row["ms_per_frame"]
                print(f"{backend:13s} {size:4d}px {dev:5s} " + (f"{ms:9.1f} ms/frame ({1000 / ms:.1f} fps)"
                                                                 if ms is not None else f"n/a ({row['na_reason']})"),
                      flush=True)
    if args.out:
        atomic_write_json(args.out, {"rows": rows, "photo": str(PHOTO), "video": str(VIDEO)})
        log.info("wrote %s", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
