"""Training stages of the audio-driven NeRFs: ``head`` (photometric), ``lips`` (mouth-patch
fine-tuning with an LPIPS term), ``torso`` (pseudo-3D deformable torso, head frozen), then the
validation of the full frame.

Each stage resumes from ``{model_dir}/resume/{stage}.pt`` (written atomically every
``checkpoint_every`` steps) after being killed: same step counter, same per-step seeds, the CSV
log truncated to the checkpoint so the loss curve stays continuous.

Losses (per stage):
* head: MSE of (head over torso_imgs-over-bc) vs gt_imgs on rays hitting the head box, plus the
  method's regulariser (RAD-NeRF audio-coordinate L1, ER-NeRF attention terms), plus the opacity
  terms of :func:`opacity_losses` (entropy as the anchors; head-mask opacity in the quick profile).
* lips: MSE + ``lambda_lpips`` x LPIPS(AlexNet) on a patch around the mouth (RAD-NeRF
  ``finetune_lips``); LPIPS skipped with a reason when its weights are missing.
* torso: MSE of (torso over bc) vs gt_imgs outside the head (parsing), plus
  ``lambda_torso_alpha`` x MSE of the torso alpha vs torso_imgs alpha.
"""
from __future__ import annotations

import contextlib
import csv
import dataclasses
import logging
import math
import random
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from pipeline.common.io import atomic_path, atomic_write, atomic_write_json
from pipeline.models.audio import audio_window
from pipeline.models.configs import TrainConfig
from pipeline.models.encodings import HashGrid, TcnnHashGrid
from pipeline.models.conditions import get_condition
from pipeline.models.model import TalkingHeadModel, audio_norm_stats, body_frame_meta, head_up_stats
from pipeline.models.occupancy import FULL_UPDATES
from pipeline.models.registry import build_model, checkpoint_payload, load_checkpoint, resolve_device
from pipeline.models.volume import aabb_near_far, get_rays
from pipeline.train.data import SplitData, TalkingDataset

log = logging.getLogger("pipeline.train")

STAGES = ("head", "lips", "torso")
LOG_FIELDS = ["step", "stage", "loss", "psnr", "rays_per_s", "lr", "elapsed_s"]


def psnr_from_mse(mse: float) -> float:
    """PSNR in dB for images in [0, 1]."""
    return float("inf") if mse <= 0 else -10.0 * math.log10(mse)


def seed_all(seed: int) -> None:
    """Seed python, numpy and torch."""
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.manual_seed(seed)


def pixels_in_box(pix: torch.Tensor, box: torch.Tensor) -> torch.Tensor:
    """[R] bool: which pixels ``pix`` [R, 2] (row, col) lie in ``box`` [4] (row0, row1, col0, col1;
    end-exclusive, pixels), the test of RAD-NeRF's and ER-NeRF's ``face_mask`` (nerf/provider.py,
    nerf_triplane/provider.py)."""
    r0, r1, c0, c1 = box.tolist()
    return (pix[:, 0] >= r0) & (pix[:, 0] < r1) & (pix[:, 1] >= c0) & (pix[:, 1] < c1)


def stage_steps(cfg: TrainConfig, stage: str) -> int:
    """Number of optimiser steps of ``stage`` (``head``, ``lips`` or ``torso``) in ``cfg``.

    Raises:
        KeyError: unknown stage name.
    """
    return {"head": cfg.head_steps, "lips": cfg.lips_steps, "torso": cfg.torso_steps}[stage]


def frame_conditions(model: TalkingHeadModel, split: SplitData, k: int, audio: torch.Tensor,
                     device: torch.device) -> dict[str, torch.Tensor]:
    """Condition record of frame ``k`` of ``split`` (conditioning contract): the audio window of
    ``audio`` [N_aud, T, C] around the frame's ``aud_id`` and the frame's row of every other
    declared condition, encoded by the model."""
    raw = {name: split.conds[name][k] for name in model.conditions if name != "audio"}
    raw["audio"] = audio_window(audio, int(split.aud_ids[k]), model.cfg.audio_window)
    return model.encode(raw, device)


def condition_values(split: SplitData) -> dict:
    """Summaries of the split's condition values for the model's meta (``Condition.summarize``:
    e.g. the emotion labels the model was trained with)."""
    out = {}
    for name, values in split.conds.items():
        summarize = get_condition(name).summarize
        if summarize is not None:
            out[name] = summarize(values.numpy())
    return out


def param_groups(modules, cfg: TrainConfig) -> list[dict]:
    """Adam groups: hash tables at ``lr_grid``, everything else at ``lr_net`` (torch-ngp)."""
    grid, net = [], []
    for mod in modules:
        grid_ids = {id(p) for m in mod.modules() if isinstance(m, (HashGrid, TcnnHashGrid)) for p in m.parameters()}
        for p in mod.parameters():
            (grid if id(p) in grid_ids else net).append(p)
    return [{"params": grid, "lr": cfg.lr_grid}, {"params": net, "lr": cfg.lr_net}]


