"""Crop/resample stage: raw video -> square, head-centred, constant-rate video + 16 kHz mono audio.

``python -m pipeline.preprocess.crop --video RAW --probe probe.json --out-video {id}.mp4
--out-audio aud.wav --out-track crop.json --cfg JSON``

1. Face track: BlazeFace (:mod:`pipeline.preprocess.faces`) on the video resampled to
   :data:`TRACK_FPS` and scaled to at most :data:`TRACK_HEIGHT` pixels high; gaps are interpolated.
2. Target window per output frame: centre = face-box centre moved down by
   ``center_y_shift`` x face side, side = ``margin`` x face side (face side =
   :data:`FACE_BOX_SCALE` x the detector box side); median + box filtered over
   ``smoothing_s`` seconds.
3. ``mode: fixed`` (default): ONE window for the whole clip, the smallest square holding every
   frame's target window (their union), centred on it, when that union is at most
   ``fixed_max_scale`` x the median target side; a larger union (a speaker walking across a wide
   shot, a camera zoom) would shrink the face too much and cannot be explained by a static camera
   anyway, so such a clip falls back to ``follow``. The NeRFs assume a static camera (one background ``bc.jpg``, a torso
   in image coordinates): a window that follows the head moves the background and the torso in
   the cropped frames, which the models then blur (docs/quality.md).
   ``mode: follow``: the window stays fixed while the target stays within ``deadband`` x side
   (centre) and a factor ``1 + deadband`` (side) of it; when the head leaves the band the window
   glides to the target (critically damped spring, time constant :data:`GLIDE_S`: no jerk) and
   locks again once it is there and slow. A clip whose target never leaves the band of its median
   gets one fixed window for all frames.
4. Window leaving the frame: CLAMPED, never padded. The window is shrunk to the frame's short side
   if larger, then shifted back inside the frame (the face is then off-centre near a frame edge).
5. Video: ffmpeg decodes, crops to the union of all windows and resamples to ``fps`` (the ``fps``
   filter: nearest source frame, so frames are repeated or dropped, never blended); each frame is
   cut and scaled with a sub-pixel affine warp (bicubic when enlarging) and piped to libx264
   (yuv420p, CRF 17).
6. Audio: first audio stream -> 16 kHz mono, aligned to the video start, padded/trimmed to exactly
   ``n_frames / fps`` seconds, written as PCM s16 WAV.
"""
from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass, fields, replace
from pathlib import Path

import numpy as np
from tqdm import tqdm

from pipeline.common.config import StageConfig, parse_cfg_arg
from pipeline.common.errors import InputError
from pipeline.common.io import atomic_path, atomic_write_json
from pipeline.common.log import run_main, setup_logging
from pipeline.preprocess.camera import CameraMotion, static_runs
from pipeline.preprocess.faces import Face, FaceDetector
from pipeline.preprocess.media import AUDIO_SR, VideoWriter, iter_frames, load_audio, probe_talking_video, write_wav

#: rate (frames/s) of the face-track detection pass
TRACK_FPS = 5.0
#: frames are scaled to at most this height for the detection pass (pixels)
TRACK_HEIGHT = 360
#: BlazeFace boxes span about brows to mouth; the face size the margin multiplies (hairline to
#: chin, ear to ear) is this many times the box side
FACE_BOX_SCALE = 1.25
#: time constant (1 / natural frequency) of the window's critically damped glide towards a
#: target that left the deadband (seconds)
GLIDE_S = 0.25


