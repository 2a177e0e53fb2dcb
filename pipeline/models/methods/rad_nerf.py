"""RAD-NeRF (Tang et al. 2022, "Real-time Neural Radiance Talking Portrait Synthesis via
Audio-spatial Decomposition"): 3D hash grid of position + a position-dependent 2D audio
coordinate encoded by a 2D hash grid, eye input, RAD-NeRF's pseudo-3D deformable torso.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from pipeline.models.configs import TrainConfig
from pipeline.models.encodings import make_hash_grid
from pipeline.models.fields import FieldOutput, HeadField, mlp, mlp_const, position_gated
from pipeline.models.methods import MethodSpec, register
from pipeline.models.torso import TorsoField


@dataclass
class RadNeRFConfig(TrainConfig):
    """RAD-NeRF (Tang et al. 2022): 3D hash grid + 2D audio-coordinate grid."""

    method: str = "rad_nerf"
    """registered method name."""
    ambient_dim: int = 2
    """dimension of the audio coordinate (RAD-NeRF: 2)."""
    ambient_resolution: int = 256
    """finest resolution of the audio-coordinate hash grid (RAD-NeRF: 2048). At the ``quick``
    budget 2048 drove the audio coordinate into tanh's saturation, where the audio changes nothing
    (docs/quality.md, "The mouth hardly moves"; ``scripts/analysis/audio_coordinate.py``)."""
    ambient_layers: int = 2
    """linear layers of the MLP that maps (position encoding, audio code) to the audio coordinate
    (RAD-NeRF's ambient net: 3)."""
    lambda_amb_face: float = 0.0
    """weight of RAD-NeRF's audio-coordinate loss (nerf/utils.py, "regions out of face should be
    static"; ``--lambda_amb`` 0.1 there): the mean over a step's rays of each ray's composited
    sum of |a| (:attr:`pipeline.models.fields.FieldOutput.ambient`), counted on the rays outside
    the frame's lower-face box (:attr:`pipeline.train.data.SplitData.face`), its weight ramped
    linearly from 0 over the head stage (RAD-NeRF: ``min(step / iters, 1)``) and full in the lips
    stage. 0 leaves it out (the default, and the ``paper`` and ``smoke`` profiles); the ``quick``
    profile takes 0.01 (:data:`QUICK_HEAD`). ``lambda_amb`` (the mean |a| over every sample) is this
    project's older term, not RAD-NeRF's. RAD-NeRF's 0.1 at the ``quick`` budget held the coordinate
    at 0 everywhere (the audio changed the sample's renders by 1 grey level; docs/quality.md, "Where
    the audio acts")."""


class RadNeRFField(HeadField):
    """RAD-NeRF audio-spatial decomposition: 3D hash grid of x; audio projected to a
    position-dependent 2D audio coordinate ``a = tanh(MLP([enc(x), aud]))`` encoded by a 2D hash
    grid; eye ratio appended; small density/colour MLPs (RAD-NeRF Sec. 3.1-3.2).

    ``forward(x [P,3] in [-1,1], d [P,3] unit, cond {"audio": [A], "eye": [1]})``.
    Regularisers: ``lambda_amb * mean |a|`` over the samples, and RAD-NeRF's own term on the rays
    (:meth:`ray_loss`, ``cfg.lambda_amb_face``): the audio coordinate kept at 0 on the rays outside
    the lower face, so that the audio moves the mouth and jaw and nothing else.

    With ``cfg.head_up`` (not in RAD-NeRF) the head-up input ``cond["head_up"]`` [3] (the camera's
    up axis in head coordinates, standardised; :func:`pipeline.models.model.head_up_value`) is an
    input of the density MLP gated by position, ``up * sigmoid(MLP(enc(x)))`` [P, 3]
    (:func:`pipeline.models.fields.position_gated`, as ER-NeRF gates its audio and eye inputs): the
    field learns where the up axis matters (hanging hair) and where it must not act. Ungated, as a
    direct input beside the eye value, it reached every point alike and on the sample, whose little
    head motion moves with the speech, carried some of the mouth's motion (docs/quality.md,
    cause 14).

    Subclasses add direct inputs of the density MLP (beside the spatial and audio-coordinate
    features and the eye input) by naming conditions in ``direct_inputs`` with their widths
    (AED-NeRF's emotion code); ``color_inputs`` likewise for the colour MLP.
    """

    direct_inputs: dict[str, int] = {}
    color_inputs: dict[str, int] = {}
    shares_density_max = True

    def __init__(self, cfg, aud_dim: int):
        from pipeline.models.model import HEAD_UP_DIM

        #: width of the gated head-up input (0 without ``cfg.head_up``)
        self.up_dim = HEAD_UP_DIM if getattr(cfg, "head_up", False) else 0
        super().__init__(cfg.hidden, sum(self.color_inputs.values()), cfg.geo_dim, cfg.color_layers)
        kw = dict(n_levels=cfg.levels, n_features=cfg.features, log2_hashmap_size=cfg.log2_hashmap,
                  base_resolution=16)
        self.grid = make_hash_grid(3, desired_resolution=cfg.max_resolution, **kw)
        self.amb_net = mlp(self.grid.output_dim + aud_dim, cfg.ambient_dim, cfg.hidden, cfg.ambient_layers)
        self.amb_grid = make_hash_grid(cfg.ambient_dim, desired_resolution=cfg.ambient_resolution,
                                       **{**kw, "log2_hashmap_size": min(cfg.log2_hashmap, 16)})
        self.sigma_net = mlp(self.grid.output_dim + self.amb_grid.output_dim + 1 + sum(self.direct_inputs.values())
                             + self.up_dim, 1 + self.geo_dim, cfg.hidden, 3)
        if self.up_dim:
            self.up_att = mlp(self.grid.output_dim, self.up_dim, 16, 2)
        self.lambda_amb = cfg.lambda_amb
        self.lambda_amb_face = getattr(cfg, "lambda_amb_face", 0.0)

    def _hidden(self, x, cond, ex=None):
        """``(h [P, 1 + geo_dim], audio coordinate [P, ambient_dim])``; ``ex`` the 3D grid
        encoding of x when already computed (:meth:`density_max`)."""
        ex = self.grid((x + 1) / 2) if ex is None else ex
        # the frame's audio code, eye value and direct inputs are the same for every sample:
        # folded into the first layers' biases (mlp_const), inputs in the order [ex, audio] and
        # [ex, ea, (gated head-up), eye, *direct_inputs]
        amb = torch.tanh(mlp_const(self.amb_net, ex, cond["audio"]))
        ea = self.amb_grid((amb + 1) / 2)
        const = torch.cat([cond["eye"].reshape(-1), *[cond[c].reshape(-1) for c in self.direct_inputs]])
        per_point = [ex, ea] + ([position_gated(cond["head_up"], ex, self.up_att)] if self.up_dim else [])
        h = mlp_const(self.sigma_net, torch.cat(per_point, -1), const)
        return h, amb

    def density_max(self, x, conds):
        """:meth:`HeadField.density_max` with the 3D grid encoding of x computed once for all records."""
        ex = self.grid((x + 1) / 2)
        out = None
        for c in conds:
            s = self._sigma(self._hidden(x, c, ex)[0])
            out = s if out is None else torch.maximum(out, s)
        return out

    def coordinate_terms(self, amb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """RAD-NeRF's two regularisers of the audio coordinate (nerf/network.py ``forward``, nerf/utils.py
        ``train_step``), shared by the fields built on this one.

        Args:
            amb: the audio coordinate of each sample, [P, 2], in [-1, 1] (``tanh``).
        Returns:
            ``lambda_amb`` x mean |amb| (a scalar tensor), and the per-sample |amb| summed over the two
            axes, [P], that the renderer composites per ray for :meth:`ray_loss` (None unless
            ``lambda_amb_face`` is on and the field is training).
        """
        ambient = amb.abs().sum(-1) if self.lambda_amb_face and self.training else None
        return self.lambda_amb * amb.abs().mean(), ambient

    def forward(self, x, d, cond) -> FieldOutput:
        h, amb = self._hidden(x, cond)
        color = [cond[c].reshape(-1) for c in self.color_inputs]
        reg, ambient = self.coordinate_terms(amb)
        return self._finish(h, d, reg, torch.cat(color) if color else None, ambient)

    def ray_loss(self, out: dict, stage: str) -> torch.Tensor | None:
        """RAD-NeRF's audio-coordinate loss (nerf/utils.py ``train_step``): ``lambda_amb_face x
        progress x mean(ambient x ~face_mask)`` over the step's rays (``out`` of
        :func:`pipeline.models.volume.render_rays` with the trainer's ``face_mask`` [R] and
        ``progress``, :meth:`pipeline.models.fields.HeadField.ray_loss`); None when
        ``lambda_amb_face`` is 0 or the rays carry no ``ambient`` (no sample was evaluated)."""
        if not self.lambda_amb_face or "ambient" not in out:
            return None
        return self.lambda_amb_face * out["progress"] * (out["ambient"] * ~out["face_mask"]).mean()


#: the ``quick`` profile's head stage for RAD-NeRF: RAD-NeRF's own audio-coordinate loss outside the
#: lower face (at 0.01, a tenth of its weight, in place of this project's mean |a| term) with the
#: mouth sampling ``er_nerf`` takes there (each step's rays from 4 training frames, a quarter in the
#: mouth box). Without the loss the coordinate changed the renders as a speckle over the whole head
#: (3-5 % of the audio's effect in the mouth box); with both, 6-20 % on every real clip, the mouth's
#: correlation with the speaker's higher on six of eight and LMD (mouth) lower on seven, val PSNR
#: -0.14 to +1.06 dB, mean +0.23 (docs/quality.md, "Where the audio acts", rows ``ambface01_pair``
#: against ``radnow``, seed 0); the head stage takes about 1.8x as long.
QUICK_HEAD = {"frames_per_step": 4, "mouth_rays": 0.25, "lambda_amb_face": 0.01, "lambda_amb": 0.0}

SPEC = register(MethodSpec(
    name="rad_nerf", config=RadNeRFConfig, field=RadNeRFField, torso=TorsoField, conditions=("audio", "eye"),
    paper_steps=dict(head_steps=200000, lips_steps=50000, torso_steps=200000),
    profile_values={"quick": QUICK_HEAD},
    summary="RAD-NeRF (Tang et al. 2022): audio-spatial decomposition, audio + eye conditions"))
