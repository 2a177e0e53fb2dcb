"""Shared parts of the audio-conditioned head fields: small MLPs, the per-sample output record and
the base class with the colour branch (methods subclass :class:`HeadField` in their own module,
``pipeline/models/methods/{method}.py``).

Every head field is called as ``field(x, d, cond)`` and ``field.density(x, cond)`` where ``x``
[P, 3] are sample positions in [-1, 1] (head box), ``d`` [P, 3] unit view directions and ``cond``
the method's encoded condition record (:mod:`pipeline.models.conditions`): ``{"audio": [A],
"eye": [1], ...}`` for one frame.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.models.encodings import SHEncoding


#: fold per-frame constant MLP inputs into the first layer's bias (:func:`mlp_const`); False: the
#: reference, the constants concatenated to every sample (tests/test_performance.py)
FOLD_CONSTANTS = True


def mlp_const(net: nn.Sequential, x: torch.Tensor, const: torch.Tensor | None) -> torch.Tensor:
    """``net(cat([x, const.expand(P, -1)], -1))`` for inputs ``const`` [C] that are the same for
    every sample (one frame's audio code, eye value, emotion code), with ``const`` folded into the
    first linear layer's bias: ``x @ W[:, :D]^T + (b + W[:, D:] @ const)``, then the rest of
    ``net``. x [P, D]; returns [P, out]. Equal to the concatenation up to float32 rounding (the
    sums run in another order; tests/test_performance.py::test_folded_constants_equal_concatenation);
    with :data:`FOLD_CONSTANTS` False (or ``const`` None / empty) it is the concatenation."""
    if const is None or const.numel() == 0:
        return net(x)
    if not FOLD_CONSTANTS:
        return net(torch.cat([x, const.reshape(1, -1).expand(x.shape[0], -1)], -1))
    first, dx = net[0], x.shape[-1]
    h = F.linear(x, first.weight[:, :dx], first.bias + first.weight[:, dx:] @ const.reshape(-1))
    return net[1:](h)


def position_gated(value: torch.Tensor, ex: torch.Tensor, att: nn.Module) -> torch.Tensor:
    """A per-frame input gated by position, ``value * sigmoid(att(ex))``: ER-NeRF's region
    attention (Li et al. 2023, Sec. 3.2; its eye and audio inputs), here for the head-up input of
    both fields (docs/quality.md, cause 14).

    Args:
        value: [C] the frame's input (same for every sample).
        ex: [P, G] spatial encoding of the sample positions.
        att: module mapping [P, G] -> [P, C] (gate logits).
    Returns: [P, C], each sample's copy of ``value`` scaled by its gate in (0, 1).
    Raises:
        RuntimeError: ``att``'s output width differs from ``value``'s (torch broadcasting).
    """
    return value.reshape(1, -1).expand(ex.shape[0], -1) * torch.sigmoid(att(ex))


def mlp(dim_in: int, dim_out: int, hidden: int = 64, layers: int = 2) -> nn.Sequential:
    """``layers`` linear layers with ReLU between (no output activation)."""
    mods: list[nn.Module] = []
    d = dim_in
    for _ in range(layers - 1):
        mods += [nn.Linear(d, hidden), nn.ReLU(True)]
        d = hidden
    mods.append(nn.Linear(d, dim_out))
    return nn.Sequential(*mods)


@dataclass
class FieldOutput:
    """Per-sample field values: ``sigma`` [P] density (1/scene unit, >= 0), ``rgb`` [P, 3] in
    [0, 1], ``reg`` a scalar regulariser (method-specific, already weighted), and ``ambient`` [P]
    or [P, K] (optional, >= 0): per-sample values the renderer composites along each ray with the
    colour's weights (``ambient`` of :func:`pipeline.models.volume.render_rays`), for losses on rays
    (RAD-NeRF's |audio coordinate|, :class:`pipeline.models.methods.rad_nerf.RadNeRFField`; ER-NeRF's
    audio and eye attention, :class:`pipeline.models.methods.er_nerf.ERNeRFField`)."""

    sigma: torch.Tensor
    rgb: torch.Tensor
    reg: torch.Tensor
    ambient: torch.Tensor | None = None


class HeadField(nn.Module):
    """Base of the audio-conditioned head fields: colour branch and density activation.

    Subclasses implement ``forward(x, d, cond) -> FieldOutput`` and ``density(x, cond) -> [P]``;
    they may override :meth:`ray_loss` to add a loss on the rendered rays.
    """

    #: True when :meth:`density_max` shares the condition-independent work (the position
    #: encoding) between the condition records; the occupancy update then calls it per chunk of
    #: cells instead of :meth:`density` per condition (fields whose ``_hidden`` has side effects
    #: per condition record, e.g. NeRF-3DTalker's expression statistics, keep False)
    shares_density_max: bool = False

    def __init__(self, hidden: int, extra_color_dim: int = 0, geo_dim: int = 15, color_layers: int = 3):
        super().__init__()
        self.geo_dim = geo_dim
        self.dir_enc = SHEncoding()
        self.color_net = mlp(self.geo_dim + self.dir_enc.output_dim + extra_color_dim, 3, hidden, color_layers)

    def _finish(self, h: torch.Tensor, d: torch.Tensor, reg: torch.Tensor,
                color_extra: torch.Tensor | None = None, ambient: torch.Tensor | None = None) -> FieldOutput:
        """Density and colour from ``h`` [P, 1 + geo_dim] and directions d [P, 3];
        ``color_extra`` [C]: per-frame constant inputs of the colour MLP (after the geometry
        features and the direction encoding; folded into its first bias, :func:`mlp_const`);
        ``ambient`` [P] or [P, K]: :attr:`FieldOutput.ambient`."""
        sigma = self._sigma(h)                                    # trunc-exp activation (Instant-NGP)
        rgb = torch.sigmoid(mlp_const(self.color_net, torch.cat([h[:, 1:], self.dir_enc(d)], -1), color_extra))
        return FieldOutput(sigma, rgb, reg, ambient)

    def _hidden(self, x: torch.Tensor, cond: dict[str, torch.Tensor]):
        """``h`` [P, 1 + geo_dim] (raw density + geometry features), or a tuple whose first item
        is ``h`` (subclasses)."""
        raise NotImplementedError

    @staticmethod
    def _sigma(h: torch.Tensor) -> torch.Tensor:
        """Density [P] from ``_hidden``'s output: trunc-exp of the first channel (Instant-NGP)."""
        return torch.exp(h[:, 0].clamp(max=15.0))

    def density(self, x: torch.Tensor, cond: dict[str, torch.Tensor]) -> torch.Tensor:
        """Density only (occupancy-grid updates). x [P, 3] in [-1, 1]; returns [P] (the same
        trunc-exp of ``_hidden``'s first channel as ``forward``)."""
        h = self._hidden(x, cond)
        return self._sigma(h[0] if isinstance(h, tuple) else h)

    def density_max(self, x: torch.Tensor, conds: list[dict[str, torch.Tensor]]) -> torch.Tensor:
        """Maximum density [P] over the condition records ``conds`` at the same points x [P, 3]
        in [-1, 1] (RAD-NeRF's occupancy update). This reference evaluates :meth:`density` per
        record; fields with ``shares_density_max`` override it to encode x once, with results
        equal bit for bit (tests/test_performance.py::test_shared_density_max_equals_per_condition)."""
        out = None
        for c in conds:
            s = self.density(x, c)
            out = s if out is None else torch.maximum(out, s)
        return out

    def ray_loss(self, out: dict, stage: str) -> torch.Tensor | None:
        """Extra loss on rendered rays (``out`` of :func:`pipeline.models.volume.render_rays`) in
        training stage ``stage`` (``head`` or ``lips``); None (default) adds nothing. The trainer
        adds to ``out`` the rays' ``face_mask`` [R] (bool: inside the frame's lower-face box,
        :attr:`pipeline.train.data.SplitData.face`), ``landmark_mask`` [R] (bool: inside the box
        of all 68 landmarks, :attr:`pipeline.train.data.SplitData.landmark_box`) and the stage's
        ``progress`` (step over the stage's steps, 0-1; 1 in the lips stage)."""
        return None