@dataclass
class CropConfig(StageConfig):
    """Config ``preprocess.crop``."""

    size: int = 512
    """Output side length (pixels, square)."""
    fps: float = 25.0
    """Constant output frame rate (frames/s)."""
    margin: float = 1.9
    """Crop side = margin x face side (face side = FACE_BOX_SCALE x the detector box side)."""
    center_y_shift: float = 0.15
    """Move the crop centre down by this fraction of the face-box side."""
    smoothing_s: float = 1.0
    """Temporal smoothing window of the face track (seconds)."""
    deadband: float = 0.08
    """``follow`` mode: keep the window fixed while the head stays within this fraction of the side."""
    mode: str = "fixed"
    """``fixed``: one window holding the head over the whole clip (static camera, as the NeRFs
    assume); ``follow``: the window glides after a head that leaves the deadband."""
    fixed_max_scale: float = 1.5
    """``fixed`` mode: one window only while the union of the per-frame target windows is at most
    this many times their median side (a larger one would shrink the face too much); beyond it
    ``span`` decides. On the real clips: 1.04-1.16 for the speakers in static shots (fixed helped
    the moving ones by 1.3-3.2 dB), 1.40 for the 720p broadcast's static-camera part (0-46 s, the
    speaker walks). It was 1.25 while it also stood in for camera moves (forced over the
    broadcast's push-in, one window lost 3.9 dB); camera moves are now measured
    (``camera_max_step_px``), and at 1.25 the kept stretch ended where the speaker starts to walk
    out of the window, so its validation frames (the last 1/11) left the training range
    (docs/quality.md, fix 11)."""
    span: str = "longest"
    """``fixed`` mode, when the camera moves (see ``camera_max_step_px``) or one window cannot
    hold the head over the whole clip: ``longest`` keeps the longest stretch with a static camera
    that one window holds (at least ``min_span_s``; the frames outside it are left out of the
    dataset, said in the log and in crop.json ``span``), ``whole`` keeps every frame and lets the
    window follow the head."""
    min_span_s: float = 8.0
    """Shortest stretch (seconds) that ``span: longest`` keeps; a shorter one: the whole clip, window
    following the head."""
    camera_max_step_px: float = 1.0
    """Camera motion between two face-track samples (largest frame-corner displacement of the
    background's similarity transform, pixels of the 360-px tracking frame;
    :mod:`pipeline.preprocess.camera`) above which the camera moved. Static shots of the real clips:
    at most 0.32 px per step; the broadcast's push-in: 1.6-4.3 px. 0 turns the check off."""


def track_faces(video: str | Path, width: int, height: int) -> tuple[np.ndarray, np.ndarray, list, CameraMotion]:
    """Face track on the video resampled to :data:`TRACK_FPS`, and the camera's motion measured on
    the background of the same frames (:class:`pipeline.preprocess.camera.CameraMotion`).

    Returns:
        ``times`` float [T] (s from the video start), ``boxes`` float [T, 3] = (cx, cy, side) in
        source pixels with NaN rows where no face was found (side = :data:`FACE_BOX_SCALE` x the
        detector box side), the raw detector boxes per sample (JSON) and the camera motion
        (T - 1 steps).
    """
    scale_h = min(height, TRACK_HEIGHT)
    s = height / scale_h
    boxes, raw = [], []
    prev: Face | None = None
    motion = CameraMotion()
    with FaceDetector() as det:
        for img in tqdm(iter_frames(video, fps=TRACK_FPS, scale_h=scale_h, width=width, height=height),
                        desc="face track", unit="frame", mininterval=5):
            faces = det.detect_near(img, prev)
            if prev is not None and len(faces) > 1:  # follow the same person
                faces.sort(key=lambda f: (f.cx - prev.cx) ** 2 + (f.cy - prev.cy) ** 2)
            if faces:
                prev = faces[0]
                f = faces[0].scaled(s)
                boxes.append((f.cx, f.cy, FACE_BOX_SCALE * f.side))
                raw.append(f.to_list())
            else:
                boxes.append((np.nan, np.nan, np.nan))
                raw.append(None)
            motion.update(img, None if prev is None else (prev.cx, prev.cy, FACE_BOX_SCALE * prev.side))
    boxes = np.array(boxes, dtype=np.float64).reshape(-1, 3)
    times = np.arange(len(boxes)) / TRACK_FPS
    return times, boxes, raw, motion


