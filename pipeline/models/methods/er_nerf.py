"""ER-NeRF (Li et al. 2023, "Efficient Region-Aware Neural Radiance Fields for High-Fidelity
Talking Portrait Synthesis"): tri-plane hash encoding, region attention on the audio and eye
inputs, torso with the adaptive pose encoding (Sec. 3.4, :class:`pipeline.models.torso.AdaptivePoseTorso`).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from pipeline.models.configs import TrainConfig
from pipeline.models.encodings import TriPlaneHashGrid
from pipeline.models.fields import FieldOutput, HeadField, mlp, position_gated
from pipeline.models.methods import MethodSpec, register
from pipeline.models.torso import AdaptivePoseTorso


@dataclass
class ERNeRFConfig(TrainConfig):
    """ER-NeRF (Li et al. 2023): tri-plane hash grid + region attention."""

    method: str = "er_nerf"
    """registered method name."""


class ERNeRFField(HeadField):
    """ER-NeRF: tri-plane hash encoding of x; region attention gates the audio code per channel
    (``aud * sigmoid(MLP(enc(x)))``) and the eye feature (``eye * sigmoid(MLP(enc(x)))``) by
    position (ER-NeRF Sec. 3.2-3.3).

    ``forward(x [P,3] in [-1,1], d [P,3] unit, cond {"audio": [A], "eye": [1]})``.
    With ``cfg.head_up`` (not in ER-NeRF) the head-up input ``cond["head_up"]`` [3] (the camera's
    up axis in head coordinates, standardised; :func:`pipeline.models.model.head_up_value`) joins
    them, gated by position the same way (``up * sigmoid(MLP(enc(x)))``, a 2-layer MLP of width 16).

    Regulariser: ``lambda_amb * (mean |gated audio| + mean |gated eye|)`` (ER-NeRF's ambient
    terms, keep the attention off regions that do not move).
    """

    shares_density_max = True

    def __init__(self, cfg, aud_dim: int):
        super().__init__(cfg.hidden, geo_dim=cfg.geo_dim, color_layers=cfg.color_layers)
        self.grid = TriPlaneHashGrid(n_levels=cfg.levels, n_features=cfg.features,
                                     log2_hashmap_size=cfg.log2_hashmap, base_resolution=16,
                                     desired_resolution=cfg.max_resolution)
        self.aud_att = mlp(self.grid.output_dim, aud_dim, cfg.hidden, 2)
        self.eye_att = mlp(self.grid.output_dim, 1, 16, 2)
        self.up_dim = 0
        if getattr(cfg, "head_up", False):
            from pipeline.models.model import HEAD_UP_DIM

            self.up_dim = HEAD_UP_DIM
            self.up_att = mlp(self.grid.output_dim, HEAD_UP_DIM, 16, 2)
        self.sigma_net = mlp(self.grid.output_dim + aud_dim + 1 + self.up_dim, 1 + self.geo_dim, cfg.hidden, 3)
        self.lambda_amb = cfg.lambda_amb

    def _position(self, x):
        """The condition-independent part at x [P, 3]: tri-plane encoding [P, G] and the region
        attention gates of the audio [P, A] and eye [P, 1] inputs."""
        ex = self.grid((x + 1) / 2)
        return ex, torch.sigmoid(self.aud_att(ex)), torch.sigmoid(self.eye_att(ex))

    def _hidden(self, x, cond, pos=None):
        """``(h [P, 1 + geo_dim], gated audio [P, A], gated eye [P, 1])``; ``pos`` the output of
        :meth:`_position` when already computed (:meth:`density_max`)."""
        ex, ga, ge = self._position(x) if pos is None else pos
        a = cond["audio"].expand(x.shape[0], -1) * ga
        e = cond["eye"].expand(x.shape[0], 1) * ge
        parts = [ex, a, e]
        if self.up_dim:
            # the head-up input, gated by position as the eye input (not in ER-NeRF)
            parts.append(position_gated(cond["head_up"], ex, self.up_att))
        return self.sigma_net(torch.cat(parts, -1)), a, e

    def density_max(self, x, conds):
        """:meth:`HeadField.density_max` with the encoding and attention gates computed once."""
        pos = self._position(x)
        out = None
        for c in conds:
            s = self._sigma(self._hidden(x, c, pos)[0])
            out = s if out is None else torch.maximum(out, s)
        return out

    def forward(self, x, d, cond) -> FieldOutput:
        h, a, e = self._hidden(x, cond)
        return self._finish(h, d, self.lambda_amb * (a.abs().mean() + e.abs().mean()))


#: the ``quick`` profile's head rays for ER-NeRF (not the paper's, which takes a step's rays from one
#: frame): each step's rays from 4 training frames, a quarter of them in the mouth box. At the quick
#: budget the region attention then moves the mouth at about three fifths of the speaker's
#: amplitude instead of a quarter (median over the eight real clips, 0.60 against 0.26), with val
#: PSNR no lower on any of them at seed 0, mean +0.17 dB (docs/quality.md, "The mouth hardly
#: moves", rows ``mouthpair*`` against ``mouthbase*``); the head stage takes 1.6-2.2x as long.
#: ``rad_nerf`` takes the same sampling in ``quick`` together with RAD-NeRF's audio-coordinate loss,
#: without which its audio acted over the whole head (:data:`pipeline.models.methods.rad_nerf.QUICK_HEAD`).
QUICK_HEAD_RAYS = {"frames_per_step": 4, "mouth_rays": 0.25}

SPEC = register(MethodSpec(
    name="er_nerf", config=ERNeRFConfig, field=ERNeRFField, torso=AdaptivePoseTorso, conditions=("audio", "eye"),
    paper_steps=dict(head_steps=100000, lips_steps=25000, torso_steps=200000),
    profile_values={"quick": QUICK_HEAD_RAYS},
    summary="ER-NeRF (Li et al. 2023): tri-plane hash, region attention, audio + eye conditions"))
