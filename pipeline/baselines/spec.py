"""What a test asks of a baseline: frame count, driving audio, ground-truth reference.

The self-driven test ("self") is the validation split of ``transforms_val.json`` with the
matching segment of the identity's ``aud.wav``; a cross-driven test is a driving audio file, its
length fixing the frame count (25 fps). Same conventions as :mod:`pipeline.render.protocol`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.common.errors import InputError
from pipeline.common.layout import SELF_DRIVEN_TEST, DatasetLayout
from pipeline.preprocess.media import load_audio
from pipeline.render.contract import AUDIO_SR, FPS, sha256_file
from pipeline.render.protocol import SAMPLES_PER_FRAME, read_transforms


@dataclass
class TestSpec:
    """One test of one identity, as a baseline must render it.

    Attributes:
        test: ``self`` or the cross-driven key.
        protocol: ``self_driven`` or ``cross_driven``.
        n_frames: output frames (25 fps).
        audio_16k: [n_frames * 640] float32 16 kHz mono driving audio in [-1, 1] (self-driven:
            the validation segment of aud.wav; cross-driven: the whole driving file, its
            last partial frame dropped).
        audio_path: the driving audio file.
        gt_reference: self-driven ``{"dir", "indices", "audio_start_s"}``; cross-driven None.
    """

    test: str
    protocol: str
    n_frames: int
    audio_16k: np.ndarray
    audio_path: str
    gt_reference: dict[str, Any] | None

    def driving_audio(self) -> dict[str, str]:
        """Manifest ``driving_audio`` field: ``{"path", "sha256"}``."""
        return {"path": self.audio_path, "sha256": sha256_file(self.audio_path)}


def spec_for(data: DatasetLayout, test: str, audio: str | Path | None = None) -> TestSpec:
    """The :class:`TestSpec` of ``test`` for the dataset ``data``.

    Args:
        data: the identity's dataset (needs transforms_val.json, gt_imgs/ and aud.wav for "self").
        test: ``self`` or a cross-driven test name.
        audio: the driving audio of a cross-driven test (config ``render.cross_driven[test]``).
    Raises:
        InputError: missing dataset files, a cross-driven test without audio, an audio file
            shorter than one frame.
    """
    if test == SELF_DRIVEN_TEST:
        _, img, _ = read_transforms(data.transforms_val)
        full = load_audio(data.audio, AUDIO_SR)
        start = int(img[0]) * SAMPLES_PER_FRAME
        seg = full[start:start + len(img) * SAMPLES_PER_FRAME]
        seg = np.concatenate([seg, np.zeros(len(img) * SAMPLES_PER_FRAME - len(seg), np.float32)])
        return TestSpec(test, "self_driven", len(img), seg, str(data.audio),
                        {"dir": str(data.gt_imgs), "indices": [int(i) for i in img],
                         "audio_start_s": start / AUDIO_SR})
    if audio is None:
        raise InputError(test, "cross-driven test needs its driving audio (config render.cross_driven)")
    wav = load_audio(audio, AUDIO_SR)
    n = int(math.floor(len(wav) / SAMPLES_PER_FRAME))
    if n < 1:
        raise InputError(audio, "driving audio is shorter than one video frame")
    return TestSpec(test, "cross_driven", n, wav[:n * SAMPLES_PER_FRAME], str(audio), None)


def first_training_frame(data: DatasetLayout, source: str = "gt") -> tuple[Path, np.ndarray]:
    """The first frame of the training split as RGB uint8 [H, W, 3].

    Args:
        source: ``gt`` (``gt_imgs/``, background replaced, what the NeRFs are trained on) or
            ``ori`` (``ori_imgs/``, the cropped video frame).
    Raises:
        InputError: missing transforms_train.json or image.
    """
    import cv2

    _, img, _ = read_transforms(data.transforms_train)
    path = data.gt_img(int(img[0])) if source == "gt" else data.img(int(img[0]))
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise InputError(path, "first training frame missing or unreadable")
    return path, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


__all__ = ["FPS", "TestSpec", "spec_for", "first_training_frame"]
