"""The render loop: a :class:`~pipeline.models.api.TrainedTalkingHead`, a protocol
:class:`~pipeline.render.protocol.Sequence`, compositing and controls -> frames and timings.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch
from tqdm import tqdm

from pipeline.common.layout import DatasetLayout
from pipeline.models.api import FrameInput, TrainedTalkingHead
from pipeline.render.controls import Controls, face_mask, load_image, paste, read_lms
from pipeline.render.protocol import Sequence

log = logging.getLogger(__name__)


@dataclass
class RenderStats:
    """Timings of one render (filled while frames are produced).

    Attributes:
        render_seconds: wall time of the model's ``render`` calls only, seconds (no image I/O,
            no compositing outside the model, no warm-up frame; CUDA synchronised).
        n_frames: frames rendered and timed.
        warmup_seconds: the untimed first call (graph build, cache fill).
    """

    render_seconds: float = 0.0
    n_frames: int = 0
    warmup_seconds: float = 0.0

    @property
    def fps_render(self) -> float | None:
        """Frames per second of model time (None before any frame)."""
        return self.n_frames / self.render_seconds if self.render_seconds > 0 else None


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def model_device(model: TrainedTalkingHead) -> torch.device:
    """The device the model renders on (meta ``device``, default cpu)."""
    return torch.device(str(model.meta.get("device", "cpu")))


class Renderer:
    """Renders a :class:`Sequence` with one model, a compositing mode and controls.

    Args:
        model: the trained model; frames are ``model.meta['H'] x model.meta['W']``.
        data: the identity's dataset (background ``bc.jpg``, ``gt_imgs``, ``torso_imgs``,
            ``ori_imgs`` and their ``.lms`` landmarks, at the dataset's resolution).
        compositing: ``full`` (model head + torso over the background), ``head_on_gt`` (model
            head, no model torso, over the ground-truth torso and background of the pose's
            dataset frame: ``torso_imgs/{i}.png`` over the background, ER-NeRF's head-only
            test setting; ``gt_imgs/{i}.jpg`` when torso_imgs is absent) or ``paste_back`` (model
            head over the original frame ``ori_imgs/{i}.jpg``, pasted into it with a feathered
            face-region mask).
        controls: background / eye / head-pose controls.
    """

    def __init__(self, model: TrainedTalkingHead, data: DatasetLayout, compositing: str = "full",
                 controls: Controls | None = None):
        if compositing not in ("full", "head_on_gt", "paste_back"):
            raise ValueError(f"unknown compositing mode {compositing!r}")
        self.model, self.data, self.compositing = model, data, compositing
        self.controls = controls or Controls()
        self.size = (int(model.meta["W"]), int(model.meta["H"]))
        self.device = model_device(model)
        bg_path = self.controls.background or data.bc
        self.background = load_image(bg_path, self.size)
        center = model.meta.get("head_center")
        self.offset = torch.from_numpy(self.controls.pose_offset(center))
        self._src_size: tuple[int, int] | None = None

    # ---- per-frame inputs ------------------------------------------------------------------
    def _backdrop(self, frame_id: int) -> np.ndarray:
        """[H, W, 3] float32 image the model renders over for dataset frame ``frame_id``."""
        if self.compositing == "full":
            return self.background
        if self.compositing == "paste_back":
            return load_image(self.data.img(frame_id), self.size)
        torso = self.data.torso_img(frame_id)
        if torso.is_file():
            import cv2

            rgba = cv2.imread(str(torso), cv2.IMREAD_UNCHANGED)
            if rgba is not None and rgba.ndim == 3 and rgba.shape[2] == 4:
                rgba = cv2.resize(rgba, self.size, interpolation=cv2.INTER_AREA)
                rgb = cv2.cvtColor(rgba[..., :3], cv2.COLOR_BGR2RGB).astype(np.float32) / 255.0
                return paste(rgb, self.background, rgba[..., 3].astype(np.float32) / 255.0)
        return load_image(self.data.gt_img(frame_id), self.size)

    def frame_input(self, seq: Sequence, i: int, features: torch.Tensor, backdrop: np.ndarray) -> FrameInput:
        """The model input of frame ``i`` (pose offset and condition controls applied)."""
        from pipeline.models.conditions import get_condition

        c2w = self.offset @ torch.from_numpy(seq.poses[i])
        conds = {n: torch.from_numpy(np.asarray(self.controls.apply(get_condition(n), v[i]), np.float32)).to(self.device)
                 for n, v in seq.conditions.items()}
        return FrameInput(
            c2w=c2w.to(self.device),
            audio=self.model.audio_window(features, int(seq.feature_index[i])),
            background=torch.from_numpy(backdrop).to(self.device),
            conditions=conds,
        )

    def _finish(self, rgb: np.ndarray, frame_id: int, backdrop: np.ndarray) -> np.ndarray:
        if self.compositing != "paste_back":
            return rgb
        lms_path = self.data.lms(frame_id)
        if self._src_size is None:
            import cv2

            img = cv2.imread(str(self.data.img(frame_id)), cv2.IMREAD_COLOR)
            self._src_size = (img.shape[1], img.shape[0]) if img is not None else self.size
        mask = face_mask(read_lms(lms_path), self._src_size, self.size)
        return paste(rgb, backdrop, mask)

    # ---- the loop ----------------------------------------------------------------------------
    @torch.no_grad()
    def frames(self, seq: Sequence, stats: RenderStats | None = None,
               progress: bool = True) -> Iterator[np.ndarray]:
        """Yield the [H, W, 3] float32 frames in [0, 1] of ``seq``; ``stats`` collects timings.

        The first frame is rendered once untimed (warm-up) before the timed pass.
        """
        stats = stats if stats is not None else RenderStats()
        torso = self.compositing == "full"
        features = torch.from_numpy(seq.features).to(self.device)
        for i in tqdm(range(len(seq)), desc="render", unit="frame", disable=not progress):
            fid = int(seq.frame_ids[i])
            backdrop = self._backdrop(fid)
            inp = self.frame_input(seq, i, features, backdrop)
            if i == 0:
                t0 = time.perf_counter()
                self.model.render(inp, torso=torso)
                _sync(self.device)
                stats.warmup_seconds = time.perf_counter() - t0
            t0 = time.perf_counter()
            out = self.model.render(inp, torso=torso)
            _sync(self.device)
            stats.render_seconds += time.perf_counter() - t0
            stats.n_frames += 1
            rgb = out["rgb"].detach().float().clamp(0, 1).cpu().numpy()
            yield self._finish(rgb, fid, backdrop)

    def render_all(self, seq: Sequence) -> tuple[list[np.ndarray], RenderStats]:
        """All frames of ``seq`` as a list (small sequences, tests) and their timings."""
        stats = RenderStats()
        return list(self.frames(seq, stats, progress=False)), stats
