"""Driving inputs of the one-shot path: a render-contract folder (any method's render, by default
the cross-driven ``er_nerf`` renders) or any talking video with an audio track."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.common.errors import InputError


@dataclass
class Driving:
    """A driving clip at 25 fps.

    Attributes:
        frames: uint8 RGB [N, H, W, 3].
        audio_16k: float32 [S] mono 16 kHz driving audio (muxed into the outputs).
        record: what the manifest records: ``path``, ``kind`` (``render`` | ``video``), ``sha256``
            of the video file, ``audio`` (the driving audio's ``path`` and ``sha256``: for a render
            the audio that drove it), and for renders ``method``, ``identity``, ``test``, ``fps_render``.
    """

    frames: np.ndarray
    audio_16k: np.ndarray
    record: dict


def load_driving(path: str | Path, fps: float = 25.0) -> Driving:
    """Read a driving render folder (``frames/{i}.png`` + ``video.mp4`` + ``manifest.json``) or a
    video file (resampled to ``fps`` by ffmpeg; its audio decoded to 16 kHz mono).

    Raises:
        InputError: a missing path, a folder that breaks the render contract, a video without
            a video or audio stream, or fewer than 2 frames.
    """
    import cv2

    from pipeline.common.io import read_json
    from pipeline.preprocess.audio_features import load_audio_16k_mono
    from pipeline.preprocess.media import iter_frames, probe_talking_video
    from pipeline.render.contract import sha256_file

    path = Path(path)
    if path.is_dir():
        man = read_json(path / "manifest.json")
        n = int(man.get("n_frames") or 0)
        frames = []
        for i in range(n):
            img = cv2.imread(str(path / "frames" / f"{i}.png"), cv2.IMREAD_COLOR)
            if img is None:
                raise InputError(path / "frames" / f"{i}.png", "driving frame missing or unreadable")
            frames.append(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))
        video = path / "video.mp4"
        audio = load_audio_16k_mono(video)
        record = {"path": str(path), "kind": "render", "sha256": sha256_file(video),
                  **{k: man.get(k) for k in ("method", "identity", "test", "protocol", "fps_render", "device")},
                  "audio": man.get("driving_audio") or {"path": str(video), "sha256": sha256_file(video)}}
    elif path.is_file():
        info = probe_talking_video(path)
        frames = list(iter_frames(path, fps=fps, width=info.width, height=info.height))
        audio = load_audio_16k_mono(path)
        sha = sha256_file(path)
        record = {"path": str(path), "kind": "video", "sha256": sha, "fps_render": None,
                  "audio": {"path": str(path), "sha256": sha}}
    else:
        raise InputError(path, "driving render folder or video not found")
    if len(frames) < 2:
        raise InputError(path, f"driving clip has {len(frames)} frame(s); at least 2 are needed")
    return Driving(np.stack(frames), audio, record)
