"""External baseline: ingest a video produced by any other system into the render contract.

Config ``baselines.external`` lists ``{method, identity, test, video}`` entries; each becomes
``results/renders/{method}/{identity}/{test}/``:

- the video is re-encoded to 25 fps (ffmpeg ``fps`` filter: nearest frame, drops or repeats) and
  scaled to the identity's dataset frame size (the ground truth's size, so the image metrics apply);
- the frame count is aligned with the test: self-driven, the validation split length;
  cross-driven, the driving audio length at 25 fps. Extra frames are cut at the end; missing
  frames repeat the last one (both counts are recorded in the manifest and logged);
- the audio is taken from the video (``--audio-from video``, default, when it has an audio
  stream) or from the test (``--audio-from test``: the validation segment of aud.wav or the
  driving clip), trimmed / zero-padded to the video's duration.

Usage::

    python -m pipeline.baselines.external --video other/German_self.mp4 --method wav2lip \
        --identity German --test self --data results/data/German \
        --out results/renders/wav2lip/German/self
"""
from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from pipeline.baselines.spec import first_training_frame, spec_for
from pipeline.common.errors import InputError
from pipeline.common.layout import DatasetLayout
from pipeline.common.log import run_main, setup_logging
from pipeline.preprocess.media import iter_frames, load_audio, probe_media
from pipeline.render.contract import AUDIO_SR, FPS, sha256_file, write_contract

log = logging.getLogger(__name__)


def aligned_frames(frames: Iterator[np.ndarray], n: int, size: tuple[int, int], stats: dict) -> Iterator[np.ndarray]:
    """Exactly ``n`` RGB frames of ``size`` (W, H): the first ``n`` of ``frames`` (resized with
    area interpolation when needed), the last one repeated when ``frames`` runs short.

    ``stats`` receives ``source_frames`` (frames read, at most n + 1), ``padded`` and
    ``trimmed`` (True when the source had more than ``n``).
    Raises:
        InputError: (via ``frames``) undecodable video; ValueError when it has no frames.
    """
    last, count = None, 0
    stats.update(source_frames=0, padded=0, trimmed=False)
    for frame in frames:
        if count == n:
            stats["trimmed"] = True
            break
        if (frame.shape[1], frame.shape[0]) != size:
            frame = cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
        last, count = frame, count + 1
        stats["source_frames"] = count
        yield frame
    if last is None:
        raise ValueError("the video decodes to no frames")
    for _ in range(n - count):
        stats["padded"] += 1
        yield last


def ingest(video: str | Path, method: str, identity: str, test: str, data_dir: str | Path,
           out: str | Path, audio: str | Path | None = None, audio_from: str = "video") -> dict:
    """Write the render contract for one external video.

    Args:
        video: any video ffmpeg reads.
        method: the name the baseline gets in the tables.
        data_dir: ``results/data/{identity}`` (validation split, frame size, audio).
        audio: the driving audio of a cross-driven test.
        audio_from: ``video`` (its own audio track when it has one, else the test's) or ``test``.
    Returns:
        the manifest written.
    Raises:
        InputError: missing / unreadable video, no video stream, missing dataset files.
    """
    video = Path(video)
    info = probe_media(video)
    if not info.has_video:
        raise InputError(video, "no video stream")
    data = DatasetLayout(Path(data_dir), identity)
    spec = spec_for(data, test, audio)
    _, ref = first_training_frame(data)
    size = (ref.shape[1], ref.shape[0])
    if abs(info.width / info.height - size[0] / size[1]) > 0.01:
        log.warning("%s is %dx%d; scaled to the dataset's %dx%d (aspect changes)", video, info.width,
                    info.height, *size)
    if audio_from == "video" and info.has_audio:
        track, track_src = load_audio(video, AUDIO_SR), "video"
    else:
        track, track_src = spec.audio_16k, "test"
    stats: dict = {}
    frames = aligned_frames(iter_frames(video, fps=FPS, width=info.width, height=info.height),
                            spec.n_frames, size, stats)
    with tempfile.TemporaryDirectory(prefix="external") as tmp:
        for i, frame in enumerate(frames):
            cv2.imwrite(str(Path(tmp) / f"{i}.png"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        if stats["padded"] or stats["trimmed"]:
            log.warning("%s: %s frames at 25 fps for a %d-frame test (%s)", video,
                        "more" if stats["trimmed"] else stats["source_frames"], spec.n_frames,
                        f"last frame repeated {stats['padded']}x" if stats["padded"] else "extra frames cut")
        external = {"video": str(video), "sha256": sha256_file(video), "source_fps": info.avg_fps,
                    "source_size": [info.width, info.height], "audio_from": track_src,
                    "padded_frames": stats["padded"], "trimmed": stats["trimmed"]}
        fields = {
            "method": method, "identity": identity, "test": test, "protocol": spec.protocol,
            "driving_audio": spec.driving_audio(), "compositing": "full", "controls": {},
            "device": "external", "render_seconds": None, "fps_render": None,
            "gt_reference": spec.gt_reference, "external": external,
        }
        manifest = write_contract(out, Path(tmp), track, fields)
    return manifest


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--video", required=True)
    ap.add_argument("--method", required=True)
    ap.add_argument("--identity", required=True)
    ap.add_argument("--test", required=True, help="'self' or a cross-driven test name")
    ap.add_argument("--data", required=True, help="results/data/{identity}")
    ap.add_argument("--audio", default=None, help="driving audio of a cross-driven test")
    ap.add_argument("--audio-from", choices=("video", "test"), default="video")
    ap.add_argument("--out", required=True, help="results/renders/{method}/{identity}/{test}")
    args = ap.parse_args(argv)
    setup_logging("baselines.external")
    m = ingest(args.video, args.method, args.identity, args.test, args.data, args.out, args.audio,
               args.audio_from)
    log.info("%s/%s/%s: %d frames (%d repeated at the end)", args.method, args.identity, args.test,
             m["n_frames"], m["external"]["padded_frames"])
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
