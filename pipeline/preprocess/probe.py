"""Probe stage: check that a raw video can become a dataset, before anything expensive runs.

``python -m pipeline.preprocess.probe --video RAW --out results/data/{id}/probe.json --cfg JSON``

Refuses (one-line :class:`InputError` naming the file) a video that is unreadable or corrupt, has
no video or no audio stream, is shorter than ``min_duration_s``, whose audio and video streams
differ in duration by more than ``max_av_diff_s`` (warns above one video frame), shows no face in
at least half of the ``sample_frames`` frames sampled evenly over the clip, or (``single_face``)
shows more than one person's face. Variable frame rate is accepted (the crop stage resamples to a
constant rate).
"""
from __future__ import annotations

import argparse
import logging
import math
import sys
from dataclasses import dataclass
from pathlib import Path

from pipeline.common.config import StageConfig, parse_cfg_arg
from pipeline.common.errors import InputError
from pipeline.common.io import atomic_write_json
from pipeline.common.log import run_main, setup_logging
from pipeline.preprocess.faces import FaceDetector, count_people
from pipeline.preprocess.media import probe_talking_video, read_frames_at


@dataclass
class ProbeConfig(StageConfig):
    """Config ``preprocess.probe``."""

    min_duration_s: float = 4.0
    """Refuse videos whose video stream is shorter than this (seconds)."""
    sample_frames: int = 8
    """Number of frames sampled evenly over the clip for the face checks."""
    single_face: bool = True
    """Refuse a video where more than one person's face is visible."""
    max_av_diff_s: float = 1.0
    """Refuse a video whose audio and video streams differ in duration by more than this (s)."""


def sample_times(duration: float, n: int) -> list[float]:
    """``n`` times (s) evenly spread over ``[0, duration)``: the centres of ``n`` equal slices."""
    return [(i + 0.5) * duration / n for i in range(n)]


def check_av_durations(video: str | Path, video_s: float, audio_s: float, fps: float,
                       max_diff_s: float) -> dict:
    """Compare the durations of the audio and the video stream.

    The crop stage makes the dataset's audio exactly as long as its video (it pads silence or cuts
    the rest), so a large difference means a mismatched file (for example a soundtrack from another
    take) that would otherwise be cut or padded without notice.

    Args:
        video: the file (for messages).
        video_s, audio_s: stream durations in seconds (ffprobe).
        fps: video frame rate (frames/s); one frame is the tolerance for a warning.
        max_diff_s: refusal limit in seconds (config ``preprocess.probe.max_av_diff_s``).
    Returns:
        ``{"video_s", "audio_s", "difference_s" (audio - video), "status"}`` with status ``"ok"``
        (within one frame) or ``"warned"`` (more than one frame, at most ``max_diff_s``).
    Raises:
        InputError: ``|audio_s - video_s| > max_diff_s``; the message gives both durations.
    """
    diff = float(audio_s) - float(video_s)
    longer = "audio" if diff > 0 else "video"
    if abs(diff) > max_diff_s:
        raise InputError(video, f"audio stream {audio_s:.2f} s and video stream {video_s:.2f} s differ by "
                                f"{abs(diff):.2f} s, more than preprocess.probe.max_av_diff_s={max_diff_s:g} s")
    status = "ok"
    if fps and abs(diff) > 1.0 / fps:
        status = "warned"
        logging.getLogger("probe").warning(
            "%s: audio stream %.2f s and video stream %.2f s differ by %.2f s (more than one frame): the %s "
            "is longer; the dataset's audio is %s to the video's length", video, audio_s, video_s, abs(diff),
            longer, "cut" if diff > 0 else "padded with silence")
    return {"video_s": round(float(video_s), 4), "audio_s": round(float(audio_s), 4),
            "difference_s": round(diff, 4), "status": status}


