"""The test protocols: which poses, per-frame conditions (eye values, ... as the model declares,
:mod:`pipeline.models.conditions`), audio features and driving audio each frame of a
self-driven or cross-driven render uses.

Self-driven (the papers' test set): the validation split ``transforms_val.json`` (last 1/11 of
the frames) with its own poses, AU45_r and audio features; the driving audio is the matching
segment of ``aud.wav``; the ground truth is ``gt_imgs/{img_id}.jpg``.

Cross-driven: a foreign audio file (any format ffmpeg reads, any rate, converted to 16 kHz mono),
the model's audio features extracted from it, poses and per-frame conditions (AU45_r, ...) of the
training split (``transforms_train.json``) played forward and backward when the audio is longer.
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.common.errors import InputError
from pipeline.common.io import read_json
from pipeline.common.layout import DatasetLayout
from pipeline.render.contract import AUDIO_SR, FPS, sha256_file
from pipeline.render.controls import ping_pong

log = logging.getLogger(__name__)

#: audio samples (16 kHz) per video frame (25 fps)
SAMPLES_PER_FRAME = AUDIO_SR // FPS


@dataclass
class Sequence:
    """Everything a render loop needs, one entry per output frame.

    Attributes:
        protocol: ``self_driven`` or ``cross_driven``.
        poses: [N, 4, 4] float32 camera-to-world matrices (transforms_*.json convention).
        conditions: {name: [N, *shape] float32} raw values of the model's per-frame conditions
            other than audio, from their dataset artefacts (``eye``: [N, 1] AU45_r).
        features: [M, ...] float32 audio features (one row per audio frame).
        feature_index: [N] int row of ``features`` each frame is centred on.
        frame_ids: [N] int dataset frame (``img_id``) each pose comes from (GT frame for
            self-driven, background frame for ``head_on_gt`` / ``paste_back``).
        audio_16k: [T] float32 16 kHz mono driving audio (T = N * 640 for self-driven).
        audio_path: the driving audio file.
        audio_sha256: its sha256.
        gt_reference: self-driven: ``{"dir": gt_imgs, "indices": frame_ids}``; else None.
    """

    protocol: str
    poses: np.ndarray
    conditions: dict[str, np.ndarray]
    features: np.ndarray
    feature_index: np.ndarray
    frame_ids: np.ndarray
    audio_16k: np.ndarray
    audio_path: str
    audio_sha256: str
    gt_reference: dict[str, Any] | None = field(default=None)

    def __len__(self) -> int:
        return len(self.poses)

    def head(self, k: int) -> "Sequence":
        """The first ``k`` frames (same audio)."""
        return dataclasses.replace(self, poses=self.poses[:k], feature_index=self.feature_index[:k],
                                   frame_ids=self.frame_ids[:k],
                                   conditions={n: v[:k] for n, v in self.conditions.items()})


def frame_conditions(data: DatasetLayout, frame_ids: np.ndarray, conditions: tuple[str, ...],
                     method: str) -> dict[str, np.ndarray]:
    """Raw per-frame values [N, *shape] of every condition but ``audio`` for dataset frames
    ``frame_ids``, read from the conditions' artefacts (conditioning contract).

    Raises:
        InputError: a missing artefact (naming the file and ``method``) or too few rows.
    """
    from pipeline.models.conditions import get_condition

    n = int(np.max(frame_ids)) + 1
    return {c: get_condition(c).read(data.root, n, method)[frame_ids] for c in conditions if c != "audio"}


def read_transforms(path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read an ER-NeRF ``transforms_*.json``.

    Returns:
        poses [N, 4, 4] float32, img_ids [N] int, aud_ids [N] int (aud_id defaults to img_id).
    Raises:
        InputError: no frames or a malformed transform_matrix.
    """
    data = read_json(path)
    frames = data.get("frames") or []
    if not frames:
        raise InputError(path, "no frames")
    try:
        poses = np.array([f["transform_matrix"] for f in frames], dtype=np.float32).reshape(-1, 4, 4)
        img = np.array([int(f["img_id"]) for f in frames])
        aud = np.array([int(f.get("aud_id", f["img_id"])) for f in frames])
    except (KeyError, ValueError, TypeError) as exc:
        raise InputError(path, f"malformed frame entry ({exc})") from None
    return poses, img, aud


def self_driven(data: DatasetLayout, feature: str, conditions: tuple[str, ...] = ("audio", "eye"),
                method: str = "this method") -> Sequence:
    """The self-driven sequence of a dataset (validation split, its own audio); ``conditions``
    the model's per-frame conditions (``TrainedTalkingHead.conditions``)."""
    from pipeline.preprocess.audio_features import load_audio_16k_mono

    poses, img, aud = read_transforms(data.transforms_val)
    feats = np.load(data.audio_feature(feature)).astype(np.float32)
    conds = frame_conditions(data, img, conditions, method)
    if aud.max() >= len(feats):
        raise InputError(data.audio_feature(feature), f"{len(feats)} rows, aud_id {int(aud.max())} requested")
    audio = load_audio_16k_mono(data.audio)
    start = int(img[0]) * SAMPLES_PER_FRAME
    if np.any(np.diff(img) != 1):
        # several validation runs (one per emotion segment): the audio of each frame, in order
        segment = np.concatenate([audio[int(i) * SAMPLES_PER_FRAME:(int(i) + 1) * SAMPLES_PER_FRAME] for i in img])
    else:
        segment = audio[start:start + len(img) * SAMPLES_PER_FRAME]
    return Sequence(
        protocol="self_driven", poses=poses, conditions=conds, features=feats, feature_index=aud,
        frame_ids=img, audio_16k=segment, audio_path=str(data.audio),
        audio_sha256=sha256_file(data.audio),
        gt_reference={"dir": str(data.gt_imgs), "ori_dir": str(data.ori_imgs),
                      "indices": [int(i) for i in img], "audio_start_s": start / AUDIO_SR},
    )


def cross_driven(data: DatasetLayout, audio_path: str | Path, feature: str,
                 audio_cfg: dict[str, Any], conditions: tuple[str, ...] = ("audio", "eye"),
                 method: str = "this method") -> Sequence:
    """The cross-driven sequence for a driving audio file.

    Args:
        audio_path: any audio ffmpeg reads (wav, flac, mp3, ...; any rate and channel count).
        feature: the model's audio feature name (model meta ``audio_feature``).
        audio_cfg: config ``preprocess.audio`` (feature extractor settings).
        conditions: the model's per-frame conditions; values of the training frames whose
            poses are used.
    """
    from pipeline.preprocess.audio_features import extract_features, load_audio_16k_mono, n_frames_for

    audio_path = Path(audio_path)
    if not audio_path.is_file():
        raise InputError(audio_path, "driving audio not found")
    audio = load_audio_16k_mono(audio_path)
    n = n_frames_for(audio, fps=FPS)
    if n < 1:
        raise InputError(audio_path, "driving audio is shorter than one video frame")
    feats = np.asarray(extract_features(audio, n, feature, audio_cfg, fps=FPS), dtype=np.float32)
    poses_t, img_t, _ = read_transforms(data.transforms_train)
    order = np.array([ping_pong(i, len(poses_t)) for i in range(n)])
    return Sequence(
        protocol="cross_driven", poses=poses_t[order],
        conditions=frame_conditions(data, img_t[order], conditions, method),
        features=feats, feature_index=np.arange(n), frame_ids=img_t[order], audio_16k=audio,
        audio_path=str(audio_path), audio_sha256=sha256_file(audio_path), gt_reference=None,
    )