class Stage:
    """One training stage of one model (see module docstring)."""

    #: largest H x W x train frames whose head-box pixel sets :meth:`head_box_pixels` keeps
    #: (int32 indices: at most 4 bytes each, 256 MiB)
    MAX_CACHED_PIXELS = 1 << 26

    def __init__(self, stage: str, cfg: TrainConfig, data: TalkingDataset, model_dir: Path,
                 init: Path | None, weights_dir: Path | None, device: torch.device):
        self.stage, self.cfg, self.data, self.model_dir = stage, cfg, data, Path(model_dir)
        self.device = device
        self.resume_dir = self.model_dir / "resume"
        self.prev_stages: dict = {}
        self.extra: dict = {}
        if init is not None:
            self.model, ck = load_checkpoint(init, device)
            # the stage's own config (steps, weights) may differ from the one that made `init`
            self.model.cfg = dataclasses.replace(cfg)
            if stage == "torso":
                self.fresh_torso_if_changed(ck.get("config") or {}, data, init)
            self.prev_stages = ck.get("stages", {})
            self.extra = {k: ck[k] for k in ("lips_lpips",) if k in ck}
        else:
            seed_all(cfg.seed)
            tr = data.splits["train"]
            meta = {"H": data.H, "W": data.W, "focal": data.focal, "cx": data.cx, "cy": data.cy,
                    "scene_scale": data.scene_scale(cfg.head_box), "bound": 1.0,
                    "audio_feature": cfg.audio_feature, "audio_window": cfg.audio_window,
                    "audio_shape": list(data.audio.shape[1:]), "profile": cfg.profile,
                    "train_frames": len(tr), "condition_values": condition_values(tr)}
            if cfg.audio_norm:
                meta["audio_norm"] = audio_norm_stats(data.audio[tr.aud_ids].numpy())
            if cfg.head_up:
                meta["head_up"] = head_up_stats(tr.poses.numpy())
            body_frame = body_frame_meta(cfg, tr.conds["body_pose"].numpy()) if cfg.torso_body_pose else None
            if body_frame is not None:
                meta["body_frame"] = body_frame
                log.info("torso_body_frame %s: body sway %.4f shoulder widths (on from %.4f): the torso draws "
                         "the body %s", body_frame["mode"], body_frame["sway"], body_frame["min_sway"],
                         "in its frame" if body_frame["on"] else "in image coordinates")
            self.model = build_model(cfg, meta).to(device)
        if stage == "torso" and self.model.torso.retrieval_k:
            tr = data.splits["train"]
            self.model.set_torso_bank(tr.gt, tr.conds, tr.ids)
        # the retrieval's exclusion window, drawn per step from [lo, hi] (cfg.torso_retrieval_exclude*;
        # hi None: the validation frames' count), at most what leaves K training frames to retrieve
        lo, hi = cfg.torso_retrieval_exclude, cfg.torso_retrieval_exclude_max
        if hi is None:
            hi = len(data.splits["val"]) if "val" in data.splits else lo
        n_train = len(data.splits["train"])
        self.retrieval_windows = (lo, max(lo, min(hi, (n_train - max(1, cfg.torso_retrieval) - 1) // 2)))
        self.model.train()
        self.total = stage_steps(cfg, stage)
        train_mods = [self.model.torso] if stage == "torso" else [self.model.audio, self.model.head]
        for p in self.model.parameters():
            p.requires_grad_(False)
        for m in train_mods:
            for p in m.parameters():
                p.requires_grad_(True)
        # fused Adam (one kernel over every parameter, CPU and CUDA): the same update as the
        # per-tensor loop up to float rounding, 3-4x less optimizer time on the CPU
        self.opt = torch.optim.Adam(param_groups(train_mods, cfg), betas=(0.9, 0.99), eps=1e-15, fused=True)
        # the weights' moving average the stage ends with (RAD-NeRF / ER-NeRF Trainer, torch_ema)
        self.ema = None
        if cfg.ema_decay > 0:
            from torch_ema import ExponentialMovingAverage

            self.ema = ExponentialMovingAverage([p for m in train_mods for p in m.parameters()], decay=cfg.ema_decay)
        # the lips stage continues the head stage's schedule (RAD-NeRF's finetune_lips resumes the
        # head checkpoint's scheduler): it starts at the head stage's final rate, not at the full
        # rate, which with a fresh Adam moved every colour weight and tinted the whole head
        start = cfg.lr_final if stage == "lips" else 1.0
        self.sched = torch.optim.lr_scheduler.LambdaLR(
            self.opt, lambda s: start * cfg.lr_final ** min(1.0, s / max(1, self.total)))
        self.lpips = None
        self.lpips_status = "not used in this stage"
        if stage == "lips":
            self.lpips, self.lpips_status = load_lpips(weights_dir, device)
            self.extra["lips_lpips"] = self.lpips_status
        self.step, self.elapsed = 0, 0.0
        self._all_pixels: torch.Tensor | None = None
        self._box_pixels: dict[int, torch.Tensor | None] = {}
        self._head_bbox: dict[int, tuple[int, int, int, int] | None] = {}
        tr = data.splits["train"]
        self.audio = data.audio.to(device)
        self.bc = data.bc.to(device)
        self.gt = tr.gt
        self.train = tr

    def fresh_torso_if_changed(self, init_cfg: dict, data: TalkingDataset, init: Path) -> None:
        """The torso stage trains the torso of its own config: when the checkpoint it starts
        from was made with other torso options (any ``torso_*`` field, e.g. a head and lips
        reused for a torso-only ablation, ``python -m pipeline.train.benchmark --quality
        --reuse-heads``), its torso is rebuilt from this config with fresh weights (seeded by
        ``cfg.seed``; the body frame decided again from the training frames) and the change is
        logged. The head, lips and audio weights are kept.

        Raises:
            ValueError: the checkpoint's meta lacks the statistics the new torso's body input
                needs (its head stage had no such conditions)."""
        cfg = self.cfg
        # a checkpoint older than an option was made with the option's default
        before = {f.name: init_cfg.get(f.name, f.default) for f in dataclasses.fields(cfg)
                  if f.name.startswith("torso_") and f.default is not dataclasses.MISSING}
        changed = sorted(n for n, v in before.items() if v != getattr(cfg, n))
        if not changed:
            return
        log.info("%s: torso options %s differ from the checkpoint's: the torso stage starts from a fresh torso",
                 init, ", ".join(f"{n} {before[n]!r} -> {getattr(cfg, n)!r}" for n in changed))
        meta = self.model.meta
        meta.pop("torso_bank", None)
        meta.pop("body_frame", None)
        if cfg.torso_body_pose:
            body_frame = body_frame_meta(cfg, data.splits["train"].conds["body_pose"].numpy())
            if body_frame is not None:
                meta["body_frame"] = body_frame
        seed_all(cfg.seed)
        self.model.build_torso(cfg)
        self.model.torso.to(self.device)

    # ------------------------------------------------------------------ helpers
    def frame_inputs(self, split: SplitData, k: int):
        """Scene pose [4, 4] and condition record (:meth:`TalkingHeadModel.encode`) of frame
        ``k`` of ``split``."""
        c2w = self.model.scene_pose(split.poses[k].to(self.device))
        return c2w, frame_conditions(self.model, split, k, self.audio, self.device)

    def pixels_of(self, k: int, pix: torch.Tensor):
        """gt colour [R,3], torso RGBA [R,4] (float, [0,1]) and head flag [R] at pixels ``pix``."""
        r, c = pix[:, 0].cpu(), pix[:, 1].cpu()
        gt = self.train.gt[k, r, c].to(self.device).float() / 255
        torso = self.train.torso[k, r, c].to(self.device).float() / 255
        head = self.train.head[k, r, c].to(self.device)
        return gt, torso, head

    def bg_behind_head(self, torso: torch.Tensor, pix: torch.Tensor) -> torch.Tensor:
        """torso_imgs composited over bc: the background of the head stages (RAD-NeRF)."""
        a = torso[:, 3:]
        return torso[:, :3] * a + (1 - a) * self.bc[pix[:, 0], pix[:, 1]]

    def all_pixels(self) -> torch.Tensor:
        """[H*W, 2] long (row, column) of every pixel, row-major, on the trainer's device (made once
        per stage; callers index it, never write to it)."""
        if self._all_pixels is None:
            H, W = self.data.H, self.data.W
            rr, cc = torch.meshgrid(torch.arange(H, device=self.device), torch.arange(W, device=self.device),
                                    indexing="ij")
            self._all_pixels = torch.stack([rr, cc], -1).reshape(-1, 2)
        return self._all_pixels

    def head_box_pixels(self, k: int) -> torch.Tensor:
        """[M, 2] long (row, column) of the pixels of train frame ``k`` whose rays from the frame's
        scene pose (:meth:`TalkingHeadModel.scene_pose` of ``SplitData.poses[k]``) hit the head box
        ([-bound, bound]^3), row-major; every pixel when none does. The pose is read here, not
        passed in, so that a kept set always belongs to its frame's pose. A frame's pose is fixed
        within a stage, so the set is computed once per frame and kept as int32 flat indices
        (None: every pixel) when the train split's H x W x frames is at most
        :attr:`MAX_CACHED_PIXELS` (2^26: up to 4,096 frames at the quick profile's 128 px, 256 at
        512 px); larger splits compute it each time. Equal, element for element, to computing it
        each step (:func:`pipeline.models.volume.aabb_near_far`, the slab test of RAD-NeRF's
        ``near_far_from_aabb``)."""
        pix = self.all_pixels()
        if k in self._box_pixels:
            idx = self._box_pixels[k]
            return pix if idx is None else pix[idx]
        c2w = self.model.scene_pose(self.train.poses[k].to(self.device))
        o, d = get_rays(c2w, self.data.focal, self.data.cx, self.data.cy, pix)
        hit = aabb_near_far(o, d, self.model.bound)[2]
        every = bool(hit.all()) or not bool(hit.any())
        if pix.shape[0] * len(self.train) <= self.MAX_CACHED_PIXELS:
            self._box_pixels[k] = None if every else torch.nonzero(hit).squeeze(-1).to(torch.int32)
        return pix if every else pix[hit]

    def head_bbox(self, k: int) -> tuple[int, int, int, int] | None:
        """(row min, row max, col min, col max), inclusive, of train frame ``k``'s parsed head
        (:attr:`SplitData.head`); None when the frame has no head pixel. Computed once per frame."""
        if k not in self._head_bbox:
            rows, cols = torch.nonzero(self.train.head[k], as_tuple=True)
            self._head_bbox[k] = (None if rows.numel() == 0 else
                                  (int(rows.min()), int(rows.max()), int(cols.min()), int(cols.max())))
        return self._head_bbox[k]

    def mouth_pixels(self, k: int, n: int, gen: torch.Generator) -> torch.Tensor:
        """``n`` pixels [n, 2] (row, col; int64 on the training device) drawn uniformly inside train
        frame ``k``'s mouth box (:attr:`SplitData.mouth`, landmarks 48-67) widened by half its
        height and width on each side (at least 2 px), clipped to the image: the lips and the
        skin around them that opening the mouth moves. Draws two tensors from ``gen``."""
        r0, r1, c0, c1 = self.train.mouth[k].tolist()
        mr, mc = max(2, (r1 - r0) // 2), max(2, (c1 - c0) // 2)
        r0, r1 = max(0, r0 - mr), min(self.data.H, r1 + mr + 1)
        c0, c1 = max(0, c0 - mc), min(self.data.W, c1 + mc + 1)
        r = torch.randint(r0, r1, (n,), generator=gen)
        c = torch.randint(c0, c1, (n,), generator=gen)
        return torch.stack([r, c], -1).to(self.device)

    # ------------------------------------------------------------------ one step
    def loss_step(self, k: int, gen: torch.Generator, rays: int | None = None) -> tuple[torch.Tensor, float, int]:
        """Loss on train frame ``k``. Returns (loss, mse of the colour, rays). ``rays``: the head
        stage's rays on this frame (default ``rays_per_step``; less when a step spreads its rays
        over ``frames_per_step`` frames)."""
        cfg = self.cfg
        n_rays = cfg.rays_per_step if rays is None else rays
        if self.stage == "torso":
            pix = self.all_pixels()
            pix = pix[torch.randint(0, pix.shape[0], (cfg.rays_per_step,), generator=gen).to(self.device)]
            gt, torso, head = self.pixels_of(k, pix)
            keep = ~head
            pix, gt, torso = pix[keep], gt[keep], torso[keep]
            c2w = self.model.scene_pose(self.train.poses[k].to(self.device))
            cond = {n: get_condition(n).encode_value(self.train.conds[n][k])
                    for n in self.model.torso_body_conditions()} or None
            window = None
            if self.model.torso.retrieval_k:               # no draw otherwise: the generator's stream is kept
                lo, hi = self.retrieval_windows
                window = lo if hi == lo else int(torch.randint(lo, hi + 1, (1,), generator=gen))
            t_rgb, t_a, _ = self.model.render_torso_pix(pix, c2w, cond, exclude=int(self.train.ids[k]), window=window)
            pred = t_rgb * t_a[:, None] + (1 - t_a[:, None]) * self.bc[pix[:, 0], pix[:, 1]]
            mse = ((pred - gt) ** 2).mean()
            return mse + cfg.lambda_torso_alpha * ((t_a - torso[:, 3]) ** 2).mean(), mse.item(), pix.shape[0]
        c2w, cond = self.frame_inputs(self.train, k)
        if self.stage == "lips":
            P = cfg.lips_patch
            r0, r1, c0, c1 = self.train.mouth[k].tolist()
            jit = torch.randint(-(P // 8), P // 8 + 1, (2,), generator=gen).tolist()
            top = int(np.clip((r0 + r1) // 2 - P // 2 + jit[0], 0, self.data.H - P))
            left = int(np.clip((c0 + c1) // 2 - P // 2 + jit[1], 0, self.data.W - P))
            rr, cc = torch.meshgrid(torch.arange(top, top + P), torch.arange(left, left + P), indexing="ij")
            pix = torch.stack([rr, cc], -1).reshape(-1, 2).to(self.device)
        else:
            cand = self.head_box_pixels(k)
            # 3/4 of the rays inside the parsed head's bounding box (10% margin), the rest over the
            # whole head box (they teach transparency around the head); of the former, the share
            # mouth_rays of all rays inside the mouth box (cause 19 of docs/quality.md)
            bbox = self.head_bbox(k)
            n_in = n_rays * 3 // 4 if bbox is not None else 0
            picks = [cand[torch.randint(0, cand.shape[0], (n_rays - n_in,), generator=gen).to(self.device)]]
            n_mouth = min(n_in, round(cfg.mouth_rays * n_rays))
            if n_mouth:
                n_in -= n_mouth
                picks.append(self.mouth_pixels(k, n_mouth, gen))
            if n_in:
                r_min, r_max, c_min, c_max = bbox
                mr = int(0.1 * (r_max - r_min + 1))
                mc = int(0.1 * (c_max - c_min + 1))
                r = torch.randint(max(0, r_min - mr), min(self.data.H, r_max + mr + 1), (n_in,), generator=gen)
                c = torch.randint(max(0, c_min - mc), min(self.data.W, c_max + mc + 1), (n_in,), generator=gen)
                picks.append(torch.stack([r, c], -1).to(self.device))
            pix = torch.cat(picks)
        gt, torso, head = self.pixels_of(k, pix)
        out = self.model.render_head_rays(c2w, pix, cond, perturb=True)
        pred = out["rgb"] + (1 - out["alpha"][:, None]) * self.bg_behind_head(torso, pix)
        mse = ((pred - gt) ** 2).mean()
        loss = mse + out["reg"] + opacity_losses(out["alpha"], head, cfg)
        out["face_mask"] = pixels_in_box(pix, self.train.face[k])
        out["landmark_mask"] = pixels_in_box(pix, self.train.landmark_box[k])
        out["progress"] = min(self.step / max(self.total, 1), 1.0) if self.stage == "head" else 1.0
        extra = self.model.head.ray_loss(out, self.stage)
        if extra is not None:
            loss = loss + extra
        if self.stage == "lips" and self.lpips is not None:
            P = cfg.lips_patch
            img = lambda t: t.view(P, P, 3).permute(2, 0, 1)[None] * 2 - 1  # noqa: E731
            loss = loss + cfg.lambda_lpips * self.lpips(img(pred), img(gt)).mean()
        return loss, mse.item(), pix.shape[0]

    @torch.no_grad()
    def update_occupancy(self, gen: torch.Generator) -> float:
        """RAD-NeRF occupancy update: max density over the condition records of ``occ_conditions``
        random training frames (every condition of the method, as declared); every cell for the
        first :data:`pipeline.models.occupancy.FULL_UPDATES` updates of the stage, then torch-ngp's
        partial update (:meth:`pipeline.models.occupancy.OccupancyGrid.update`)."""
        ks = torch.randint(0, len(self.train), (self.cfg.occ_conditions,), generator=gen).tolist()
        conds = [self.model.with_pose_inputs(c, c2w) for c2w, c in (self.frame_inputs(self.train, k) for k in ks)]
        head, bound = self.model.head, self.model.bound
        shared = (lambda x, cs: head.density_max(x / bound, cs)) if head.shares_density_max else None
        # torch-ngp: full updates first, then partial ones (updates before this one, from the step)
        done = (self.step - self.cfg.occ_warmup) // self.cfg.occ_update_every
        return self.model.occ.update(lambda x, c: head.density(x / bound, c), conds, max_density_fn=shared,
                                     partial=done >= FULL_UPDATES)

    # ------------------------------------------------------------------ checkpoints
    def resume_path(self) -> Path:
        """Resume checkpoint of the current stage (``{resume_dir}/{stage}.pt``)."""
        return self.resume_dir / f"{self.stage}.pt"

    def log_path(self) -> Path:
        """Per-step CSV log of the current stage (``{resume_dir}/{stage}_log.csv``)."""
        return self.resume_dir / f"{self.stage}_log.csv"

    def save_resume(self) -> None:
        """Write model, optimiser, scheduler, step, elapsed time and config atomically to
        :meth:`resume_path` (a crash mid-write leaves the previous checkpoint)."""
        state = {"model": self.model.state_dict(), "opt": self.opt.state_dict(), "sched": self.sched.state_dict(),
                 "step": self.step, "elapsed": self.elapsed, "config": dataclasses.asdict(self.cfg),
                 "meta": self.model.meta, "ema": self.ema.state_dict() if self.ema is not None else None}
        with atomic_path(self.resume_path()) as tmp:
            torch.save(state, tmp)

    def try_resume(self) -> bool:
        """Load :meth:`resume_path` when it exists and was written with the same config; trims the
        step log to the checkpoint's step. Returns whether training resumes (False: start afresh)."""
        p = self.resume_path()
        if not p.is_file():
            return False
        st = torch.load(p, map_location=self.device, weights_only=False)
        if st.get("config") != dataclasses.asdict(self.cfg):
            log.warning("%s: config changed since the checkpoint, starting the stage afresh", p)
            return False
        self.model.load_state_dict(st["model"])
        self.opt.load_state_dict(st["opt"])
        self.sched.load_state_dict(st["sched"])
        if self.ema is not None and st.get("ema") is not None:
            self.ema.load_state_dict(st["ema"])
        self.step, self.elapsed = int(st["step"]), float(st["elapsed"])
        # keep only the log rows up to the checkpoint: the curve continues without duplicates
        lp = self.log_path()
        if lp.is_file():
            with lp.open(newline="") as fh:
                rows = [r for r in csv.DictReader(fh) if int(r["step"]) <= self.step]
            with atomic_write(lp, "w") as fh:
                w = csv.DictWriter(fh, LOG_FIELDS)
                w.writeheader()
                w.writerows(rows)
        log.info("resumed stage %s from %s at step %d", self.stage, p, self.step)
        return True

    # ------------------------------------------------------------------ loop
    def run(self) -> dict:
        """Train to ``total`` steps (resuming if possible). Returns the stage checkpoint payload."""
        cfg = self.cfg
        self.resume_dir.mkdir(parents=True, exist_ok=True)
        if not self.try_resume():
            self.log_path().unlink(missing_ok=True)
        new_log = not self.log_path().is_file()
        fh = self.log_path().open("a", newline="")
        writer = csv.DictWriter(fh, LOG_FIELDS)
        if new_log:
            writer.writeheader()
        n_frames = len(self.train)
        bar = tqdm(total=self.total, initial=self.step, desc=f"{cfg.method}:{self.stage}", mininterval=10,
                   disable=False)  # also in rule logs (stderr is a file there)
        try:
            while self.step < self.total:
                t0 = time.perf_counter()
                seed = cfg.seed * 1_000_003 + STAGES.index(self.stage) * 10_000_019 + self.step
                torch.manual_seed(seed)
                gen = torch.Generator().manual_seed(seed)
                k = int(torch.randint(0, n_frames, (1,), generator=gen))
                n_step = cfg.frames_per_step if self.stage == "head" else 1
                ks = [k] + [int(torch.randint(0, n_frames, (1,), generator=gen)) for _ in range(n_step - 1)]
                if (self.stage != "torso" and self.step >= cfg.occ_warmup
                        and self.step % cfg.occ_update_every == 0):
                    self.update_occupancy(gen)
                if n_step == 1:
                    loss, mse, n_rays = self.loss_step(k, gen)
                else:   # the step's rays spread over n_step frames, their losses averaged
                    parts = [self.loss_step(kk, gen, rays=cfg.rays_per_step // n_step) for kk in ks]
                    loss = sum(p[0] for p in parts) / n_step
                    mse = sum(p[1] for p in parts) / n_step
                    n_rays = sum(p[2] for p in parts)
                self.opt.zero_grad(set_to_none=True)
                loss.backward()
                self.opt.step()
                self.sched.step()
                self.step += 1
                if self.ema is not None and self.step % cfg.ema_update_every == 0:
                    self.ema.update()
                dt = time.perf_counter() - t0
                self.elapsed += dt
                if self.step % cfg.log_every == 0 or self.step == self.total:
                    writer.writerow({"step": self.step, "stage": self.stage, "loss": f"{loss.item():.6f}",
                                     "psnr": f"{psnr_from_mse(mse):.3f}", "rays_per_s": f"{n_rays / dt:.1f}",
                                     "lr": f"{self.opt.param_groups[-1]['lr']:.3e}",
                                     "elapsed_s": f"{self.elapsed:.2f}"})
                    fh.flush()
                bar.update(1)
                bar.set_postfix(loss=f"{loss.item():.4f}", psnr=f"{psnr_from_mse(mse):.2f}", refresh=False)
                if self.step % cfg.checkpoint_every == 0 and self.step < self.total:
                    self.save_resume()
        finally:
            bar.close()
            fh.close()
        if self.ema is not None and self.ema.num_updates:
            self.ema.copy_to()          # the stage's result: the averaged weights (as the anchors save)
        stages = {**self.prev_stages, self.stage: {"steps": self.total, "seconds": round(self.elapsed, 2)}}
        return checkpoint_payload(self.model, self.stage, stages, **self.extra)

    def finish(self, payload: dict, out: Path) -> None:
        """Write the stage checkpoint and its log atomically, then drop the resume state."""
        with atomic_path(out) as tmp:
            torch.save(payload, tmp)
        with atomic_path(self.model_dir / f"train_log_{self.stage}.csv") as tmp:
            shutil.copyfile(self.log_path(), tmp)
        self.resume_path().unlink(missing_ok=True)
        self.log_path().unlink(missing_ok=True)
        with contextlib.suppress(OSError):      # left when another stage is resumable
            self.resume_dir.rmdir()


def opacity_losses(alpha: torch.Tensor, head: torch.Tensor, cfg: TrainConfig) -> torch.Tensor:
    """Regularisers of the head rays' accumulated opacity ``alpha`` [R] in [0, 1]:

    * ``lambda_entropy`` x mean binary entropy ``-a log2 a - (1-a) log2 (1-a)`` (``a`` clamped to
      [1e-5, 1 - 1e-5]), as RAD-NeRF / ER-NeRF ``train_step`` (weight 1e-4 there);
    * ``lambda_head_alpha`` x mean ``(a - head)^2`` with ``head`` [R] bool the parsed head mask at
      the rays' pixels (our addition, see :class:`pipeline.models.configs.TrainConfig`).

    Returns a scalar tensor (0 when both weights are 0).
    """
    loss = alpha.new_zeros(())
    if cfg.lambda_entropy:
        a = alpha.clamp(1e-5, 1 - 1e-5)
        loss = loss + cfg.lambda_entropy * (-a * torch.log2(a) - (1 - a) * torch.log2(1 - a)).mean()
    if cfg.lambda_head_alpha:
        loss = loss + cfg.lambda_head_alpha * ((alpha - head.float()) ** 2).mean()
    return loss


def load_lpips(weights_dir: Path | None, device: torch.device):
    """LPIPS(AlexNet) for the lips loss, backbone from ``pipeline.weights.require("lpips_alexnet")``.

    Returns ``(module or None, status)``; status is ``"used"`` or ``"skipped: <reason>"``.
    """
    from pipeline.common.config import stage_weights_dir
    from pipeline.weights import WeightsMissing, require

    try:
        path = require("lpips_alexnet", stage_weights_dir(weights_dir))
    except (WeightsMissing, KeyError) as exc:
        reason = exc.reason if isinstance(exc, WeightsMissing) else "no 'lpips_alexnet' entry in the weights manifest"
        log.warning("lips LPIPS term skipped: %s", reason)
        return None, f"skipped: {reason}"
    from pipeline.common.tvcompat import import_torchvision

    import_torchvision()
    import lpips  # noqa: PLC0415 (after the torchvision shim)

    net = lpips.LPIPS(net="alex", pretrained=True, pnet_rand=True, verbose=False)
    sd = torch.load(path, map_location="cpu", weights_only=True)
    sd = {k.removeprefix("features."): v for k, v in sd.items() if k.startswith("features.")}
    for name, tensor in sd.items():
        idx, kind = name.split(".")
        for sl in (net.net.slice1, net.net.slice2, net.net.slice3, net.net.slice4, net.net.slice5):
            if idx in sl._modules:
                getattr(sl._modules[idx], kind).data.copy_(tensor)
    net = net.to(device).eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net, "used"


@torch.no_grad()
def evaluate(model: TalkingHeadModel, data: TalkingDataset, out_dir: Path, device: torch.device) -> dict:
    """Val-split PSNR of the full frame (head + torso over bc) vs gt_imgs, and of the mean-colour
    baseline (the mean train gt colour everywhere). Writes ``val_frame.png`` (rendered | gt of the
    middle val frame) and ``val/{img_id}.png`` for every evaluated frame.

    Returns ``{"val_psnr", "baseline_psnr", "val_frames", "val_seconds_per_frame"}`` (PSNR in dB,
    mean over frames of the per-frame PSNR).
    """
    from PIL import Image

    model.eval()
    val, tr = data.splits["val"], data.splits["train"]
    mean_col = (tr.gt.float().mean(dim=(0, 1, 2)) / 255).to(device)
    bc = data.bc.to(device)
    audio = data.audio.to(device)
    psnrs, base, secs = [], [], []
    (out_dir / "val").mkdir(parents=True, exist_ok=True)
    panels = []
    for k in range(len(val)):
        t0 = time.perf_counter()
        c2w = model.scene_pose(val.poses[k].to(device))
        out = model.render_frame(c2w, frame_conditions(model, val, k, audio, device), bc)
        secs.append(time.perf_counter() - t0)
        gt = val.gt[k].to(device).float() / 255
        psnrs.append(psnr_from_mse(((out["rgb"] - gt) ** 2).mean().item()))
        base.append(psnr_from_mse(((mean_col - gt) ** 2).mean().item()))
        panel = (torch.cat([out["rgb"], gt], 1).clamp(0, 1) * 255).byte().cpu().numpy()
        with atomic_path(out_dir / "val" / f"{val.ids[k]}.png") as tmp:
            Image.fromarray(panel).save(tmp, format="PNG")
        panels.append(panel)
    with atomic_path(out_dir / "val_frame.png") as tmp:
        Image.fromarray(panels[len(panels) // 2]).save(tmp, format="PNG")
    return {"val_psnr": float(np.mean(psnrs)), "baseline_psnr": float(np.mean(base)), "val_frames": len(val),
            "val_seconds_per_frame": float(np.mean(secs))}


def train_stage(stage: str, cfg: TrainConfig, data_root: Path, model_dir: Path, out: Path,
                init: Path | None = None, weights_dir: Path | None = None) -> dict:
    """Run one stage end to end (see module docstring); the torso stage also validates and writes
    ``train_log.csv`` (all stages) and ``train_manifest.json``. Returns the manifest/stage info."""
    device = resolve_device(cfg.device)
    splits = ("train", "val") if stage == "torso" else ("train",)
    data = TalkingDataset.for_config(data_root, cfg, splits, max_frames={"val": cfg.val_frames or None})
    log.info("%s/%s: %d train frames at %dx%d on %s", cfg.method, stage, len(data.splits["train"]),
             data.H, data.W, device)
    st = Stage(stage, cfg, data, model_dir, init, weights_dir, device)
    with torch.enable_grad():       # also when a caller (a render in the same process) disabled it
        payload = st.run()
    info = {"stage": stage, "steps": st.total, "seconds": payload["stages"][stage]["seconds"]}
    if stage == "torso":
        t0 = time.perf_counter()
        ev = evaluate(st.model, data, model_dir, device)
        log.info("val PSNR (head+torso, full frame vs gt_imgs, %d frames): %.2f dB; mean-colour baseline: %.2f dB",
                 ev["val_frames"], ev["val_psnr"], ev["baseline_psnr"])
        payload["val"] = ev
        rows = []
        for s in STAGES:
            p = model_dir / f"train_log_{s}.csv"
            if s == stage:
                p = st.log_path()
            if p.is_file():
                with p.open(newline="") as fh:
                    rows += list(csv.DictReader(fh))
        with atomic_write(model_dir / "train_log.csv", "w") as fh:
            w = csv.DictWriter(fh, LOG_FIELDS)
            w.writeheader()
            w.writerows(rows)
        stages = payload["stages"]
        info = {"method": cfg.method, "profile": cfg.profile, "device": str(device),
                "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                "torch_threads": torch.get_num_threads(), "resolution": [data.H, data.W],
                "steps": {s: v["steps"] for s, v in stages.items()},
                "seconds": {**{s: v["seconds"] for s, v in stages.items()},
                            "total": round(sum(v["seconds"] for v in stages.values()), 2),
                            "validation": round(time.perf_counter() - t0, 2)},
                "val_psnr_db": round(ev["val_psnr"], 3), "baseline_mean_colour_psnr_db": round(ev["baseline_psnr"], 3),
                "body_frame": st.model.meta.get("body_frame"),
                "val_frames": ev["val_frames"], "val_render_seconds_per_frame": round(ev["val_seconds_per_frame"], 3),
                "lips_lpips": payload.get("lips_lpips", "lips stage not run"),
                "config": dataclasses.asdict(cfg)}
        st.finish(payload, out)
        atomic_write_json(model_dir / "train_manifest.json", info)
        return info
    st.finish(payload, out)
    return info


def train_stages(cfg: TrainConfig, data_root: Path, model_dir: Path, stages: tuple[str, ...] = STAGES) -> dict:
    """Train ``stages`` (a tail of :data:`STAGES`, in order) into ``model_dir/{stage}.pt`` as the
    ``train_*`` rules chain them: each stage after the head starts from the previous stage's
    checkpoint in ``model_dir`` (which must exist for the first of ``stages`` unless it is the head).

    Returns:
        :func:`train_stage`'s info of the last stage (the torso's: its manifest, with
        ``val_psnr_db``).
    Raises:
        ValueError: ``stages`` is not a tail of :data:`STAGES` (e.g. lips without torso after it, or
            a name that is not a stage).
        InputError: as :func:`train_stage` (a missing or malformed dataset file, named).
    """
    if not stages or stages[0] not in STAGES or tuple(stages) != STAGES[STAGES.index(stages[0]):]:
        raise ValueError(f"train_stages: {stages!r} is not a tail of {STAGES!r}")
    info: dict = {}
    for stage in stages:
        k = STAGES.index(stage)
        init = model_dir / f"{STAGES[k - 1]}.pt" if k else None
        info = train_stage(stage, cfg, data_root, model_dir, model_dir / f"{stage}.pt", init=init)
    return info