def _smooth(x: np.ndarray, n: int) -> np.ndarray:
    """Median then box filter over ``n`` samples along axis 0 (edges: nearest)."""
    from scipy.ndimage import median_filter, uniform_filter1d

    if n <= 1 or len(x) < 2:
        return x
    n = min(n, len(x))
    x = median_filter(x, size=(n | 1, 1), mode="nearest")
    return uniform_filter1d(x, size=n, axis=0, mode="nearest")


def _targets(times: np.ndarray, boxes: np.ndarray, cfg: CropConfig) -> np.ndarray:
    """Smoothed target window (cx, cy, side) per track sample, float [T, 3] (source pixels); gaps
    interpolated. Raises ValueError when no sample has a face."""
    ok = ~np.isnan(boxes[:, 0])
    if not ok.any():
        raise ValueError("no face found while tracking")
    filled = np.stack([np.interp(times, times[ok], boxes[ok, j]) for j in range(3)], axis=1)
    target = np.stack([filled[:, 0], filled[:, 1] + cfg.center_y_shift * filled[:, 2],
                       cfg.margin * filled[:, 2]], axis=1)
    return _smooth(target, int(round(cfg.smoothing_s * TRACK_FPS)))


def choose_span(times: np.ndarray, boxes: np.ndarray, static: np.ndarray,
                cfg: CropConfig) -> tuple[int, int] | None:
    """The stretch of the clip a static-camera model can explain (``mode: fixed``, ``span: longest``).

    Args:
        times: float [T] track sample times (s); boxes: float [T, 3] face track as
            :func:`track_faces` (NaN where no face was found).
        static: bool [T-1], the camera did not move between samples k and k+1
            (:meth:`pipeline.preprocess.camera.CameraMotion.static_steps`).
    Returns:
        None when the whole clip is fine (a static camera throughout and one window within
        ``fixed_max_scale`` holds the head), or when no stretch of at least ``min_span_s`` qualifies
        (the caller keeps the whole clip); else ``(i, j)``: track samples i .. j-1, the longest run
        joined by static steps whose union of target windows is at most ``fixed_max_scale`` x the
        median target side of its static run (the earliest such stretch on ties).
    Raises:
        ValueError: no face anywhere in the track.
    """
    tgt = _targets(times, boxes, cfg)
    lo, hi = tgt[:, :2] - tgt[:, 2:] / 2, tgt[:, :2] + tgt[:, 2:] / 2

    def fits(i: int, j: int, med: float) -> np.ndarray:
        """bool [j - i]: samples i .. i+m (m = 0 .. j-i-1) are held by one window."""
        u = (np.maximum.accumulate(hi[i:j], axis=0) - np.minimum.accumulate(lo[i:j], axis=0)).max(axis=1)
        return u <= cfg.fixed_max_scale * med

    T = len(tgt)
    if cfg.mode != "fixed" or cfg.span != "longest" or T < 2:
        return None
    if static.all() and fits(0, T, float(np.median(tgt[:, 2])))[-1]:
        return None
    best = (0, 0)
    for a, b in static_runs(static):
        med = float(np.median(tgt[a:b, 2]))
        for i in range(a, b):
            if b - i <= best[1] - best[0]:
                break
            f = fits(i, b, med)
            j = i + (int(np.argmin(f)) if not f.all() else len(f))
            if j - i > best[1] - best[0]:
                best = (i, j)
    i, j = best
    if j - i < 2 or times[j - 1] - times[i] < cfg.min_span_s:
        return None
    return i, j


