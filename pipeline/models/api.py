"""The interface between trained talking-head NeRFs and the renderer (pipeline.render).

Every method registered in :mod:`pipeline.models` returns a :class:`TrainedTalkingHead` from
:func:`load_trained`; the renderer only uses this interface.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch


@dataclass
class FrameInput:
    """What one output frame is rendered from.

    Attributes:
        c2w: [4, 4] float32 camera-to-world matrix in the convention of ``transforms_*.json``
            (``frames[].transform_matrix``).
        audio: [W, ...] float32 window of per-frame audio features centred on this frame
            (W = the model's attention window, built by :meth:`TrainedTalkingHead.audio_window`).
        eye: eye-closure value in the units of the training data (AU45_r intensity, 0..5).
        background: [H, W, 3] float32 in [0, 1], the image composited behind head and torso.
    """

    c2w: torch.Tensor
    audio: torch.Tensor
    eye: float
    background: torch.Tensor


class TrainedTalkingHead(abc.ABC):
    """A trained per-identity model, ready to render frames.

    Attributes:
        method: registered method name (``rad_nerf``, ``er_nerf``, ...).
        meta: training metadata: ``H``, ``W`` (render resolution, pixels), ``focal``, ``cx``,
            ``cy`` (pixels at that resolution), ``audio_feature`` (dataset feature name, e.g.
            ``mel``), ``audio_window`` (W), ``device``, ``profile``.
    """

    method: str
    meta: dict[str, Any]

    @abc.abstractmethod
    def audio_window(self, features: torch.Tensor, index: int) -> torch.Tensor:
        """Window of ``features`` ([N, ...], one row per video frame) centred on ``index``, with
        edge frames repeated at the ends. Returns [W, ...]."""

    @abc.abstractmethod
    @torch.no_grad()
    def render(self, frame: FrameInput, torso: bool = True) -> dict[str, torch.Tensor]:
        """Render one frame at ``meta['H'] x meta['W']``.

        Returns:
            ``rgb`` [H, W, 3] in [0, 1] (head + torso + background when ``torso``, else head over
            background), ``head_alpha`` [H, W] and ``torso_alpha`` [H, W] in [0, 1] (zeros when
            ``torso`` is False), ``head_rgb`` [H, W, 3] (head colour before compositing).
        """


def load_trained(model_dir: str | Path, device: str | torch.device = "cpu") -> TrainedTalkingHead:
    """Load the final checkpoint of a trained model from ``results/models/{method}/{identity}``.

    Implemented by the method registry (pipeline.models.registry); this indirection keeps the
    renderer independent of the methods.

    Raises:
        InputError: no checkpoint, or a checkpoint of an unknown method.
    """
    from pipeline.models.registry import load_trained as _load

    return _load(model_dir, device)