def probe_video(video: str | Path, cfg: ProbeConfig) -> dict:
    """Run every check on ``video`` and return the probe report (written as probe.json).

    Returns:
        dict with ``video``, ``format``, ``duration`` (s), ``streams`` (ffprobe subset), ``fps``
        (``avg``, ``r``, ``variable``), ``resolution`` [W, H], ``audio`` (codec, sample_rate,
        channels), ``av_durations`` (:func:`check_av_durations`), ``faces``: one entry per sampled frame ``{"t": s, "boxes": [[x, y, w, h, score]]}``
        (source pixels), and ``face_box_median`` [x, y, w, h] of the largest face.
    Raises:
        InputError: unreadable/corrupt file, no video stream, no audio stream, too short, audio and
            video durations too different, no face, more than one face (see module docstring).
    """
    log = setup_logging("probe")
    info = probe_talking_video(video)
    duration = info.video_duration or info.duration
    if not duration or duration <= 0 or not info.avg_fps:
        raise InputError(video, "unreadable or corrupt video (no duration or frame rate)")
    if duration < cfg.min_duration_s:
        raise InputError(video, f"too short: {duration:.2f} s < min_duration_s {cfg.min_duration_s:g} s")
    av = check_av_durations(video, duration, info.audio_duration or 0.0, info.avg_fps, cfg.max_av_diff_s)
    times = sample_times(duration, cfg.sample_frames)
    frames = read_frames_at(video, times, max_side=1280, rotation=info.rotation)
    scale = info.width / frames[0].shape[1]
    per_frame = []
    with FaceDetector() as det:
        for t, img in zip(times, frames):
            faces = [f.scaled(scale) for f in det.detect(img)]
            per_frame.append({"t": round(t, 3), "boxes": [f.to_list() for f in faces],
                              "people": count_people(faces)})
    n = len(per_frame)
    missing = [p["t"] for p in per_frame if not p["boxes"]]
    if len(missing) == n:
        raise InputError(video, f"no face found in any of the {n} sampled frames")
    if len(missing) * 2 > n:
        raise InputError(video, f"no face found in {len(missing)} of the {n} sampled frames "
                                f"(at {', '.join(f'{t:.1f}' for t in missing[:4])} s)")
    multi = [p for p in per_frame if p["people"] > 1]
    if cfg.single_face and len(multi) >= max(1, math.ceil(n / 4)):
        k = max(p["people"] for p in multi)
        raise InputError(video, f"more than one face ({k} faces in {len(multi)} of the {n} sampled frames)"
                                " and single_face is true")
    import numpy as np

    big = np.array([p["boxes"][0][:4] for p in per_frame if p["boxes"]])
    report = {
        "video": str(video),
        "format": info.format_name,
        "duration": round(duration, 4),
        "container_duration": round(info.duration, 4),
        "streams": info.streams,
        "fps": {"avg": info.avg_fps, "r": info.r_fps, "variable": info.variable_frame_rate},
        "resolution": [info.width, info.height],
        "rotation": info.rotation,
        "nb_frames": info.nb_frames,
        "video_start": info.video_start,
        "audio": {"codec": info.audio_codec, "sample_rate": info.sample_rate, "channels": info.channels,
                  "start": info.audio_start, "duration": info.audio_duration},
        "av_durations": av,
        "faces": per_frame,
        "face_box_median": np.median(big, axis=0).round(1).tolist(),
    }
    log.info("%s: %.2f s, %dx%d, %.3f fps%s, faces in %d/%d sampled frames", video, duration, info.width,
             info.height, info.avg_fps, " (variable)" if info.variable_frame_rate else "", n - len(missing), n)
    return report


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--video", required=True, help="raw input video")
    ap.add_argument("--out", required=True, help="probe.json to write")
    ap.add_argument("--cfg", default="{}", help="JSON of config preprocess.probe")
    args = ap.parse_args(argv)
    cfg = ProbeConfig.from_dict(parse_cfg_arg(args.cfg))
    report = probe_video(args.video, cfg)
    atomic_write_json(args.out, report)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
