"""Render controls and compositing: head-pose offset, eye-openness override, background images,
the face mask of ``paste_back``, and the ping-pong pose order of cross-driven renders.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.common.errors import InputError

#: AU45_r value taken as "eyes closed": ER-NeRF clips AU45_r to [0, 2] before normalising the eye
#: area (``nerf_triplane/provider.py``), so 2 is the most closed value the models have seen.
AU45_CLOSED = 2.0


@dataclass(frozen=True)
class Controls:
    """User controls of a render (config ``render.controls``); all optional.

    Attributes:
        background: image file composited behind head and torso instead of the dataset's
            ``bc.jpg`` (any format OpenCV reads; resized to the render resolution).
        eye_openness: 0 (closed) .. 1 (open) for every frame, instead of the driving AU45_r.
        yaw_deg: head-pose offset, degrees: rotation of the camera about the head centre around
            the world's vertical (y) axis. Positive values move the camera to the subject's left,
            so the head appears turned to its right.
        pitch_deg: degrees, rotation of the camera about the head centre around the world x axis.
        emotion: ``category[:level]`` (``happy:3``) for every frame, instead of the dataset's
            per-frame label (models with an ``emotion`` condition, AED-NeRF; others ignore it).
    """

    background: str | None = None
    eye_openness: float | None = None
    yaw_deg: float = 0.0
    pitch_deg: float = 0.0
    emotion: str | None = None

    @classmethod
    def from_config(cls, cfg: dict[str, Any] | None) -> "Controls":
        """From config ``render.controls`` (missing keys take the defaults)."""
        cfg = dict(cfg or {})
        unknown = set(cfg) - {"background", "eye_openness", "yaw_deg", "pitch_deg", "emotion"}
        if unknown:
            raise ValueError(f"unknown render controls: {sorted(unknown)}")
        eo = cfg.get("eye_openness")
        if eo is not None and not 0.0 <= float(eo) <= 1.0:
            raise ValueError(f"eye_openness must be in [0, 1], got {eo}")
        emo = cfg.get("emotion")
        if emo is not None:
            from pipeline.common.emotion import parse_label

            cat, level = parse_label(str(emo))            # ValueError naming the bad label
            emo = f"{cat}:{level}"
        return cls(background=cfg.get("background"), eye_openness=None if eo is None else float(eo),
                   yaw_deg=float(cfg.get("yaw_deg") or 0.0), pitch_deg=float(cfg.get("pitch_deg") or 0.0),
                   emotion=emo)

    def as_manifest(self) -> dict[str, Any]:
        """The controls in effect (keys at their defaults left out; {} for a plain render)."""
        out: dict[str, Any] = {}
        if self.background:
            out["background"] = str(self.background)
        if self.eye_openness is not None:
            out["eye_openness"] = self.eye_openness
            out["eye_au45"] = self.eye_value(0.0)
        if self.yaw_deg:
            out["yaw_deg"] = self.yaw_deg
        if self.pitch_deg:
            out["pitch_deg"] = self.pitch_deg
        if self.emotion:
            out["emotion"] = self.emotion
        return out

    def eye_value(self, driving: float) -> float:
        """AU45_r to render with: the driving value, or ``(1 - eye_openness) * AU45_CLOSED``."""
        if self.eye_openness is None:
            return float(driving)
        return (1.0 - self.eye_openness) * AU45_CLOSED

    def apply(self, cond, value: np.ndarray) -> np.ndarray:
        """One frame's raw value of condition ``cond`` (:class:`pipeline.models.conditions.Condition`)
        with the render control named by ``cond.control`` applied (unchanged when that control is
        not set): ``eye_openness`` -> AU45_r :meth:`eye_value`, ``emotion`` -> [8] code."""
        setting = getattr(self, cond.control, None) if cond.control else None
        if setting is None:
            return value
        return np.full_like(np.asarray(value, np.float32), CONTROL_VALUES[cond.control](self))

    def pose_offset(self, center: np.ndarray | None = None) -> np.ndarray:
        """[4, 4] float32 world transform ``T(c) R_y(yaw) R_x(pitch) T(-c)`` to left-multiply a
        camera-to-world matrix with (identity when both angles are 0).

        Args:
            center: [3] head centre in world units (default: the origin, where face tracking puts
                the head in the ER-NeRF convention).
        """
        return pose_offset_matrix(self.yaw_deg, self.pitch_deg, center)


#: render control -> the raw condition value it sets for every frame
CONTROL_VALUES = {"eye_openness": lambda c: c.eye_value(0.0), "emotion": lambda c: _emotion_code(c.emotion)}


def _emotion_code(label: str) -> np.ndarray:
    from pipeline.common.emotion import label_code

    return label_code(label)


def pose_offset_matrix(yaw_deg: float, pitch_deg: float, center: np.ndarray | None = None) -> np.ndarray:
    """See :meth:`Controls.pose_offset`. Returns [4, 4] float32."""
    y, p = math.radians(yaw_deg), math.radians(pitch_deg)
    ry = np.array([[math.cos(y), 0, math.sin(y)], [0, 1, 0], [-math.sin(y), 0, math.cos(y)]])
    rx = np.array([[1, 0, 0], [0, math.cos(p), -math.sin(p)], [0, math.sin(p), math.cos(p)]])
    c = np.zeros(3) if center is None else np.asarray(center, dtype=np.float64).reshape(3)
    m = np.eye(4)
    m[:3, :3] = ry @ rx
    m[:3, 3] = c - m[:3, :3] @ c
    return m.astype(np.float32)


def ping_pong(i: int, n: int) -> int:
    """Index into a sequence of ``n`` items played forward, then backward, then forward...

    0, 1, .., n-1, n-1, n-2, .., 0, 0, 1, ... (the anchors' ``mirror_index`` in
    ER-NeRF/RAD-NeRF ``provider.py``, used when the driving audio outlasts the poses).
    """
    if n <= 0:
        raise ValueError("empty sequence")
    turn, res = divmod(i, n)
    return res if turn % 2 == 0 else n - res - 1


def load_image(path: str | Path, size: tuple[int, int]) -> np.ndarray:
    """Read an image as [H, W, 3] float32 RGB in [0, 1], resized to ``size`` = (W, H).

    Raises:
        InputError: missing or unreadable file.
    """
    import cv2

    from pipeline.common.io import read_image_bgr

    img = read_image_bgr(path)
    if (img.shape[1], img.shape[0]) != tuple(size):
        shrink = img.shape[1] > size[0]
        img = cv2.resize(img, tuple(size), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB).astype(np.float32) / 255.0


def read_lms(path: str | Path) -> np.ndarray:
    """68 iBUG landmarks of a dataset frame (``ori_imgs/{i}.lms``, rows "x y"): [68, 2] pixels."""
    try:
        pts = np.loadtxt(path, dtype=np.float32).reshape(-1, 2)
    except (OSError, ValueError) as exc:
        raise InputError(path, f"unreadable landmarks file ({exc})") from None
    if pts.shape[0] != 68:
        raise InputError(path, f"expected 68 landmarks, found {pts.shape[0]}")
    return pts


def face_mask(lms: np.ndarray, src_size: tuple[int, int], size: tuple[int, int],
              feather: float = 0.06) -> np.ndarray:
    """Feathered face-region mask for ``paste_back``.

    The region is the convex hull of the 68 landmarks (jaw line 0-16 and eyebrows 17-26, the
    brows lifted by 1/4 of the face height to take the forehead), eroded and blurred by
    ``feather`` x the face width so the seam fades out inside the face.

    Args:
        lms: [68, 2] landmarks in pixels of an image of ``src_size`` = (W, H).
        size: (W, H) of the mask.
    Returns:
        [H, W] float32 in [0, 1].
    """
    import cv2

    sx, sy = size[0] / src_size[0], size[1] / src_size[1]
    pts = lms.astype(np.float64) * [sx, sy]
    face_h = pts[8, 1] - pts[17:27, 1].min()
    brows = pts[17:27].copy()
    brows[:, 1] -= 0.25 * face_h
    hull = cv2.convexHull(np.concatenate([pts[:17], brows]).astype(np.float32)).astype(np.int32)
    mask = np.zeros((size[1], size[0]), np.float32)
    cv2.fillConvexPoly(mask, hull, 1.0)
    face_w = max(pts[:17, 0].max() - pts[:17, 0].min(), 1.0)
    r = max(int(round(feather * face_w)), 1)
    mask = cv2.erode(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1)))
    mask = cv2.GaussianBlur(mask, (0, 0), sigmaX=r)
    return np.clip(mask, 0.0, 1.0)


def paste(src: np.ndarray, dst: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``mask * src + (1 - mask) * dst`` for [H, W, 3] images and an [H, W] mask in [0, 1]."""
    m = mask[..., None]
    return src * m + dst * (1.0 - m)
