"""The interface between trained talking-head NeRFs and the renderer (pipeline.render).

Every method registered in :mod:`pipeline.models.methods` is loaded as a
:class:`TrainedTalkingHead` by :func:`pipeline.models.registry.load_trained`; the renderer only
uses this interface. This module imports no other model module.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass, field
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
        background: [H, W, 3] float32 in [0, 1], the image composited behind head and torso.
        conditions: raw values of the model's other per-frame conditions
            (:attr:`TrainedTalkingHead.conditions`, :mod:`pipeline.models.conditions`), e.g.
            ``{"eye": [1] AU45_r intensity 0..5, "emotion": [8] one-hot code}``.
    """

    c2w: torch.Tensor
    audio: torch.Tensor
    background: torch.Tensor
    conditions: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def eye(self) -> float:
        """The eye-closure value (AU45_r intensity, 0..5) of ``conditions`` (0 when absent)."""
        e = self.conditions.get("eye")
        return 0.0 if e is None else float(torch.as_tensor(e).reshape(-1)[0])


class TrainedTalkingHead(abc.ABC):
    """A trained per-identity model, ready to render frames.

    Attributes:
        method: registered method name (``rad_nerf``, ``er_nerf``, ...).
        meta: training metadata: ``H``, ``W`` (render resolution, pixels), ``focal``, ``cx``,
            ``cy`` (pixels at that resolution), ``audio_feature`` (dataset feature name, e.g.
            ``mel``), ``audio_window`` (W), ``device``, ``profile``.
        conditions: names of the per-frame conditions the model renders from (``audio`` plus
            the keys it reads from :attr:`FrameInput.conditions`).
    """

    method: str
    meta: dict[str, Any]
    conditions: tuple[str, ...] = ("audio", "eye")

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

