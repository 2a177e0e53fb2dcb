"""AED-NeRF (Lu et al., ZTE Communications 2026, "Audio-Driven and Emotion-Editing Dynamic
NeRF"): RAD-NeRF's audio-spatial decomposition plus an emotion code e in R^8 (one-hot over 5
categories ++ one-hot over 3 intensity levels, :mod:`pipeline.common.emotion`) entering the head
field as a direct input beside the spatial and audio features (the paper's Eq. 1); RAD-NeRF's torso.
RAD-NeRF's per-frame individual code is off in AED-NeRF (it would absorb the expression); our
RAD-NeRF implementation has none, so nothing is switched off here.

Losses: photometric (head stage); + ``lambda_lpips`` x LPIPS on the lip patch (lips stage, shared
trainer); + ``lambda_entropy`` x alpha entropy of the rendered head rays (head and lips stages;
the shared trainer's :func:`pipeline.train.trainer.opacity_losses`, 1e-4 as RAD-NeRF's code, which
AED-NeRF builds on; the AED-NeRF paper's own value could not be checked in this build);
+ ``lambda_amb`` x L1 of the audio coordinate. Choices where the paper is silent are config fields
(see :class:`AEDNeRFConfig` and docs/training.md "AED-NeRF").
"""
from __future__ import annotations

from dataclasses import dataclass

from pipeline.common.emotion import CODE_DIM
from pipeline.models.methods import MethodSpec, register
from pipeline.models.methods.rad_nerf import RadNeRFConfig, RadNeRFField
from pipeline.models.torso import TorsoField


@dataclass
class AEDNeRFConfig(RadNeRFConfig):
    """AED-NeRF: RAD-NeRF + emotion code e (R^8) as a direct head-field input."""

    method: str = "aed_nerf"
    """registered method name."""
    emotion_in_color: bool = False
    """also feed e to the colour MLP (the paper's Eq. 1 gives e to the field beside the spatial and
    audio features and does not say whether the colour branch sees it; default: density/geometry
    branch only, whose features the colour MLP already receives)."""


class AEDNeRFField(RadNeRFField):
    """RAD-NeRF field whose density MLP also takes the emotion code (``cond["emotion"]`` [8]),
    and, with ``emotion_in_color``, the colour MLP too.

    ``forward(x [P,3] in [-1,1], d [P,3] unit, cond {"audio": [A], "eye": [1], "emotion": [8]})``.
    """

    def __init__(self, cfg: AEDNeRFConfig, aud_dim: int):
        self.direct_inputs = {"emotion": CODE_DIM}
        self.color_inputs = {"emotion": CODE_DIM} if cfg.emotion_in_color else {}
        super().__init__(cfg, aud_dim)


SPEC = register(MethodSpec(
    name="aed_nerf", config=AEDNeRFConfig, field=AEDNeRFField, torso=TorsoField,
    conditions=("audio", "eye", "emotion"),
    # the paper trains on MEAD clips at 512x512 without per-stage step counts we could read;
    # RAD-NeRF's schedule, which it builds on
    paper_steps=dict(head_steps=200000, lips_steps=50000, torso_steps=200000),
    summary="AED-NeRF (Lu et al. 2026): RAD-NeRF + emotion code (5 categories x 3 levels) as a field input"))
