"""A small real training set in the ER-NeRF layout, built directly from a video (development and
tests of the trainer; the real dataset comes from the dataset-builder rules).

Poses are MediaPipe FaceLandmarker facial transformation matrices (canonical face in cm ->
camera, OpenGL convention, vertical field of view 63 degrees); c2w = inverse (head = world).
Head = face-mesh hull plus person pixels above the chin (hair), torso = the other person pixels
(MediaPipe selfie segmentation), background = per-pixel median of non-person pixels.
AU45_r = 3 x mean eye-blink blendshape; aud_mel.npy = 16 log-mel windows (10 ms hop) of 80 bins
centred on each frame; body_pose.npy = MediaPipe Pose landmarks (:mod:`pipeline.preprocess.body_pose`);
body_flow.npy = the body cells' optical flow (:mod:`pipeline.preprocess.body_flow`).

CLI: ``python -m pipeline.train.devdata --video V --out DIR [--frames N]``.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

from pipeline.common.config import PROJECT_ROOT
from pipeline.common.io import atomic_write, atomic_write_json
from pipeline.common.log import run_main, setup_logging

MODELS = PROJECT_ROOT / "resources" / "models"
#: MediaPipe mesh indices approximating the 68 iBUG landmarks (jaw, brows, nose, eyes, lips)
MESH_TO_68 = [162, 234, 93, 58, 172, 136, 149, 148, 152, 377, 378, 365, 397, 288, 323, 454, 389, 71, 63, 105,
              66, 107, 336, 296, 334, 293, 301, 168, 197, 5, 4, 75, 97, 2, 326, 305, 33, 160, 158, 133, 153, 144,
              362, 385, 387, 263, 373, 380, 61, 39, 37, 0, 267, 269, 291, 405, 314, 17, 84, 181, 78, 82, 13, 312,
              308, 317, 14, 87]
FOV_DEG = 63.0


def build(video: Path, out: Path, n_frames: int | None = None, log=None) -> Path:
    """Write the dataset folder ``out`` from the first ``n_frames`` frames of ``video``."""
    import av
    import cv2
    import librosa
    import mediapipe as mp
    from mediapipe.tasks.python import BaseOptions, vision
    from PIL import Image

    frames = []
    with av.open(str(video)) as c:
        fps = float(c.streams.video[0].average_rate)
        for f in c.decode(video=0):
            frames.append(f.to_ndarray(format="rgb24"))
            if n_frames and len(frames) >= n_frames:
                break
    H, W = frames[0].shape[:2]
    lm = vision.FaceLandmarker.create_from_options(vision.FaceLandmarkerOptions(
        base_options=BaseOptions(model_asset_path=str(MODELS / "face_landmarker.task")),
        output_face_blendshapes=True, output_facial_transformation_matrixes=True, num_faces=1))
    seg = vision.ImageSegmenter.create_from_options(vision.ImageSegmenterOptions(
        base_options=BaseOptions(model_asset_path=str(MODELS / "selfie_segmentation.tflite")),
        output_confidence_masks=True))
    mats, meshes, blinks, persons = [], [], [], []
    for img in frames:
        mimg = mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(img))
        r = lm.detect(mimg)
        if not r.face_landmarks:
            raise RuntimeError(f"{video}: no face in a frame")
        meshes.append(np.array([[p.x * W, p.y * H] for p in r.face_landmarks[0]], np.float32))
        mats.append(np.array(r.facial_transformation_matrixes[0], np.float64))
        bs = {c.category_name: c.score for c in r.face_blendshapes[0]}
        blinks.append(3.0 * 0.5 * (bs["eyeBlinkLeft"] + bs["eyeBlinkRight"]))
        persons.append(seg.segment(mimg).confidence_masks[0].numpy_view().copy() > 0.5)
    for d in ("ori_imgs", "gt_imgs", "torso_imgs", "parsing"):
        (out / d).mkdir(parents=True, exist_ok=True)
    heads = []
    for i, (img, mesh, person) in enumerate(zip(frames, meshes, persons)):
        hull = np.zeros((H, W), np.uint8)
        cv2.fillConvexPoly(hull, cv2.convexHull(mesh.astype(np.int32)), 1)
        chin = mesh[152, 1]
        rows = np.arange(H)[:, None] <= chin
        head = hull.astype(bool) | (person & rows)
        heads.append(head)
    persons_a, heads_a = np.stack(persons), np.stack(heads)
    stack = np.stack(frames).astype(np.float32)
    bgmask = ~persons_a
    bc = np.zeros((H, W, 3), np.float32)
    for ch in range(3):
        v = np.where(bgmask, stack[..., ch], np.nan)
        med = np.nanmedian(v, axis=0)
        bc[..., ch] = np.where(np.isnan(med), np.nanmedian(v), med)
    bc_u8 = bc.clip(0, 255).astype(np.uint8)
    Image.fromarray(bc_u8).save(out / "bc.jpg", quality=95)
    for i, img in enumerate(frames):
        person, head = persons_a[i], heads_a[i]
        torso = person & ~head
        Image.fromarray(img).save(out / "ori_imgs" / f"{i}.jpg", quality=95)
        gt = np.where(person[..., None], img, bc_u8)
        Image.fromarray(gt).save(out / "gt_imgs" / f"{i}.jpg", quality=95)
        Image.fromarray(np.dstack([img, torso.astype(np.uint8) * 255])).save(out / "torso_imgs" / f"{i}.png")
        labels = np.zeros((H, W), np.uint8)          # 0 background, 1 head, 3 torso
        labels[head] = 1
        labels[torso] = 3
        from pipeline.preprocess.parsing import write_parsing

        write_parsing(out / "parsing" / f"{i}.png", labels)
        np.savetxt(out / "ori_imgs" / f"{i}.lms", meshes[i][MESH_TO_68], fmt="%.2f")
    focal = (H / 2) / math.tan(math.radians(FOV_DEG) / 2)
    n = len(frames)
    n_val = max(1, round(n / 11))
    recs = [{"img_id": i, "aud_id": i, "transform_matrix": np.linalg.inv(mats[i]).tolist()} for i in range(n)]
    for name, sl in (("transforms_train.json", recs[:n - n_val]), ("transforms_val.json", recs[n - n_val:])):
        atomic_write_json(out / name, {"focal_len": focal, "cx": W / 2, "cy": H / 2, "frames": sl})
    with atomic_write(out / "au.csv", "w") as fh:
        fh.write("frame, timestamp, confidence, success, AU45_r\n")
        for i, b in enumerate(blinks):
            fh.write(f"{i + 1}, {i / fps:.3f}, 0.98, 1, {b:.2f}\n")
    wav, sr = librosa.load(str(video), sr=16000, mono=True)
    mel = librosa.power_to_db(librosa.feature.melspectrogram(y=wav, sr=sr, n_fft=400, hop_length=160, n_mels=80)).T
    mel = ((mel - mel.mean()) / (mel.std() + 1e-6)).astype(np.float32)       # [T, 80], 100 Hz
    idx = np.clip((np.arange(n)[:, None] / fps * 100).round().astype(int) + np.arange(-8, 8)[None], 0, len(mel) - 1)
    np.save(out / "aud_mel.npy", mel[idx])
    from pipeline.preprocess.body_pose import fill_missing, track

    body, found = track(frames, n)
    body = fill_missing(body, found)
    np.save(out / "body_pose.npy", body)
    from pipeline.preprocess.body_flow import compute as body_flow
    from pipeline.preprocess.body_pose import SHOULDERS
    from pipeline.preprocess.parsing import read_parsing

    flow, _ = body_flow(lambda i: np.ascontiguousarray(frames[i][..., ::-1]), n,
                        lambda i: read_parsing(out / "parsing" / f"{i}.png"), body[:, list(SHOULDERS), :2].reshape(n, 4))
    np.save(out / "body_flow.npy", flow)
    (out / "devdata.json").write_text(json.dumps({"video": str(video), "frames": n}))
    if log:
        log.info("dev dataset: %d frames, focal %.1f -> %s", n, focal, out)
    return out


def cached(base: Path, n_frames: int = 24, video: Path | None = None) -> Path:
    """``base/dev_German`` built once (tests share it across modules of one session)."""
    out = Path(base) / f"dev_German_{n_frames}"
    if not (out / "devdata.json").is_file():
        build(video or PROJECT_ROOT / "resources" / "sample" / "German_12s.mp4", out, n_frames)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--video", type=Path, default=PROJECT_ROOT / "resources" / "sample" / "German_12s.mp4")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--frames", type=int, default=None)
    a = ap.parse_args(argv)
    build(a.video, a.out, a.frames, setup_logging("pipeline.train.devdata"))
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
