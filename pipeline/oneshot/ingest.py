"""Ingest another one-shot system's output video (NeRFFaceSpeech, ...) into the render contract
with protocol ``one_shot``, so that its frames are scored and tabulated like ours.

The video is re-encoded to 25 fps and scaled to the reference's output size; its frame count is
aligned with the driving clip (extra frames cut, missing ones repeat the last; both recorded);
its own audio track is used when it has one, else the driver's. A burnt-in caption or watermark
(NeRFFaceSpeech's demo videos carry one) is masked before the metrics: ``--mask X Y W H`` (fractions
of the frame width / height) is filled with the reference photo's pixels of that rectangle and
recorded in the manifest (``external.caption_mask``).

Usage::

    python -m pipeline.oneshot.ingest --video nerffacespeech_macron.mp4 --method nerffacespeech \
        --reference Macron --photo resources/photos/Macron.png --driving results/renders/er_nerf/German/jfk \
        --test er_nerf-German-jfk --size 128 --mask 0 0.85 1 0.15 \
        --out results/renders/nerffacespeech/Macron/er_nerf-German-jfk
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

from pipeline.common.errors import InputError
from pipeline.common.log import run_main, setup_logging
from pipeline.oneshot import PROTOCOL


def mask_rect(frame: np.ndarray, fill: np.ndarray, rect: tuple[float, float, float, float]) -> np.ndarray:
    """``frame`` with the rectangle ``rect`` = (x, y, w, h) in fractions of its size replaced by the
    same pixels of ``fill`` (same shape). Raises ValueError for a rectangle outside [0, 1]."""
    x, y, w, h = rect
    if not (0 <= x < 1 and 0 <= y < 1 and 0 < w <= 1 - x + 1e-9 and 0 < h <= 1 - y + 1e-9):
        raise ValueError(f"mask {rect}: x, y, w, h must be fractions with the rectangle inside the frame")
    H, W = frame.shape[:2]
    x0, y0 = int(round(x * W)), int(round(y * H))
    x1, y1 = int(round((x + w) * W)), int(round((y + h) * H))
    out = frame.copy()
    out[y0:y1, x0:x1] = fill[y0:y1, x0:x1]
    return out


def ingest_oneshot(video: str | Path, method: str, reference: str, photo: str | Path, driving: str | Path,
                   test: str, out: str | Path, size: int | None = None,
                   mask: tuple[float, float, float, float] | None = None, flip: bool = False) -> dict:
    """Write the render contract of an external one-shot video.

    Args:
        video: the system's output (any container ffmpeg reads).
        method: its row name (must not be a method of this pipeline).
        reference, photo, driving, test, size: as :func:`pipeline.oneshot.render.render_oneshot`.
        mask: caption rectangle (x, y, w, h) in fractions of the frame, or None.
        flip: the video was made from the mirrored photo (recorded; CSIM then compares with the
            mirrored photo and the run enters the internal-differences table as "flipped").
    Returns:
        the manifest written.
    Raises:
        InputError: unreadable video (or no video stream), photo or driving clip; a bad mask.
    """
    import cv2

    from pipeline.baselines.external import aligned_frames
    from pipeline.oneshot.driving import load_driving
    from pipeline.oneshot.render import load_reference
    from pipeline.preprocess.media import iter_frames, load_audio, probe_media
    from pipeline.render.contract import AUDIO_SR, FPS, sha256_file, write_contract

    video = Path(video)
    info = probe_media(video)
    if not info.has_video:
        raise InputError(video, "no video stream")
    img, ref_rec = load_reference(photo, size, flip)
    drv = load_driving(driving)
    n = len(drv.frames)
    stats: dict = {}
    frames = aligned_frames(iter_frames(video, fps=FPS, width=info.width, height=info.height), n,
                            (img.shape[1], img.shape[0]), stats)
    track = load_audio(video, AUDIO_SR) if info.has_audio else drv.audio_16k
    with tempfile.TemporaryDirectory(prefix="oneshot_ingest") as tmp:
        for i, f in enumerate(frames):
            if mask is not None:
                try:
                    f = mask_rect(f, img, mask)
                except ValueError as exc:
                    raise InputError(video, str(exc)) from None
            cv2.imwrite(str(Path(tmp) / f"{i}.png"), cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
        fields = {
            "method": method, "identity": reference, "test": test, "protocol": PROTOCOL,
            "driving_audio": dict(drv.record["audio"]), "compositing": "full", "controls": {},
            "device": "external", "render_seconds": None, "fps_render": None, "gt_reference": None,
            "reference": {"name": reference, **ref_rec}, "driving": drv.record,
            "backend": {"name": "external", "choice": "external", "reason": f"ingested from {video}",
                        "description": "another system's output video"},
            "external": {"video": str(video), "sha256": sha256_file(video), "source_fps": info.avg_fps,
                         "source_size": [info.width, info.height], "audio_from": "video" if info.has_audio else "driving",
                         "padded_frames": stats["padded"], "trimmed": stats["trimmed"],
                         "caption_mask": None if mask is None else {"rect_xywh_fraction": list(mask),
                                                                     "fill": "reference photo pixels"}},
        }
        return write_contract(out, Path(tmp), track, fields)


def main(argv=None) -> int:
    """CLI entry point (see module docstring)."""
    from pipeline.oneshot.render import add_run_arguments

    ap = argparse.ArgumentParser(prog="python -m pipeline.oneshot.ingest", description=__doc__.splitlines()[0])
    ap.add_argument("--video", required=True, help="the other system's output video")
    ap.add_argument("--method", required=True, help="its row name in the tables")
    add_run_arguments(ap)      # --flip: the video was made from the mirrored photo
    ap.add_argument("--mask", type=float, nargs=4, metavar=("X", "Y", "W", "H"), default=None,
                    help="caption rectangle, fractions of the frame")
    args = ap.parse_args(argv)
    log = setup_logging("pipeline.oneshot.ingest")
    m = ingest_oneshot(args.video, args.method, args.reference, args.photo, args.driving, args.test, args.out,
                       args.size, tuple(args.mask) if args.mask else None, args.flip)
    log.info("%s: %d frames ingested", args.out, m["n_frames"])
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
