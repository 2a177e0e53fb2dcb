"""Data provider: an identity's dataset (ER-NeRF layout, :class:`pipeline.common.layout.DatasetLayout`)
validated and loaded into memory at the training resolution.

Every file is checked before training starts; a missing or mismatched file raises
:class:`InputError` naming it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from pipeline.common.errors import InputError
from pipeline.common.io import read_json
from pipeline.common.layout import AUDIO_FEATURE_FILES
from pipeline.models.conditions import get_condition
from pipeline.preprocess.parsing import read_parsing

#: mouth rows of the 68-point landmarks (iBUG 48..67)
MOUTH = slice(48, 68)


def load_image(path: Path, size: tuple[int, int], mode: str, resample=Image.BILINEAR) -> np.ndarray:
    """An image of the dataset as the trainer sees it: ``path`` converted to ``mode`` (``RGB``,
    ``RGBA``) and resized to ``size`` (H, W) with PIL's ``resample`` filter (bilinear, antialiased
    when shrinking). Returns [H, W, C] uint8.

    Raises:
        InputError: missing or unreadable file (named).
    """
    if not path.is_file():
        raise InputError(path, "file not found (referenced by transforms_*.json)")
    try:
        with Image.open(path) as im:
            im = im.convert(mode)
            if im.size != (size[1], size[0]):
                im = im.resize((size[1], size[0]), resample)
            return np.asarray(im)
    except OSError as exc:
        raise InputError(path, f"unreadable image ({exc})") from None


@dataclass
class SplitData:
    """One split at the training resolution (all tensors on CPU).

    Attributes:
        ids: [N] img_id per frame.
        poses: [N, 4, 4] float32 c2w (transforms units).
        aud_ids: [N] int64 rows of the audio feature array.
        conds: {name: [N, *shape] float32} raw per-frame values of the method's conditions other
            than audio (``eye``: [N, 1] AU45_r; :mod:`pipeline.models.conditions`).
        gt: [N, H, W, 3] uint8 gt_imgs; torso: [N, H, W, 4] uint8 torso_imgs (RGBA).
        head: [N, H, W] bool head pixels of parsing/{i}.png.
        mouth: [N, 4] int64 mouth box (row0, row1, col0, col1) from ori_imgs/{i}.lms.
        face: [N, 4] int64 lower-face box (row0, row1, col0, col1; end-exclusive) from
            ori_imgs/{i}.lms, RAD-NeRF's ``face_rect`` (nerf/provider.py): rows from the nose's
            base (landmarks 31-35) to the lowest landmark, columns over all 68, truncated to whole
            pixels at the split's resolution. RAD-NeRF's audio-coordinate loss acts on the rays
            outside it (:class:`pipeline.models.methods.rad_nerf.RadNeRFField`).
        landmark_box: [N, 4] int64 box of all 68 landmarks (row0, row1, col0, col1; end-exclusive,
            truncated as ``face``), ER-NeRF's ``face_rect`` (nerf_triplane/provider.py): its
            per-ray ambient terms act on the rays outside it and inside it
            (:class:`pipeline.models.methods.er_nerf.ERNeRFField`).
    """

    ids: list[int]
    poses: torch.Tensor
    aud_ids: torch.Tensor
    conds: dict[str, torch.Tensor]
    gt: torch.Tensor
    torso: torch.Tensor
    head: torch.Tensor
    mouth: torch.Tensor
    face: torch.Tensor
    landmark_box: torch.Tensor

    def __len__(self) -> int:
        return len(self.ids)


class TalkingDataset:
    """Validated dataset of one identity.

    Args:
        root: ``results/data/{identity}``.
        resolution: image side at training time (pixels); intrinsics are scaled.
        audio_feature: key of :data:`AUDIO_FEATURE_FILES`.
        splits: which transforms to load (``train``, ``val``).
        conditions: the method's per-frame conditions (:mod:`pipeline.models.conditions`); each
            one other than ``audio`` is read from its dataset artefact.
        method: the method's name (error messages name it with a missing artefact).
    Attributes:
        H, W, focal, cx, cy: intrinsics at the training resolution; ``bc`` [H, W, 3] float32 in
        [0, 1]; ``audio`` [N_aud, T, C] float32; ``splits`` {name: SplitData}.
    Raises:
        InputError: naming the first missing or mismatched file.
    """

    def __init__(self, root: str | Path, resolution: int, audio_feature: str = "mel",
                 splits: tuple[str, ...] = ("train", "val"), max_frames: dict | None = None,
                 conditions: tuple[str, ...] = ("audio", "eye"), method: str = "this method"):
        root = Path(root)
        self.root = root
        if not root.is_dir():
            raise InputError(root, "dataset folder not found (build it with the dataset rules first)")
        if audio_feature not in AUDIO_FEATURE_FILES:
            raise InputError(root, f"unknown audio feature {audio_feature!r}")
        tf = {s: self._read_transforms(root / f"transforms_{s}.json") for s in splits}
        first = tf[splits[0]]
        bc_path = root / "bc.jpg"
        if not bc_path.is_file():
            raise InputError(bc_path, "file not found (background image)")
        with Image.open(bc_path) as im:
            W0, H0 = im.size
        s = resolution / max(H0, W0)
        self.H, self.W = int(round(H0 * s)), int(round(W0 * s))
        self.scale = s
        self.focal = float(first["focal_len"]) * s
        self.cx, self.cy = float(first["cx"]) * s, float(first["cy"]) * s
        self.bc = torch.from_numpy(load_image(bc_path, (self.H, self.W), "RGB").astype(np.float32) / 255)
        aud_path = root / AUDIO_FEATURE_FILES[audio_feature]
        if not aud_path.is_file():
            raise InputError(aud_path, f"file not found (audio feature {audio_feature!r}; add it to preprocess.audio.features)")
        try:
            aud = np.load(aud_path)
        except ValueError as exc:
            raise InputError(aud_path, f"not a .npy array ({exc})") from None
        if aud.ndim == 2:
            aud = aud[:, None, :]
        if aud.ndim != 3:
            raise InputError(aud_path, f"expected [N, T, C] features, got shape {list(aud.shape)}")
        self.audio = torch.from_numpy(aud.astype(np.float32))
        max_aud = max(int(f.get("aud_id", f["img_id"])) for t in tf.values() for f in t["frames"])
        if max_aud >= len(self.audio):
            raise InputError(aud_path, f"{len(self.audio)} rows but transforms reference aud_id {max_aud}")
        max_img = max(int(f["img_id"]) for t in tf.values() for f in t["frames"])
        tables = {c: get_condition(c).read(root, max_img + 1, method) for c in conditions if c != "audio"}
        self.splits = {sp: self._load_split(root, tf[sp], tables, (max_frames or {}).get(sp)) for sp in splits}

    @classmethod
    def for_config(cls, root: str | Path, cfg, splits: tuple[str, ...] = ("train",),
                   max_frames: dict | None = None) -> "TalkingDataset":
        """The dataset at ``root`` as a stage trained with ``cfg`` (a
        :class:`pipeline.models.configs.TrainConfig`) loads it: ``cfg.resolution``,
        ``cfg.audio_feature``, and every per-frame condition the configured model reads
        (:func:`pipeline.models.methods.model_conditions`: the method's own plus those the config
        switches on, e.g. ``body_pose`` with ``torso_body_pose``). The trainer, the training
        benchmark and the GPU check load their data through it, so none can miss a condition.

        Raises:
            InputError: as the constructor, naming the first missing or mismatched file (a
                condition's artefact included).
        """
        from pipeline.models.methods import model_conditions  # noqa: PLC0415 (models import this module)

        return cls(root, cfg.resolution, cfg.audio_feature, splits, max_frames=max_frames,
                   conditions=model_conditions(cfg), method=cfg.method)

    @staticmethod
    def _read_transforms(path: Path) -> dict:
        data = read_json(path)
        for key in ("focal_len", "cx", "cy", "frames"):
            if key not in data:
                raise InputError(path, f"missing key {key!r} (ER-NeRF schema)")
        if not data["frames"]:
            raise InputError(path, "no frames")
        for f in data["frames"]:
            m = np.asarray(f.get("transform_matrix", []), dtype=np.float64)
            if "img_id" not in f or m.shape != (4, 4) or not np.isfinite(m).all():
                raise InputError(path, f"frame {f.get('img_id')!r}: needs img_id and a finite 4x4 transform_matrix")
        return data

    def _load_split(self, root: Path, tf: dict, tables: dict[str, np.ndarray], max_frames: int | None) -> SplitData:
        frames = tf["frames"]
        if max_frames and len(frames) > max_frames:
            pick = np.linspace(0, len(frames) - 1, max_frames).round().astype(int)
            frames = [frames[i] for i in pick]
        size = (self.H, self.W)
        ids, poses, auds, gts, torsos, heads, mouths, faces, boxes = [], [], [], [], [], [], [], [], []
        for f in frames:
            i = int(f["img_id"])
            ids.append(i)
            poses.append(np.asarray(f["transform_matrix"], np.float32))
            auds.append(int(f.get("aud_id", i)))
            gts.append(load_image(root / "gt_imgs" / f"{i}.jpg", size, "RGB"))
            torsos.append(load_image(root / "torso_imgs" / f"{i}.png", size, "RGBA"))
            par = read_parsing(root / "parsing" / f"{i}.png")             # labels, 1 = head
            if par.shape != size:
                par = np.asarray(Image.fromarray(par).resize(size[::-1], Image.NEAREST))
            heads.append(par == 1)
            lms_path = root / "ori_imgs" / f"{i}.lms"
            try:
                lms = np.loadtxt(lms_path, dtype=np.float32).reshape(-1, 2)
            except (OSError, ValueError):
                raise InputError(lms_path, "missing or not 68 rows of 'x y'") from None
            if lms.shape[0] != 68:
                raise InputError(lms_path, f"{lms.shape[0]} rows, expected 68")
            m = lms[MOUTH] * self.scale
            mouths.append([math.floor(m[:, 1].min()), math.ceil(m[:, 1].max()),
                           math.floor(m[:, 0].min()), math.ceil(m[:, 0].max())])
            f68 = lms * self.scale
            faces.append([int(f68[31:36, 1].min()), int(f68[:, 1].max()), int(f68[:, 0].min()), int(f68[:, 0].max())])
            boxes.append([int(f68[:, 1].min()), int(f68[:, 1].max()), int(f68[:, 0].min()), int(f68[:, 0].max())])
        conds = {c: torch.from_numpy(np.ascontiguousarray(t[ids])) for c, t in tables.items()}
        return SplitData(ids, torch.from_numpy(np.stack(poses)), torch.tensor(auds), conds,
                         torch.from_numpy(np.stack(gts)), torch.from_numpy(np.stack(torsos)),
                         torch.from_numpy(np.stack(heads)), torch.tensor(mouths, dtype=torch.int64),
                         torch.tensor(faces, dtype=torch.int64), torch.tensor(boxes, dtype=torch.int64))

    def scene_scale(self, head_box: float) -> float:
        """Scale from transforms units to scene units so that the head lies in [-1, 1]^3.

        The head's half-extent in world units is estimated from the parsing head masks (pixels)
        and the camera distance: ``half_px * dist / focal``, times ``head_box`` (margin for depth
        and pose changes)."""
        tr = self.splits["train"]
        dist = tr.poses[:, :3, 3].norm(dim=-1).median().item()
        ext = []
        for m in tr.head[:: max(1, len(tr) // 20)]:
            rows, cols = torch.nonzero(m, as_tuple=True)
            if rows.numel():
                ext.append(max(rows.max() - rows.min(), cols.max() - cols.min()).item() + 1)
        half_px = 0.5 * (float(np.median(ext)) if ext else 0.5 * max(self.H, self.W))
        return 1.0 / (head_box * half_px * dist / self.focal)
