"""Face analysis shared by the one-shot backends and metrics: the reference photo's single-face
check, MediaPipe mesh / blendshape / pose tracks of driving videos, the anchor frame, mouth opening,
head-rotation angles and 2-D similarities.

Everything runs on the project's MediaPipe toolkit (:mod:`pipeline.preprocess.backends.mediapipe_mesh`,
``resources/models/face_landmarker.task``) and the BlazeFace detector of the crop stage
(:mod:`pipeline.preprocess.faces`).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

from pipeline.common.errors import InputError

#: inner lip contour of the 478-point mesh, in order around the mouth opening (MediaPipe's
#: FACEMESH_LIPS inner loop: upper lip left to right, then lower lip right to left)
INNER_LIP = np.array([78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308, 324, 318, 402, 317, 14, 87, 178, 88, 95])
#: outer lip contour, in order
OUTER_LIP = np.array([61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291, 375, 321, 405, 314, 17, 84, 181, 91, 146])
#: inner-lip midpoints (upper, lower) and the outer eye corners (normaliser of the mouth opening)
LIP_MID = (13, 14)
EYE_CORNERS = (33, 263)

#: blendshapes that do not describe the expression of the face (gaze, and the neutral class)
_NON_EXPRESSION = ("_neutral", "eyeLook")


@functools.lru_cache(maxsize=1)
def stable_ids() -> np.ndarray:
    """The 33 landmarks MediaPipe's geometry pipeline uses for the rigid head pose (forehead, nose
    bridge, eye corners, cheekbones), read from ``face_landmarker.task``
    (:func:`pipeline.preprocess.tracking.load_canonical_face`); they move least with expressions."""
    from pipeline.preprocess.tracking import load_canonical_face

    return np.asarray(load_canonical_face().basis_ids, np.int64)


def read_image(path: str | Path) -> np.ndarray:
    """[H, W, 3] uint8 RGB of any image OpenCV reads (png, jpg, webp, bmp, tiff; alpha dropped).

    Raises:
        InputError: missing or unreadable file.
    """
    import cv2

    from pipeline.common.io import read_image_bgr

    return cv2.cvtColor(read_image_bgr(path, "reference photo not found"), cv2.COLOR_BGR2RGB)


def resize_max(rgb: np.ndarray, size: int | None) -> np.ndarray:
    """Scale so that the longer side is ``size`` pixels (None: unchanged); area / cubic filter."""
    import cv2

    if not size or max(rgb.shape[:2]) == size:
        return rgb
    s = size / max(rgb.shape[:2])
    w, h = max(1, round(rgb.shape[1] * s)), max(1, round(rgb.shape[0] * s))
    return cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_CUBIC)


@dataclass
class FaceTrack:
    """MediaPipe results of a sequence of frames.

    Attributes:
        mesh: float32 [N, 478, 3], x/y in pixels of the frames, z relative depth (pixels).
        blendshapes: float32 [N, 52] in [0, 1].
        pose: float32 [N, 4, 4] facial transformation matrices (canonical face -> camera, cm).
        ok: bool [N]; False where no face was found (those rows repeat the previous found frame).
        names: the 52 blendshape names.
        size: (W, H) of the frames.
    """

    mesh: np.ndarray
    blendshapes: np.ndarray
    pose: np.ndarray
    ok: np.ndarray
    names: list[str] = field(default_factory=list)
    size: tuple[int, int] = (0, 0)

    def __len__(self) -> int:
        return len(self.mesh)

    def bs(self, name: str) -> np.ndarray:
        """[N] scores of one blendshape (e.g. ``jawOpen``)."""
        return self.blendshapes[:, self.names.index(name)]


def track_frames(frames: Iterable[np.ndarray], video_mode: bool = True, detect_side: int = 256) -> FaceTrack:
    """MediaPipe Face Landmarker on every frame.

    Args:
        frames: uint8 RGB [H, W, 3] frames, all the same size.
        video_mode: MediaPipe VIDEO mode (tracking between frames) else independent frames.
        detect_side: frames with a longer side below this are upscaled (cubic) before detection,
            so 128-pixel renders give landmarks; results are in the frames' own pixels.
    Returns:
        the track; frames without a face repeat the last found face (``ok`` False), leading ones
        the first found face.
    Raises:
        ValueError: no frames, or no face in any frame.
    """
    import cv2

    from pipeline.preprocess.backends.mediapipe_mesh import MeshDetector

    meshes, bss, poses, oks = [], [], [], []
    size = None
    with MeshDetector(video_mode=video_mode) as det:
        for i, img in enumerate(frames):
            h, w = img.shape[:2]
            size = (w, h)
            s = detect_side / max(h, w) if max(h, w) < detect_side else 1.0
            big = cv2.resize(img, (round(w * s), round(h * s)), interpolation=cv2.INTER_CUBIC) if s != 1.0 else img
            r = det.detect(big, i)
            if r is None:
                meshes.append(None), bss.append(None), poses.append(None), oks.append(False)
                continue
            m = r.mesh.copy()
            m /= s
            meshes.append(m), bss.append(r.blendshapes), poses.append(r.pose), oks.append(True)
        names = list(det.blendshape_names or [])
    if not oks:
        raise ValueError("no frames")
    if not any(oks):
        raise ValueError("no face found in any frame")
    first = next(i for i, o in enumerate(oks) if o)
    last = first
    for i in range(len(oks)):
        if oks[i]:
            last = i
        else:
            meshes[i], bss[i], poses[i] = meshes[last], bss[last], poses[last]
    return FaceTrack(np.stack(meshes).astype(np.float32), np.stack(bss).astype(np.float32),
                     np.stack(poses).astype(np.float32), np.array(oks), names, size)


def photo_face(rgb: np.ndarray, path: str | Path) -> FaceTrack:
    """The single face of a reference photo (mesh, blendshapes, pose), as a one-frame track.

    Args:
        rgb: uint8 RGB [H, W, 3].
        path: the photo's file, named in errors.
    Raises:
        InputError: ``"<path>: no face found in the reference photo"`` or ``"<path>: N faces in the
            reference photo; one is needed"`` (BlazeFace full-range, faces at least 40% of the
            largest one's size count, as in the probe stage).
    """
    from pipeline.preprocess.faces import FaceDetector, count_people

    with FaceDetector() as fd:
        faces = fd.detect(rgb)
    n = count_people(faces)
    if n > 1:
        raise InputError(path, f"{n} faces in the reference photo; one is needed")
    try:
        track = track_frames([rgb], video_mode=False)
    except ValueError:
        raise InputError(path, "no face found in the reference photo") from None
    return track


def mouth_opening(mesh: np.ndarray) -> np.ndarray:
    """Inner-lip gap over the outer-eye-corner distance (dimensionless, 0 = closed).

    Args:
        mesh: [N, 478, >=2] or [478, >=2] landmarks (pixels).
    Returns:
        [N] (or a scalar for one mesh).
    """
    m = np.asarray(mesh, np.float64)[..., :2]
    gap = np.linalg.norm(m[..., LIP_MID[0], :] - m[..., LIP_MID[1], :], axis=-1)
    eyes = np.linalg.norm(m[..., EYE_CORNERS[0], :] - m[..., EYE_CORNERS[1], :], axis=-1)
    return gap / np.maximum(eyes, 1e-6)


def expression_columns(names: list[str]) -> np.ndarray:
    """Indices of the blendshapes that describe expression (all but ``_neutral`` and gaze)."""
    return np.array([i for i, n in enumerate(names) if not n.startswith(_NON_EXPRESSION)], np.int64)


def rotation_deg(pose_a: np.ndarray, pose_b: np.ndarray) -> np.ndarray:
    """Geodesic angle (degrees) between the head rotations of two poses.

    Args:
        pose_a, pose_b: [..., 4, 4] (or [..., 3, 3]) transforms; their rotation parts are
            re-orthonormalised (SVD) first.
    Returns:
        [...] angles in [0, 180].
    """
    ra, rb = _orthonormal(pose_a), _orthonormal(pose_b)
    rel = np.einsum("...ij,...kj->...ik", ra, rb)
    cos = (np.trace(rel, axis1=-2, axis2=-1) - 1.0) / 2.0
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def _orthonormal(pose: np.ndarray) -> np.ndarray:
    r = np.asarray(pose, np.float64)[..., :3, :3]
    u, _, vt = np.linalg.svd(r)
    return u @ vt


def choose_anchor(track: FaceTrack) -> tuple[int, dict]:
    """The driving video's anchor frame: the most neutral face with the mouth closed in a typical
    head pose (LivePortrait's relative motion is taken from a reference frame the same way).

    Score per frame (lower is better): ``jawOpen + mean(expression blendshapes) +
    0.01 x (head-rotation angle to the median pose, degrees)``; frames without a face are excluded.

    Returns:
        (index, record) with the score, jawOpen, mouth opening and how it was chosen.
    """
    cols = expression_columns(track.names)
    jaw = track.bs("jawOpen") if "jawOpen" in track.names else mouth_opening(track.mesh)
    expr = track.blendshapes[:, cols].mean(1)
    med = np.median(track.pose[track.ok], axis=0)
    ang = rotation_deg(track.pose, med[None])
    score = jaw + expr + 0.01 * ang
    score = np.where(track.ok, score, np.inf)
    i = int(np.argmin(score))
    return i, {"index": i, "chosen": "auto", "score": float(score[i]), "jawOpen": float(jaw[i]),
               "mouth_opening": float(mouth_opening(track.mesh[i])), "pose_to_median_deg": float(ang[i]),
               "reason": "lowest jawOpen + mean expression blendshape + 0.01 x degrees from the median pose"}


def anchor_record(track: FaceTrack, index: int) -> dict:
    """The anchor record of a configured anchor frame; IndexError when out of range or faceless."""
    if not 0 <= index < len(track):
        raise IndexError(f"anchor frame {index} outside 0..{len(track) - 1}")
    if not track.ok[index]:
        raise IndexError(f"no face found in the configured anchor frame {index}")
    return {"index": index, "chosen": "config", "mouth_opening": float(mouth_opening(track.mesh[index])),
            "reason": "set in config oneshot.anchor"}


def fit_similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares 2-D similarity (Umeyama) ``dst ~ s R src + t`` as a 3x3 matrix.

    Args:
        src, dst: [K, 2] corresponding points (K >= 2).
    Returns:
        float64 [3, 3] homogeneous matrix (scikit-image ``SimilarityTransform``).
    """
    from skimage.transform import SimilarityTransform

    t = SimilarityTransform()
    if not t.estimate(np.asarray(src, np.float64), np.asarray(dst, np.float64)):
        raise ValueError("degenerate points for a similarity fit")
    return np.asarray(t.params, np.float64)


def apply(mat: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Apply a 3x3 homogeneous 2-D transform to [K, 2] points."""
    p = np.asarray(pts, np.float64)
    return p @ mat[:2, :2].T + mat[:2, 2]