def plan_windows(times: np.ndarray, boxes: np.ndarray, n_frames: int, width: int, height: int,
                 cfg: CropConfig) -> tuple[np.ndarray, bool]:
    """Per-output-frame crop windows from a face track.

    Args:
        times: float [T] track sample times (s); boxes: float [T, 3] (cx, cy, face side) in
            source pixels, NaN where no face was found (interpolated here).
        n_frames: number of output frames (frame k at time k / cfg.fps).
        width, height: source frame size (pixels).
    Returns:
        ``windows`` float [n_frames, 3] = (x, y, side) in source pixels (top-left corner, square
        side), and ``fixed`` (True when every frame has the same window).
    Raises:
        ValueError: no face anywhere in the track (callers raise InputError with the path).
    """
    target = _targets(times, boxes, cfg)
    t_out = np.arange(n_frames) / cfg.fps
    tgt = np.stack([np.interp(t_out, times, target[:, j]) for j in range(3)], axis=1)

    db = cfg.deadband
    med = np.median(tgt, axis=0)
    if cfg.mode not in ("fixed", "follow"):
        raise ValueError(f"crop mode {cfg.mode!r}: expected 'fixed' or 'follow'")

    def inside(w: np.ndarray, t: np.ndarray, tol: float) -> np.ndarray:
        return ((np.abs(t[..., 0] - w[0]) <= tol * w[2]) & (np.abs(t[..., 1] - w[1]) <= tol * w[2])
                & (np.abs(np.log(t[..., 2] / w[2])) <= math.log1p(tol)))

    lo = (tgt[:, :2] - tgt[:, 2:] / 2).min(axis=0)
    hi = (tgt[:, :2] + tgt[:, 2:] / 2).max(axis=0)
    union = float((hi - lo).max())
    if cfg.mode == "fixed" and union <= cfg.fixed_max_scale * float(med[2]):
        win = np.repeat(np.array([*(lo + hi) / 2, union])[None], n_frames, axis=0)
    elif inside(med, tgt, db).all():
        win = np.repeat(med[None], n_frames, axis=0)
    else:
        # critically damped spring towards the target while gliding: the speed ramps up and down
        # smoothly (no jerk when the window starts or stops moving)
        omega, dt = 1.0 / GLIDE_S, 1.0 / cfg.fps
        win = np.empty_like(tgt)
        # start from the median of the first second (not a single, possibly noisy, frame)
        w = np.median(tgt[: max(1, int(cfg.fps))], axis=0)
        v = np.zeros(3)
        moving = False
        for k in range(n_frames):
            if not moving and not inside(w, tgt[k], db):
                moving = True
            if moving:
                v = v + dt * (omega ** 2 * (tgt[k] - w) - 2.0 * omega * v)
                w = w + dt * v
                if inside(w, tgt[k], 0.01) and np.abs(v * dt).max() < 0.002 * w[2]:
                    moving, v = False, np.zeros(3)
            win[k] = w
    # clamp inside the frame (no padding)
    side = np.minimum(win[:, 2], min(width, height))
    x = np.clip(win[:, 0] - side / 2, 0, width - side)
    y = np.clip(win[:, 1] - side / 2, 0, height - side)
    windows = np.stack([x, y, side], axis=1)
    fixed = bool(n_frames > 0 and np.ptp(windows, axis=0).max() == 0.0)
    return windows, fixed


def warp_crop(frame: np.ndarray, win: np.ndarray, size: int, offset: tuple[int, int] = (0, 0)) -> np.ndarray:
    """Cut the square window (x, y, side) (source pixels; ``offset`` = where ``frame`` starts in the
    source) and scale it to ``size`` x ``size`` with a sub-pixel affine warp (bicubic when
    enlarging, bilinear when shrinking, halving the frame first while the scale is below 1/2,
    against aliasing). Returns uint8 RGB [size, size, 3]."""
    import cv2

    x, y, side = float(win[0]) - offset[0], float(win[1]) - offset[1], float(win[2])
    while size / side < 0.5 and min(frame.shape[:2]) > 2:
        frame = cv2.pyrDown(frame)
        x, y, side = x / 2, y / 2, side / 2
    s = size / side
    m = np.array([[s, 0, -x * s], [0, s, -y * s]], dtype=np.float64)
    flags = cv2.INTER_CUBIC if s > 1.0 else cv2.INTER_LINEAR
    return cv2.warpAffine(frame, m, (size, size), flags=flags, borderMode=cv2.BORDER_REPLICATE)


