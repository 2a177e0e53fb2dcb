"""NeRF-3DTalker (Liu, Liu, Bi, ICASSP 2025, arXiv 2502.14178, "Neural Radiance Field with 3D Prior
Aided Audio Disentanglement for Talking Head Synthesis") on the project's grid-NeRF backbone.

What follows the paper (docs/methods/nerf3dtalker.md has the full comparison):

* **3D prior record per frame** (condition ``prior3d``, :data:`PRIOR3D`): the identity's shape code
  (Surrey Face Model, 63 PCA coefficients of ``threedmm.npz``), the frame's expression coefficients
  (6 SFM expression weights of ``threedmm.npz`` and the 52 articulated MediaPipe blendshapes of
  ``blendshapes.npy``) and, as the targets of the AU encoder, the intensities of the five lip AUs
  (AU10, AU14, AU20, AU25, AU26) of ``au.csv``. The paper's albedo/illumination codes (f_alb,
  f_illu) come from its 3DMM's texture model, which the SFM shape model has not: not used.
* **3D Prior Aided Audio Disentanglement**: a *speech branch* (the frame's audio features ->
  articulated expression coefficients, trained per identity against the tracked ones with the
  paper's L_exp, an L2), a *style branch* (the shared audio code of AudioNet + AudioAttNet over the
  audio window -> speaking-style vector) and their *fusion* (MLP of [expression, style]) into the
  field's dynamic condition.
* **Standardized Space** (:class:`StandardizedSpace`): an AU encoder with one latent per lip AU
  (AU10, AU14, AU20, AU25, AU26, the AUs of the authors' code), each vector-quantised by its own
  codebook (local, semantic space; an AU head ties each latent to its AU's intensity), plus a
  global latent with the global codebook; a decoder maps the quantised codes back to expression
  coefficients. The codebooks are learned on the tracked (real) coefficients of the speaker, and
  at drive time the coefficients predicted from audio are replaced by their quantised
  reconstruction: generated motion is pulled back into the speaker's motion space.

Training uses the tracked coefficients of each frame as the field's expression input (teacher
forcing); driving from audio (evaluation, every render protocol) uses the speech branch's
prediction passed through the Standardized Space. :attr:`NeRF3DTalkerField.drive` switches it.

Substitute for the paper's Wav2Lip "LipNet" and SyncNet loss: their weights cannot run here
(SyncNet is not downloadable on these machines), so the lip supervision is L_exp on the
articulated (mouth) coefficients plus the shared lips stage (mouth-patch MSE + LPIPS when its
weights are present). The interface stays open: :attr:`NeRF3DTalkerField.sync_loss` takes a
callable ``(rendered mouth rays dict, condition record) -> scalar`` weighted by ``lambda_sync``.

Field: RAD-NeRF's audio-spatial decomposition (:class:`~pipeline.models.methods.rad_nerf.RadNeRFField`)
with the fused expression/style feature in place of the raw audio code, the identity code as a
direct density input beside the eye input; RAD-NeRF's torso.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pipeline.common.errors import InputError
from pipeline.models.conditions import Condition, register_condition
from pipeline.models.fields import FieldOutput, HeadField, mlp, position_gated
from pipeline.models.methods import MethodSpec, register
from pipeline.models.methods.rad_nerf import QUICK_HEAD, RadNeRFConfig, RadNeRFField
from pipeline.models.torso import TorsoField

#: the lip AUs of the AU encoder (NeRF-3DTalker's code: AU10, AU14, AU20, AU25, AU26)
LIP_AUS = ("AU10", "AU14", "AU20", "AU25", "AU26")
#: OpenFace AU intensity range (AU_r in [0, 5]); the AU head predicts AU_r / AU_MAX
AU_MAX = 5.0
ID_DIM, SFM_EXPR_DIM, BLENDSHAPE_DIM = 63, 6, 52
#: expression coefficients: 6 SFM expression weights then the 52 MediaPipe blendshapes
EXPR_DIM = SFM_EXPR_DIM + BLENDSHAPE_DIM
#: layout of one frame's ``prior3d`` record
ID_SLICE = slice(0, ID_DIM)
EXPR_SLICE = slice(ID_DIM, ID_DIM + EXPR_DIM)
AU_SLICE = slice(ID_DIM + EXPR_DIM, ID_DIM + EXPR_DIM + len(LIP_AUS))
PRIOR_DIM = ID_DIM + EXPR_DIM + len(LIP_AUS)


def load_prior3d(path: Path, n_frames: int) -> np.ndarray:
    """The per-frame 3D prior record of a dataset, ``[N, PRIOR_DIM]`` float32 (``PRIOR_DIM`` = 126):
    ``[0:63]`` SFM identity shape (same every frame), ``[63:69]`` SFM expression weights,
    ``[69:121]`` MediaPipe blendshapes (0..1), ``[121:126]`` AU10/14/20/25/26 intensities (0..5).

    Args:
        path: ``threedmm.npz`` of the dataset (``blendshapes.npy`` and ``au.csv`` are read beside it).
        n_frames: frames the transforms reference (checked by the caller).
    Raises:
        InputError: the 3DMM fit is n/a (with its reason: the SFM files and their fetch command),
            or a file is missing, malformed or has a different frame count.
    """
    from pipeline.preprocess.aus import read_openface_csv

    path = Path(path)
    try:
        with np.load(path) as z:
            if str(z["status"]) != "ok":
                reason = str(z["reason"]) if "reason" in z.files else str(z["status"])
                raise InputError(path, f"no 3DMM fit, nerf3dtalker needs it ({reason})")
            shape, expr = z["shape"].astype(np.float32), z["expression"].astype(np.float32)
    except (OSError, ValueError, KeyError) as exc:
        raise InputError(path, f"not a threedmm.npz ({exc})") from None
    if shape.shape != (ID_DIM,) or expr.ndim != 2 or expr.shape[1] != SFM_EXPR_DIM:
        raise InputError(path, f"expected shape [{ID_DIM}] and expression [N, {SFM_EXPR_DIM}], got "
                               f"{list(shape.shape)} and {list(expr.shape)}")
    bs_path = path.parent / "blendshapes.npy"
    if not bs_path.is_file():
        raise InputError(bs_path, "file not found (nerf3dtalker's articulated expression coefficients)")
    bs = np.load(bs_path).astype(np.float32)
    if bs.ndim != 2 or bs.shape[1] != BLENDSHAPE_DIM or len(bs) != len(expr):
        raise InputError(bs_path, f"expected [{len(expr)}, {BLENDSHAPE_DIM}] blendshapes (as threedmm.npz), "
                                  f"got {list(bs.shape)}")
    au_path = path.parent / "au.csv"
    df = read_openface_csv(au_path)
    missing = [f"{a}_r" for a in LIP_AUS if f"{a}_r" not in df.columns]
    if missing:
        raise InputError(au_path, f"no column {missing[0]} (nerf3dtalker's AU encoder needs {', '.join(LIP_AUS)})")
    aus = df[[f"{a}_r" for a in LIP_AUS]].to_numpy(np.float32)
    if len(aus) != len(expr):
        raise InputError(au_path, f"{len(aus)} rows but threedmm.npz has {len(expr)} frames")
    return np.concatenate([np.broadcast_to(shape, (len(expr), ID_DIM)), expr, bs, aus], 1)


#: the 3D prior record of NeRF-3DTalker (see :func:`load_prior3d`)
PRIOR3D = register_condition(Condition(
    "prior3d", (PRIOR_DIM,), "threedmm.npz", None,
    "3D prior per frame: SFM identity shape + SFM expression weights (threedmm.npz), 52 blendshapes "
    "(blendshapes.npy), lip AU intensities (au.csv)", load=load_prior3d))


@dataclass
class NeRF3DTalkerConfig(RadNeRFConfig):
    """NeRF-3DTalker: RAD-NeRF backbone conditioned on the 3D prior, audio disentanglement and the
    Standardized Space. Sizes and weights the paper leaves open are fields here."""

    method: str = "nerf3dtalker"
    """registered method name."""
    id_code_dim: int = 8
    """size of the identity code (linear projection of the 63 SFM shape coefficients) fed to the
    density MLP (the paper's f_id; its width is not given)."""
    style_dim: int = 8
    """size of the speaking-style vector of the style branch (the paper's f_exp-style; width not given)."""
    fusion_dim: int = 32
    """size of the fused expression/style feature that conditions the field (takes the place of
    RAD-NeRF's audio code)."""
    au_latent_dim: int = 4
    """size of each lip AU's latent in the AU encoder (one latent per AU of ``LIP_AUS``)."""
    au_codebook_size: int = 16
    """entries of each lip AU's codebook (local Standardized Space; the paper gives no size)."""
    global_latent_dim: int = 16
    """size of the global latent of the expression (global Standardized Space)."""
    global_codebook_size: int = 64
    """entries of the global codebook (the paper gives no size)."""
    lambda_exp: float = 1.0
    """weight of L_exp, the L2 between the speech branch's predicted and the tracked expression
    coefficients (paper's L_exp; weight not given)."""
    lambda_vq: float = 0.1
    """weight of the codebook losses (VQ-VAE: ||sg(z) - q||^2 + vq_beta ||z - sg(q)||^2, summed over
    the five AU codebooks and the global one) plus the decoder's reconstruction L2 of the tracked
    coefficients."""
    vq_beta: float = 0.25
    """commitment weight of the vector quantisers (VQ-VAE, van den Oord et al. 2017: 0.25)."""
    lambda_au: float = 0.1
    """weight of the AU head's L2 between each AU latent's predicted and the tracked intensity
    (AU_r / 5) of its AU: gives the local codebooks their AU semantics."""
    standardize: float = 1.0
    """share of the Standardized Space at drive time: the field's expression input is
    ``(1 - s) * predicted + s * quantised reconstruction of predicted`` (1: fully standardized,
    0: the speech branch's prediction as is)."""
    speech_hidden: int = 64
    """hidden width of the speech branch (one ReLU layer)."""
    speech_dropout: float = 0.2
    """dropout on the speech branch's input (a few hundred frames per identity: it overfits without)."""
    speech_l2: float = 1e-3
    """weight of the squared-weight penalty of the speech branch's linear layers."""
    speech_batch: int = 32
    """frames replayed per training step for L_exp (inputs and tracked targets of frames seen earlier
    in the run; 0: only the step's frame). The trainer renders one frame per step, the speech branch
    needs minibatches."""
    speech_replay: int = 2048
    """most frames kept for the replay (the oldest are dropped)."""
    lambda_sync: float = 0.0
    """weight of the lip-sync loss slot (the paper's Wav2Lip LipNet/SyncNet terms); 0 and no
    callable here, since their weights cannot run offline (see ``NeRF3DTalkerField.sync_loss``)."""


class VectorQuantizer(nn.Module):
    """Vector quantisation with a learned codebook (VQ-VAE, van den Oord et al. 2017).

    Args:
        n_codes: codebook entries K; dim: entry size D; beta: commitment weight.
    ``forward(z [..., D]) -> (z_q [..., D], index [...] long, loss scalar)``: ``z_q`` is the nearest
    entry (Euclidean) with the straight-through gradient to ``z``; ``loss = mean ||sg(z) - q||^2 +
    beta mean ||z - sg(q)||^2``.
    """

    def __init__(self, n_codes: int, dim: int, beta: float = 0.25):
        super().__init__()
        self.codebook = nn.Parameter(torch.empty(n_codes, dim).uniform_(-1.0 / n_codes, 1.0 / n_codes))
        self.beta = beta

    def nearest(self, z: torch.Tensor) -> torch.Tensor:
        """Index [...] of the nearest codebook entry (Euclidean) of each ``z`` [..., D]."""
        flat = z.reshape(-1, z.shape[-1])
        return torch.cdist(flat, self.codebook).argmin(-1).reshape(z.shape[:-1])

    def forward(self, z: torch.Tensor):
        idx = self.nearest(z)
        q = self.codebook[idx]
        loss = ((z.detach() - q) ** 2).mean() + self.beta * ((z - q.detach()) ** 2).mean()
        return z + (q - z).detach(), idx, loss


class StandardizedSpace(nn.Module):
    """NeRF-3DTalker's local-global Standardized Space over expression coefficients.

    Local: the AU encoder maps the [58] coefficients to one latent per lip AU (``LIP_AUS``), each
    quantised by its own codebook (``au_codebook_size`` x ``au_latent_dim``); an AU head per AU
    predicts its intensity (AU_r / 5) from the latent. Global: an encoder to one latent quantised
    by the global codebook (``global_codebook_size`` x ``global_latent_dim``). A decoder maps the
    concatenated quantised codes back to [58] coefficients.

    ``forward(e [58], au [5] or None) -> (e_std [58], loss scalar)``: the loss (codebook +
    commitment + reconstruction L2 of ``e`` x ``lambda_vq``, AU head L2 x ``lambda_au`` when
    ``au`` is given) trains the space on real (tracked) coefficients.
    """

    def __init__(self, cfg: NeRF3DTalkerConfig):
        super().__init__()
        n_au, d_au, d_g = len(LIP_AUS), cfg.au_latent_dim, cfg.global_latent_dim
        self.n_au, self.d_au = n_au, d_au
        self.au_encoder = mlp(EXPR_DIM, n_au * d_au, cfg.hidden, 2)
        self.au_codebooks = nn.ModuleList(VectorQuantizer(cfg.au_codebook_size, d_au, cfg.vq_beta)
                                          for _ in range(n_au))
        self.au_heads = nn.ModuleList(nn.Linear(d_au, 1) for _ in range(n_au))
        self.global_encoder = mlp(EXPR_DIM, d_g, cfg.hidden, 2)
        self.global_codebook = VectorQuantizer(cfg.global_codebook_size, d_g, cfg.vq_beta)
        self.decoder = mlp(n_au * d_au + d_g, EXPR_DIM, cfg.hidden, 2)
        self.lambda_vq, self.lambda_au = cfg.lambda_vq, cfg.lambda_au

    def quantize(self, e: torch.Tensor):
        """Codes of ``e`` [58]: (AU latents [5, d_au], quantised AU latents, AU indices [5],
        quantised global latent [d_g], global index, summed VQ loss)."""
        z_au = self.au_encoder(e).view(self.n_au, self.d_au)
        outs = [vq(z_au[k]) for k, vq in enumerate(self.au_codebooks)]
        q_au = torch.stack([o[0] for o in outs])
        idx_au = torch.stack([o[1] for o in outs])
        q_g, idx_g, loss_g = self.global_codebook(self.global_encoder(e))
        return z_au, q_au, idx_au, q_g, idx_g, loss_g + sum(o[2] for o in outs)

    def forward(self, e: torch.Tensor, au: torch.Tensor | None = None):
        z_au, q_au, _, q_g, _, vq_loss = self.quantize(e)
        e_std = self.decoder(torch.cat([q_au.reshape(-1), q_g]))
        loss = self.lambda_vq * (vq_loss + ((e_std - e.detach()) ** 2).mean())
        if au is not None:
            pred = torch.cat([head(z_au[k]) for k, head in enumerate(self.au_heads)])
            loss = loss + self.lambda_au * ((pred - au / AU_MAX) ** 2).mean()
        return e_std, loss


#: the speech branch reads the frame's own audio feature row pooled to this [time, channel] grid
#: (any feature: mel [16, 80], wav2vec2 [16, D], HuBERT [2, 1024], DeepSpeech [16, 29])
SPEECH_GRID = (16, 32)


def speech_input(window: torch.Tensor) -> torch.Tensor:
    """Speech-branch input of audio windows ``[..., W, T, C]`` -> ``[..., 512]``: the centre row (the
    frame's own features), average-pooled to :data:`SPEECH_GRID`, standardised per frame (zero
    mean, unit variance: removes the loudness offset of log-mel features)."""
    lead = window.shape[:-3]
    w = window.reshape(-1, *window.shape[-3:])
    c = w[:, w.shape[1] // 2][:, None]                                   # [B, 1, T, C]
    x = nn.functional.adaptive_avg_pool2d(c, SPEECH_GRID).flatten(1)
    x = (x - x.mean(1, keepdim=True)) / (x.std(1, keepdim=True) + 1e-5)
    return x.reshape(*lead, -1)


class AudioDisentanglement(nn.Module):
    """3D Prior Aided Audio Disentanglement.

    * speech branch: the frame's audio features (:func:`speech_input`, [512]) -> dropout ->
      ``speech_hidden`` -> ReLU -> [58] expression coefficients (trained with L_exp);
    * style branch: the shared audio code (AudioNet + AudioAttNet over the window) [A] -> tanh
      style vector [style_dim];
    * fusion: MLP([58 normalised expression, style]) -> [fusion_dim], the field's condition.
    """

    def __init__(self, cfg: NeRF3DTalkerConfig, aud_dim: int):
        super().__init__()
        self.speech = nn.Sequential(nn.Dropout(cfg.speech_dropout),
                                    nn.Linear(SPEECH_GRID[0] * SPEECH_GRID[1], cfg.speech_hidden), nn.ReLU(True),
                                    nn.Linear(cfg.speech_hidden, EXPR_DIM))
        self.style = mlp(aud_dim, cfg.style_dim, cfg.hidden, 2)
        self.fusion = mlp(EXPR_DIM + cfg.style_dim, cfg.fusion_dim, cfg.hidden, 2)

    def predict(self, window: torch.Tensor) -> torch.Tensor:
        """Audio windows [..., W, T, C] -> expression coefficients [..., 58]."""
        return self.speech(speech_input(window))

    def speech_penalty(self) -> torch.Tensor:
        """Sum of squared weights of the speech branch's linear layers (its L2 regulariser)."""
        return sum((m.weight ** 2).sum() for m in self.speech if isinstance(m, nn.Linear))

    def fuse(self, expression: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        """[58] normalised expression + [style_dim] style -> [fusion_dim] condition feature."""
        return self.fusion(torch.cat([expression, style]))


class RunningNorm(nn.Module):
    """Per-coefficient standardisation with statistics accumulated over the training frames seen
    (buffers ``count``, ``total``, ``total_sq``; saved in checkpoints). ``update(x [D])`` adds one
    frame; ``forward(x [..., D])`` returns ``(x - mean) / sqrt(var + 1e-4)`` (identity before any
    update)."""

    def __init__(self, dim: int):
        super().__init__()
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))
        self.register_buffer("total", torch.zeros(dim, dtype=torch.float64))
        self.register_buffer("total_sq", torch.zeros(dim, dtype=torch.float64))

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        """Adds one sample ``x`` (any shape, flattened to ``dim`` values) to the running sums."""
        x = x.detach().double().reshape(-1)
        self.count += 1
        self.total += x
        self.total_sq += x * x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if float(self.count) < 2:
            return x
        mean = self.total / self.count
        var = (self.total_sq / self.count - mean ** 2).clamp(min=0)
        return (x - mean.to(x.dtype)) / torch.sqrt(var.to(x.dtype) + 1e-4)


class NeRF3DTalkerField(RadNeRFField):
    """RAD-NeRF field driven by the fused 3D-prior expression / speaking-style feature.

    ``forward(x [P,3] in [-1,1], d [P,3] unit, cond {"audio": [A], "audio_window": [W,T,C],
    "eye": [1], "prior3d": [126]})``. The expression input is chosen by :attr:`drive`: ``"auto"``
    (tracked coefficients of ``prior3d`` while training, the speech branch's prediction through the
    Standardized Space in eval mode), ``"tracked"`` or ``"audio"``; it is standardised
    (:class:`RunningNorm`, training statistics) before the Standardized Space and the fusion.

    Regulariser (training only): ``lambda_amb`` x mean |audio coordinate| (RAD-NeRF) +
    ``lambda_exp`` x L_exp (mean over the step's frame and ``speech_batch`` frames replayed from
    those seen so far in this process) + ``speech_l2`` x the speech branch's weight penalty + the
    Standardized Space's losses on the tracked coefficients. Per ray (:meth:`ray_loss`): RAD-NeRF's
    audio-coordinate loss outside the lower face (``lambda_amb_face``, as
    :class:`~pipeline.models.methods.rad_nerf.RadNeRFField`) and ``lambda_sync`` x
    :attr:`sync_loss` when a callable is set.
    """

    #: the model passes the raw audio window as ``cond["audio_window"]`` (TalkingHeadModel.encode)
    reads_audio_window = True
    #: its ``_hidden`` updates the expression statistics once per condition record: occupancy
    #: updates evaluate the records one after the other (HeadField.density_max's reference path)
    shares_density_max = False
    density_max = HeadField.density_max
    #: ``auto`` | ``tracked`` | ``audio`` (see class docstring)
    drive: str = "auto"
    #: lip-sync loss slot (LipNet/SyncNet substitute interface): ``(rays dict, cond) -> scalar`` or None
    sync_loss = None

    def __init__(self, cfg: NeRF3DTalkerConfig, aud_dim: int):
        self.direct_inputs = {"identity": cfg.id_code_dim}
        super().__init__(cfg, cfg.fusion_dim)     # amb_net reads the fused feature, not the audio code
        self.cfg = cfg
        self.id_proj = nn.Linear(ID_DIM, cfg.id_code_dim)
        self.disentangle = AudioDisentanglement(cfg, aud_dim)
        self.space = StandardizedSpace(cfg)
        self.norm = RunningNorm(EXPR_DIM)
        self._cond = None
        self._seen: tuple | None = None
        self._replay: list[tuple[torch.Tensor, torch.Tensor]] = []

    def _training_loss(self, cond: dict, pred: torch.Tensor, tracked: torch.Tensor, aus: torch.Tensor):
        cfg = self.cfg
        if self._seen is None or self._seen[0] is not cond:          # one update per frame, not per chunk
            self._seen = (cond, None)
            self.norm.update(tracked)
            if cfg.speech_batch:
                self._replay.append((speech_input(cond["audio_window"]).detach(), tracked.detach()))
                del self._replay[:-cfg.speech_replay]
        err = ((pred - tracked) ** 2).mean()
        if cfg.speech_batch and len(self._replay) > 1:
            pick = torch.randint(0, len(self._replay), (min(cfg.speech_batch, len(self._replay)),)).tolist()
            xs = torch.stack([self._replay[i][0] for i in pick])
            ys = torch.stack([self._replay[i][1] for i in pick])
            err = (err + len(pick) * ((self.disentangle.speech(xs) - ys) ** 2).mean()) / (1 + len(pick))
        _, space_loss = self.space(self.norm(tracked), aus)
        return cfg.lambda_exp * err + cfg.speech_l2 * self.disentangle.speech_penalty() + space_loss

    def expression(self, cond: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(normalised expression input [58] of the field, style [style_dim], training loss
        scalar) of one condition record (see :attr:`drive`)."""
        rec = cond["prior3d"].reshape(-1)
        tracked, aus = rec[EXPR_SLICE], rec[AU_SLICE]
        pred = self.disentangle.predict(cond["audio_window"])
        style = torch.tanh(self.disentangle.style(cond["audio"].reshape(-1)))
        loss = self._training_loss(cond, pred, tracked, aus) if self.training else rec.new_zeros(())
        mode = self.drive if self.drive != "auto" else ("tracked" if self.training else "audio")
        if mode == "tracked":
            return self.norm(tracked), style, loss
        if mode != "audio":
            raise ValueError(f"drive must be auto, tracked or audio, not {self.drive!r}")
        e, s = self.norm(pred), self.cfg.standardize
        return (e if s == 0 else (1 - s) * e + s * self.space(e)[0]), style, loss

    def _hidden(self, x, cond):
        e, style, loss = self.expression(cond)
        f = self.disentangle.fuse(e, style)
        n = x.shape[0]
        ex = self.grid((x + 1) / 2)
        amb = torch.tanh(self.amb_net(torch.cat([ex, f.expand(n, -1)], -1)))
        ea = self.amb_grid((amb + 1) / 2)
        idc = self.id_proj(cond["prior3d"].reshape(-1)[ID_SLICE])
        parts = [ex, ea, cond["eye"].expand(n, 1), idc.expand(n, -1)]
        if self.up_dim:                           # cfg.head_up: gated by position as RadNeRFField's
            parts.insert(2, position_gated(cond["head_up"], ex, self.up_att))
        h = self.sigma_net(torch.cat(parts, -1))
        return h, amb, loss

    def forward(self, x, d, cond) -> FieldOutput:
        h, amb, loss = self._hidden(x, cond)
        self._cond = cond
        reg, ambient = self.coordinate_terms(amb)
        return self._finish(h, d, reg + loss, ambient=ambient)

    def ray_loss(self, out: dict, stage: str):
        """RAD-NeRF's audio-coordinate loss on the rays outside the lower face
        (:meth:`RadNeRFField.ray_loss`, ``cfg.lambda_amb_face``; the coordinate here is driven by
        the fused expression / style feature) plus ``lambda_sync`` x :attr:`sync_loss` (rays,
        condition record) when both are set; None when neither term is on."""
        terms = [super().ray_loss(out, stage)]
        if self.sync_loss is not None and self.cfg.lambda_sync and self._cond is not None:
            terms.append(self.cfg.lambda_sync * self.sync_loss(out, self._cond))
        terms = [t for t in terms if t is not None]
        return sum(terms) if terms else None


def _split_windows(data, split: str, window: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Audio windows [N, W, T, C] and tracked expression coefficients [N, 58] of a split of a
    :class:`pipeline.train.data.TalkingDataset` loaded with the ``prior3d`` condition."""
    from pipeline.models.audio import audio_window

    sp = data.splits[split]
    wins = torch.stack([audio_window(data.audio, int(a), window) for a in sp.aud_ids])
    return wins, sp.conds["prior3d"][:, EXPR_SLICE].float()


def predict_expression(model, windows: torch.Tensor) -> torch.Tensor:
    """The speech branch's expression coefficients [N, 58] for audio windows [N, W, T, C]."""
    return model.head.disentangle.predict(windows)


@torch.no_grad()
def speech_errors(model, data, split: str = "val") -> dict:
    """L_exp of the speech branch on ``split`` against the mean-coefficient baseline.

    Args:
        model: a :class:`pipeline.models.model.TalkingHeadModel` of ``nerf3dtalker``.
        data: a :class:`pipeline.train.data.TalkingDataset` with ``train`` and ``split`` loaded
            (conditions including ``prior3d``).
    Returns:
        ``{"speech_mse", "mean_mse", "frames"}``: mean squared error over frames and the 58
        coefficients of the prediction and of the training split's mean coefficients.
    """
    wins, tracked = _split_windows(data, split, model.cfg.audio_window)
    was = model.training
    model.eval()
    pred = predict_expression(model, wins)
    model.train(was)
    mean = data.splits["train"].conds["prior3d"][:, EXPR_SLICE].float().mean(0)
    return {"speech_mse": float(((pred - tracked) ** 2).mean()), "mean_mse": float(((mean - tracked) ** 2).mean()),
            "frames": len(tracked)}


def fit_speech_branch(model, data, steps: int = 300, batch: int = 32, lr: float = 1e-3, seed: int = 0) -> list[float]:
    """Train the speech branch alone on the ``train`` split with L_exp + ``speech_l2`` penalty (Adam,
    minibatches of ``batch`` frames): the speech branch trained per identity against the tracked
    coefficients. Returns the L_exp per step."""
    wins, tracked = _split_windows(data, "train", model.cfg.audio_window)
    params = list(model.head.disentangle.speech.parameters())
    opt = torch.optim.Adam(params, lr=lr)
    gen = torch.Generator().manual_seed(seed)
    losses = []
    model.head.disentangle.speech.train()
    with torch.enable_grad():
        for _ in range(steps):
            idx = torch.randint(0, len(wins), (min(batch, len(wins)),), generator=gen)
            loss = ((predict_expression(model, wins[idx]) - tracked[idx]) ** 2).mean()
            opt.zero_grad()
            (loss + model.cfg.speech_l2 * model.head.disentangle.speech_penalty()).backward()
            opt.step()
            losses.append(loss.item())
    return losses


SPEC = register(MethodSpec(
    name="nerf3dtalker", config=NeRF3DTalkerConfig, field=NeRF3DTalkerField, torso=TorsoField,
    conditions=("audio", "eye", "prior3d"),
    # the paper gives no step counts; RAD-NeRF's schedule (its backbone here)
    paper_steps=dict(head_steps=200000, lips_steps=50000, torso_steps=200000),
    # rad_nerf's quick head stage (RAD-NeRF's audio-coordinate loss, the mouth sampling): on the eight
    # real clips its audio then acts on the mouth (9-21 % of its effect in the mouth box, 3-8 %
    # before), LMD (mouth) lower on six, val PSNR -0.11 to +0.39 dB (docs/quality.md, rows
    # n3dtnow / n3dt_ambpair)
    profile_values={"quick": QUICK_HEAD},
    summary="NeRF-3DTalker (Liu et al. 2025): 3D prior (SFM shape/expression + blendshapes) conditioning, "
            "audio disentanglement (speech/style/fusion), AU + global codebooks"))
