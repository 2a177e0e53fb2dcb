"""Test helpers for the renderer: an analytic stand-in model and a small dataset cut from the real
sample video.

``SphereHead`` is a real ray caster, not a NeRF: the head is a sphere at the world origin coloured
by its world-space normal (so rotating the camera about the head changes the head's pixels but
not its silhouette), the torso a flat-coloured sphere below it. It implements the
:class:`~pipeline.models.api.TrainedTalkingHead` interface so the renderer's protocols, controls,
compositing and contract can be tested without a trained model.
"""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import torch

from pipeline.common.layout import DatasetLayout
from pipeline.models.api import FrameInput, TrainedTalkingHead
from pipeline.render.controls import pose_offset_matrix

CAM_DIST = 1.5
HEAD_R = 0.3
TORSO_C = (0.0, -0.75, 0.0)
TORSO_R = 0.45
TORSO_RGB = (0.2, 0.3, 0.6)


def _hit(o: torch.Tensor, d: torch.Tensor, c: torch.Tensor, r: float) -> torch.Tensor:
    """Distance along unit rays (o [3], d [P, 3]) to a sphere (centre c, radius r); inf on miss."""
    oc = o - c
    b = d @ oc
    disc = b * b - (oc @ oc - r * r)
    t = -b - torch.sqrt(disc.clamp_min(0))
    return torch.where((disc > 0) & (t > 0), t, torch.full_like(t, float("inf")))


class SphereHead(TrainedTalkingHead):
    """Analytic stand-in model (see module docstring); ``size`` pixels square."""

    method = "sphere"

    def __init__(self, size: int = 64, focal: float = 80.0, window: int = 8):
        self.meta = {"H": size, "W": size, "focal": focal, "cx": size / 2, "cy": size / 2,
                     "audio_feature": "mel", "audio_window": window, "device": "cpu", "profile": "test"}
        self.calls = 0

    def audio_window(self, features: torch.Tensor, index: int) -> torch.Tensor:
        w = self.meta["audio_window"]
        idx = torch.arange(index - w // 2, index - w // 2 + w).clamp(0, features.shape[0] - 1)
        return features[idx]

    @torch.no_grad()
    def render(self, frame: FrameInput, torso: bool = True) -> dict[str, torch.Tensor]:
        self.calls += 1
        m = self.meta
        H, W, f = m["H"], m["W"], m["focal"]
        v, u = torch.meshgrid(torch.arange(H) + 0.5, torch.arange(W) + 0.5, indexing="ij")
        d_cam = torch.stack([(u - m["cx"]) / f, -(v - m["cy"]) / f, -torch.ones_like(u)], -1).reshape(-1, 3)
        c2w = frame.c2w.float()
        d = torch.nn.functional.normalize(d_cam @ c2w[:3, :3].T, dim=-1)
        o = c2w[:3, 3]
        th = _hit(o, d, torch.zeros(3), HEAD_R)
        tt = _hit(o, d, torch.tensor(TORSO_C), TORSO_R) if torso else torch.full_like(th, float("inf"))
        head = (th < tt) & torch.isfinite(th)
        body = (tt <= th) & torch.isfinite(tt)
        n = torch.nn.functional.normalize(o + th.clamp(max=10)[:, None] * d, dim=-1)
        gain = 0.8 + 0.2 * torch.sigmoid(frame.audio.float().mean()) - 0.05 * float(frame.eye)
        head_rgb = ((0.5 + 0.5 * n) * gain).clamp(0, 1)
        bg = frame.background.reshape(-1, 3).float()
        rgb = torch.where(head[:, None], head_rgb, torch.where(body[:, None], torch.tensor(TORSO_RGB), bg))
        return {"rgb": rgb.reshape(H, W, 3), "head_alpha": head.float().reshape(H, W),
                "torso_alpha": body.float().reshape(H, W), "head_rgb": head_rgb.reshape(H, W, 3)}


def orbit_pose(yaw_deg: float, pitch_deg: float = 0.0) -> np.ndarray:
    """[4, 4] camera-to-world looking at the origin from distance CAM_DIST (OpenGL axes)."""
    c2w = np.eye(4, dtype=np.float32)
    c2w[2, 3] = CAM_DIST
    return pose_offset_matrix(yaw_deg, pitch_deg) @ c2w


def build_dataset(root: Path, video: Path, n_frames: int = 22, size: int = 256) -> DatasetLayout:
    """A small ER-NeRF-layout dataset from the first ``n_frames`` frames of a real video.

    Frames, ``aud.wav`` and the audio features are real (ffmpeg, dlib 68 landmarks, the dataset
    builder's ``extract_features``); poses are an orbit (the stand-in model's camera), AU45_r a
    ramp, ``torso_imgs`` the frames with a central head ellipse cut out, ``bc.jpg`` a blur.
    The last 2 frames are the validation split.
    """
    import cv2
    import dlib
    import face_recognition_models

    from pipeline.preprocess.audio_features import extract_features, load_audio_16k_mono

    data = DatasetLayout(root, "German")
    data.ori_imgs.mkdir(parents=True, exist_ok=True)
    for d in (data.gt_imgs, data.torso_imgs):
        d.mkdir(exist_ok=True)
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(video), "-frames:v", str(n_frames),
                    "-vf", f"scale={size}:{size}", "-start_number", "0", str(data.ori_imgs / "%d.jpg")], check=True)
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(video), "-t", f"{n_frames / 25:.3f}", "-ac", "1",
                    "-ar", "16000", str(data.audio)], check=True)
    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(face_recognition_models.pose_predictor_model_location())
    for i in range(n_frames):
        img = cv2.imread(str(data.img(i)))
        rects = detector(img, 1)
        assert rects, f"no face in frame {i}"
        pts = predictor(img, rects[0])
        np.savetxt(data.lms(i), [[p.x, p.y] for p in pts.parts()], fmt="%d")
        cv2.imwrite(str(data.gt_img(i)), img)
        rgba = cv2.cvtColor(img, cv2.COLOR_BGR2BGRA)
        cv2.ellipse(rgba, (size // 2, size // 2 - size // 8), (size // 5, size // 4), 0, 0, 360, (0, 0, 0, 0), -1)
        cv2.imwrite(str(data.torso_img(i)), rgba)
    cv2.imwrite(str(data.bc), cv2.GaussianBlur(cv2.imread(str(data.img(0))), (0, 0), 8))
    poses = [orbit_pose(4.0 * np.sin(i / 3.0), 2.0 * np.cos(i / 4.0)) for i in range(n_frames)]
    n_val = 2
    frames = [{"img_id": i, "aud_id": i, "transform_matrix": poses[i].tolist()} for i in range(n_frames)]
    for path, sub in ((data.transforms_train, frames[:-n_val]), (data.transforms_val, frames[-n_val:])):
        path.write_text(json.dumps({"focal_len": 80.0, "cx": size / 2, "cy": size / 2, "frames": sub}))
    au = np.linspace(0.0, 2.0, n_frames)
    data.au.write_text("frame, timestamp, AU45_r\n" + "".join(f"{i + 1}, {i / 25:.2f}, {a:.3f}\n" for i, a in enumerate(au)))
    audio = load_audio_16k_mono(data.audio)
    np.save(data.audio_feature("mel"), extract_features(audio, n_frames, "mel", {"features": ["mel"]}, fps=25))
    return data
