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
    audio_attention: str = "sigmoid"
    """how the region attention weighs the audio code per channel: ``sigmoid``, a gate in (0, 1)
    (``aud * sigmoid(MLP(enc(x)))``, this project's form), or ``linear``, unbounded
    (``aud * MLP(enc(x))``, ER-NeRF's code: nerf_triplane/network.py ``density``)."""
    lambda_amb_face: float = 0.0
    """weight of ER-NeRF's per-ray ambient terms (nerf_triplane/utils.py ``train_step``,
    ``amb_aud_loss`` and ``amb_eye_loss``; official ``lambda_amb`` 1e-4), ramped up with the
    stage's progress: the composited norm of the audio attention on the rays outside the box of
    the 68 landmarks, plus, on the rays inside it, the composited eye attention / 16 times the
    (detached) composited audio attention norm. 0 (default): off, the mean terms of
    ``lambda_amb`` only."""


class ERNeRFField(HeadField):
    """ER-NeRF: tri-plane hash encoding of x; region attention gates the audio code per channel
    (``aud * sigmoid(MLP(enc(x)))``) and the eye feature (``eye * sigmoid(MLP(enc(x)))``) by
    position (ER-NeRF Sec. 3.2-3.3).

    ``forward(x [P,3] in [-1,1], d [P,3] unit, cond {"audio": [A], "eye": [1]})``.
    With ``cfg.head_up`` (not in ER-NeRF) the head-up input ``cond["head_up"]`` [3] (the camera's
    up axis in head coordinates, standardised; :func:`pipeline.models.model.head_up_value`) joins
    them, gated by position the same way (``up * sigmoid(MLP(enc(x)))``, a 2-layer MLP of width 16).

    Regulariser: ``lambda_amb * (mean |gated audio| + mean |gated eye|)`` over the samples (keeps
    the attention off regions that do not move). ER-NeRF's own terms act per ray instead
    (``cfg.lambda_amb_face``, :meth:`ray_loss`); ``cfg.audio_attention`` ``linear`` takes its
    unbounded audio attention in place of the sigmoid gate.

    Raises:
        ValueError: ``cfg.audio_attention`` is neither ``sigmoid`` nor ``linear``.
    """

    #: ER-NeRF's ``max_steps`` (main.py, 16): the divisor of the eye attention in its cross term
    EYE_CROSS_SCALE = 16.0

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
        self.lambda_amb_face = cfg.lambda_amb_face
        self.audio_attention = cfg.audio_attention
        if self.audio_attention not in ("sigmoid", "linear"):
            raise ValueError(f"er_nerf: audio_attention {self.audio_attention!r} is neither 'sigmoid' nor 'linear'")

    def _position(self, x):
        """The condition-independent part at x [P, 3]: tri-plane encoding [P, G] and the region
        attention of the audio [P, A] (a sigmoid gate, or ER-NeRF's unbounded linear attention
        with ``audio_attention`` ``linear``) and eye [P, 1] (sigmoid gate) inputs."""
        ex = self.grid((x + 1) / 2)
        att = self.aud_att(ex)
        return ex, (att if self.audio_attention == "linear" else torch.sigmoid(att)), torch.sigmoid(self.eye_att(ex))

    def _hidden(self, x, cond, pos=None):
        """``(h [P, 1 + geo_dim], gated audio [P, A], gated eye [P, 1], audio attention [P, A],
        eye attention [P, 1])``; ``pos`` the output of :meth:`_position` when already computed
        (:meth:`density_max`)."""
        ex, ga, ge = self._position(x) if pos is None else pos
        a = cond["audio"].expand(x.shape[0], -1) * ga
        e = cond["eye"].expand(x.shape[0], 1) * ge
        parts = [ex, a, e]
        if self.up_dim:
            # the head-up input, gated by position as the eye input (not in ER-NeRF)
            parts.append(position_gated(cond["head_up"], ex, self.up_att))
        return self.sigma_net(torch.cat(parts, -1)), a, e, ga, ge

    def density_max(self, x, conds):
        """:meth:`HeadField.density_max` with the encoding and attention gates computed once."""
        pos = self._position(x)
        out = None
        for c in conds:
            s = self._sigma(self._hidden(x, c, pos)[0])
            out = s if out is None else torch.maximum(out, s)
        return out

    def forward(self, x, d, cond) -> FieldOutput:
        h, a, e, ga, ge = self._hidden(x, cond)
        ambient = (torch.cat([ga.norm(dim=-1, keepdim=True), ge], -1)
                   if self.lambda_amb_face and self.training else None)
        return self._finish(h, d, self.lambda_amb * (a.abs().mean() + e.abs().mean()), ambient=ambient)

    def ray_loss(self, out: dict, stage: str) -> torch.Tensor | None:
        """ER-NeRF's per-ray ambient terms (nerf_triplane/utils.py ``train_step``)::

            lambda_amb_face * progress * (mean(A_aud * ~in_box)
                                          + mean(A_eye / 16 * stopgrad(A_aud) * in_box))

        over the step's rays, where ``A_aud`` [R] and ``A_eye`` [R] are the audio attention's norm
        and the eye attention composited along each ray (``out["ambient"]`` [R, 2] of
        :func:`pipeline.models.volume.render_rays`) and ``in_box`` the trainer's
        ``landmark_mask`` [R] (the box of the 68 landmarks, ER-NeRF's ``face_rect``): the audio
        may act only on the face, and the eye not where the audio does. None when
        ``lambda_amb_face`` is 0 or no sample was evaluated."""
        if not self.lambda_amb_face or "ambient" not in out:
            return None
        amb, inside = out["ambient"], out["landmark_mask"]
        aud, eye = amb[:, 0], amb[:, 1]
        terms = (aud * ~inside).mean() + (eye / self.EYE_CROSS_SCALE * aud.detach() * inside).mean()
        return self.lambda_amb_face * out["progress"] * terms


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