def crop_video(video: str | Path, out_video: str | Path, out_audio: str | Path, cfg: CropConfig) -> dict:
    """Run the crop/resample stage (see module docstring). Returns the crop.json report.

    Raises:
        InputError: unreadable video, no audio, no face found while tracking.
    """
    log = setup_logging("crop")
    info = probe_talking_video(video)
    W, H = info.width, info.height
    duration = info.video_duration or info.duration
    times, boxes, raw, motion = track_faces(video, W, H)
    if len(times) == 0:
        raise InputError(video, "unreadable or corrupt video (no frame decoded)")
    detected = float(np.mean(~np.isnan(boxes[:, 0])))
    n_est = int(math.ceil(duration * cfg.fps)) + 2
    static = (motion.static_steps(cfg.camera_max_step_px) if cfg.camera_max_step_px > 0
              else np.ones(max(0, len(times) - 1), dtype=bool))
    try:
        span = choose_span(times, boxes, static, cfg)
        k0, n_span = 0, None
        if span is not None:
            i, j = span
            k0 = int(math.ceil(times[i] * cfg.fps - 1e-9))
            n_span = int(math.floor(times[j - 1] * cfg.fps + 1e-9)) + 1 - k0
            sub = plan_windows(times[i:j] - k0 / cfg.fps, boxes[i:j], n_span, W, H, cfg)
            if not sub[1]:  # the stretch needs a moving window after all: keep the whole clip
                span, k0, n_span = None, 0, None
        if span is None:
            # a camera that moves with no static stretch to keep: the window follows the head (one
            # window over a zoom or pan lost 3.9 dB on the broadcast, docs/quality.md row 1)
            moving = cfg.mode == "fixed" and not static.all()
            windows, fixed = plan_windows(times, boxes, n_est, W, H,
                                          replace(cfg, mode="follow") if moving else cfg)
            if moving:
                log.warning("%s: the camera moves (%d of %d steps of the %g fps track above %g px) and no "
                            "static-camera stretch of %g s or more holds the head in one window: keeping every "
                            "frame; the NeRFs assume a static camera, so expect a blurred background and torso",
                            video, int((~static).sum()), len(static), TRACK_FPS, cfg.camera_max_step_px,
                            cfg.min_span_s)
        else:
            windows, fixed = sub
            n_est = n_span
            log.warning("%s: the camera moves or one window cannot hold the head over the whole clip; "
                        "keeping the longest static-camera stretch %.2f-%.2f s (%d frames of about %d; "
                        "preprocess.crop.span: whole keeps every frame)", video, k0 / cfg.fps,
                        (k0 + n_span) / cfg.fps, n_span, int(math.ceil(duration * cfg.fps)))
    except ValueError as exc:
        raise InputError(video, str(exc)) from None
    # decode only the union of all windows (less data through the pipe)
    x0 = int(max(0, math.floor(windows[:, 0].min()) - 1))
    y0 = int(max(0, math.floor(windows[:, 1].min()) - 1))
    x1 = int(min(W, math.ceil((windows[:, 0] + windows[:, 2]).max()) + 1))
    y1 = int(min(H, math.ceil((windows[:, 1] + windows[:, 2]).max()) + 1))
    x0, y0 = x0 - x0 % 2, y0 - y0 % 2
    cw, ch = (x1 - x0) // 2 * 2, (y1 - y0) // 2 * 2
    n = 0
    with atomic_path(out_video) as tmp_video:
        with VideoWriter(tmp_video, (cfg.size, cfg.size), cfg.fps) as writer:
            frames = iter_frames(video, fps=cfg.fps, width=W, height=H, crop=(x0, y0, cw, ch))
            for k, frame in enumerate(tqdm(frames, desc="crop", unit="frame", mininterval=5,
                                           total=k0 + n_span if n_span else n_est - 2)):
                if k < k0:
                    continue
                if n_span is not None and n >= n_span:
                    break
                if n >= len(windows):  # the fps filter gave more frames than the estimate
                    windows = np.concatenate([windows, windows[-1:]], axis=0)
                writer.write(warp_crop(frame, windows[n], cfg.size, (x0, y0)))
                n += 1
        if n == 0:
            raise InputError(video, "unreadable or corrupt video (no frame decoded)")
        windows = windows[:n]
        fixed = bool(np.ptp(windows, axis=0).max() == 0.0)
        # audio: 16 kHz mono, aligned to the video start, exactly n / fps seconds
        audio = load_audio(video, AUDIO_SR)
        offset = int(round(((info.audio_start or 0.0) - (info.video_start or 0.0)) * AUDIO_SR))
        audio = np.concatenate([np.zeros(offset, np.float32), audio]) if offset > 0 else audio[-offset:]
        audio = audio[int(round(k0 * AUDIO_SR / cfg.fps)):]  # the kept stretch starts at frame k0
        n_samples = int(round(n * AUDIO_SR / cfg.fps))
        pad = max(0, n_samples - len(audio))
        audio = np.concatenate([audio, np.zeros(pad, np.float32)])[:n_samples]
        with atomic_path(out_audio) as tmp_audio:
            write_wav(tmp_audio, audio, AUDIO_SR)
    steps = np.abs(np.diff(windows, axis=0)) if n > 1 else np.zeros((1, 3))
    report = {
        "video": str(video),
        "n_frames": n,
        "fps": cfg.fps,
        "size": cfg.size,
        "fixed": fixed,
        "boundary": "clamp",
        "span": {"start_frame": k0, "start_s": k0 / cfg.fps, "end_s": (k0 + n) / cfg.fps,
                 "source_frames": int(math.ceil(duration * cfg.fps)), "trimmed": span is not None},
        "camera": motion.report(cfg.camera_max_step_px),
        "windows": np.round(windows, 3).tolist(),
        "window_format": "[x, y, side] in source pixels (top-left corner, square side)",
        "jitter": {"max_step_px": float(steps.max()), "max_step_rel": float((steps / windows[1:, 2:3]).max())
                   if n > 1 else 0.0},
        "source": {"width": W, "height": H, "avg_fps": info.avg_fps, "r_fps": info.r_fps,
                   "variable_frame_rate": info.variable_frame_rate, "duration": duration,
                   "nb_frames": info.nb_frames, "audio_sample_rate": info.sample_rate,
                   "audio_channels": info.channels},
        "audio": {"sample_rate": AUDIO_SR, "samples": n_samples, "duration": n_samples / AUDIO_SR,
                  "source_offset_samples": offset, "padded_samples": pad},
        "track": {"fps": TRACK_FPS, "detected_fraction": round(detected, 4), "boxes": raw},
        "config": {f.name: getattr(cfg, f.name) for f in fields(cfg)},
    }
    log.info("%s: %d frames at %g fps, %s window (max step %.2f px), faces in %.0f%% of track samples",
             video, n, cfg.fps, "fixed" if fixed else "moving", report["jitter"]["max_step_px"], 100 * detected)
    return report


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--video", required=True, help="raw input video")
    ap.add_argument("--probe", help="probe.json of the probe stage (recorded; the probe must have passed)")
    ap.add_argument("--out-video", required=True)
    ap.add_argument("--out-audio", required=True)
    ap.add_argument("--out-track", required=True, help="crop.json to write")
    ap.add_argument("--cfg", default="{}", help="JSON of config preprocess.crop")
    args = ap.parse_args(argv)
    cfg = CropConfig.from_dict(parse_cfg_arg(args.cfg))
    report = crop_video(args.video, args.out_video, args.out_audio, cfg)
    report["probe"] = args.probe
    atomic_write_json(args.out_track, report)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
