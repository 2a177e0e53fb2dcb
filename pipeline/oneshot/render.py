"""One one-shot run: reference photo x driving clip -> the render contract (protocol ``one_shot``).

Writes ``results/renders/{method}/{reference}/{test}/`` (frames/, video.mp4 with the driving
audio, manifest.json). The manifest adds to the contract's fields: ``reference`` (name, path,
sha256, flipped, size), ``driving`` (path, kind, sha256, and the driving render's method /
identity / test / fps_render), ``anchor`` (frame index, how chosen, score), ``backend`` (name,
config choice, reason, description), ``timings`` (seconds per step), ``fps_chain`` (audio -> NeRF
-> photo: ``1 / (1 / fps_nerf + 1 / fps_oneshot)``, null without the NeRF's render FPS) and
``driving_faces_missing`` (driving frames without a face, which repeat the last found face).
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from pipeline.common.errors import InputError
from pipeline.oneshot import BACKEND_METHODS, PROTOCOL

log = logging.getLogger(__name__)


def load_reference(path: str | Path, size: int | None, flip: bool = False) -> tuple[np.ndarray, dict]:
    """The reference photo at the output size (longer side ``size``; None keeps it), optionally
    mirrored left-right, and its manifest record.

    Raises:
        InputError: missing / unreadable file.
    """
    from pipeline.oneshot.face import read_image, resize_max
    from pipeline.render.contract import sha256_file

    img = read_image(path)
    rec = {"path": str(path), "sha256": sha256_file(path), "flipped": bool(flip),
           "source_size": [img.shape[1], img.shape[0]]}
    img = resize_max(img, size)
    if flip:
        img = np.ascontiguousarray(img[:, ::-1])
    rec["size"] = [img.shape[1], img.shape[0]]
    return img, rec


def add_run_arguments(ap) -> None:
    """The command-line options every one-shot producer shares: ``--reference --photo --driving
    --test --out --size --flip`` (``python -m pipeline.oneshot``, ``.bounds``, ``.ingest``)."""
    ap.add_argument("--reference", required=True, help="reference name (config oneshot.references key)")
    ap.add_argument("--photo", required=True, help="reference photo (one visible face)")
    ap.add_argument("--driving", required=True, help="render-contract folder or talking video")
    ap.add_argument("--test", required=True, help="test name (output folder name)")
    ap.add_argument("--out", required=True, help="results/renders/{method}/{reference}/{test}")
    ap.add_argument("--size", type=int, default=None, help="output longer side in pixels (default: the photo's)")
    ap.add_argument("--flip", action="store_true", help="mirror the photo left-right")


def chain_fps(fps_nerf: float | None, fps_oneshot: float | None) -> float | None:
    """Frames per second of the whole audio -> NeRF -> photo chain (the two stages in series):
    ``1 / (1 / fps_nerf + 1 / fps_oneshot)``; None when either is unknown or not positive."""
    if not fps_nerf or not fps_oneshot or fps_nerf <= 0 or fps_oneshot <= 0:
        return None
    return 1.0 / (1.0 / fps_nerf + 1.0 / fps_oneshot)


def render_oneshot(reference: str, photo: str | Path, driving: str | Path, test: str, out: str | Path,
                   backend: str = "auto", weights_dir: str | Path = "weights_cache", size: int | None = None,
                   anchor: int | None = None, flip: bool = False, method: str | None = None,
                   device: str = "cpu") -> dict:
    """Drive ``photo`` with ``driving`` and write the render contract to ``out``.

    Args:
        reference: the reference's name (``oneshot.references`` key; ``-flipped`` suffix for runs
            on the mirrored photo).
        photo: the reference photo (any image format; exactly one face).
        driving: a render-contract folder or a talking video (:func:`pipeline.oneshot.driving.load_driving`).
        test: the run's test name (the folder name).
        backend: ``auto | liveportrait | meshwarp`` (:func:`pipeline.oneshot.backends.resolve_backend`).
        size: output longer side in pixels (None: the photo's size).
        anchor: driving anchor frame (None: chosen automatically, :func:`pipeline.oneshot.face.choose_anchor`).
        flip: mirror the photo left-right first (NeRFFaceSpeech's internal-differences test).
        method: expected method name (Snakemake's output folder); checked against the backend.
    Returns:
        the manifest written.
    Raises:
        InputError: bad photo (no face / several faces), bad driving clip, anchor out of range.
        pipeline.weights.WeightsMissing: liveportrait without its weight files (with the fetch command).
        ValueError: ``method`` does not match the backend that runs.
    """
    from pipeline.oneshot.backends import resolve_backend
    from pipeline.oneshot.driving import load_driving
    from pipeline.oneshot.face import anchor_record, choose_anchor, photo_face, track_frames
    from pipeline.render.contract import write_contract

    timings = {}
    chosen, reason = resolve_backend(backend, weights_dir)
    expected = BACKEND_METHODS[chosen]
    if method is not None and method != expected:
        raise ValueError(f"backend {chosen} ({reason}) writes method {expected}, not {method}")
    t0 = time.perf_counter()
    img, ref_rec = load_reference(photo, size, flip)
    drv = load_driving(driving)
    timings["load_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    if chosen == "liveportrait":
        from pipeline.oneshot.liveportrait import LivePortrait

        engine = LivePortrait.from_weights_dir(weights_dir, device=device)
    ptrack = photo_face(img, photo)
    timings["photo_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    try:
        track = track_frames(drv.frames)
    except ValueError as exc:
        raise InputError(driving, f"driving clip: {exc}") from None
    if anchor is None:
        a, anchor_rec = choose_anchor(track)
    else:
        try:
            a, anchor_rec = anchor, anchor_record(track, anchor)
        except IndexError as exc:
            raise InputError(driving, str(exc)) from None
    timings["track_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    if chosen == "meshwarp":
        from pipeline.oneshot.meshwarp import DESCRIPTION, MeshWarp

        mw = MeshWarp(img, ptrack, track, a)
        frames = [mw.frame(t, drv.frames[t]) for t in range(len(track))]
    else:
        from pipeline.oneshot.liveportrait import DESCRIPTION

        frames = engine.animate(img, ptrack, drv.frames, track, a)
    timings["generate_s"] = time.perf_counter() - t0
    seconds = timings["track_s"] + timings["generate_s"]
    n = len(frames)
    fps = n / seconds if seconds > 0 else None
    driving_audio = dict(drv.record["audio"])
    fields = {
        "method": expected, "identity": reference, "test": test, "protocol": PROTOCOL,
        "driving_audio": driving_audio, "compositing": "paste_back", "controls": {},
        "device": device, "render_seconds": seconds, "fps_render": fps, "gt_reference": None,
        "reference": {"name": reference, **ref_rec}, "driving": drv.record, "anchor": anchor_rec,
        "backend": {"name": chosen, "choice": backend, "reason": reason, "description": DESCRIPTION},
        "timings": timings, "fps_chain": chain_fps(drv.record.get("fps_render"), fps),
        "driving_faces_missing": int((~track.ok).sum()),
        "render_seconds_note": "driving-frame landmarks + generation; photo analysis and I/O excluded",
    }
    man = write_contract(out, frames, drv.audio_16k, fields)
    log.info("%s/%s/%s: %d frames, %s, anchor %d, %.1f ms/frame", expected, reference, test, n, chosen, a,
             1000 * seconds / max(n, 1))
    return man
