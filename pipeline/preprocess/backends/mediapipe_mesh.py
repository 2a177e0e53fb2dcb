"""MediaPipe Face Landmarker: dense 478-point mesh, 52 blendshapes, facial transformation matrix.

Model: ``resources/models/face_landmarker.task`` (MediaPipe's bundled model, Apache-2.0), run with
``mediapipe.tasks.python.vision.FaceLandmarker`` in VIDEO mode (temporal tracking between frames) or
IMAGE mode (independent frames).
"""
from __future__ import annotations

import importlib
import sys
import types
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.common.errors import InputError

#: resources/models of the project (pipeline.common.config.PROJECT_ROOT, without importing jsonschema)
MODELS_DIR = Path(__file__).resolve().parents[3] / "resources" / "models"
DEFAULT_MODEL = MODELS_DIR / "face_landmarker.task"

#: the face-oval landmarks of the 478-point mesh, ordered around the face (MediaPipe's
#: FACEMESH_FACE_OVAL cycle), starting at the top of the forehead and going over the image-right side
FACE_OVAL = np.array([10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400,
                      377, 152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67,
                      109])


class _LazyModule(types.ModuleType):
    """Stand-in for a module that imports the real one on first attribute access."""

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        if sys.modules.get(self.__name__) is self:
            del sys.modules[self.__name__]
        return getattr(importlib.import_module(self.__name__), name)


def import_mediapipe():
    """``import mediapipe`` without importing ``matplotlib.pyplot`` along with it.

    ``mediapipe/__init__.py`` imports the legacy ``solutions`` package, whose drawing utilities do
    ``import matplotlib.pyplot as plt`` (about 1 s per process, a large share of a 300-frame stage);
    nothing here draws. While mediapipe is imported, ``matplotlib`` and ``matplotlib.pyplot`` are
    lazy stand-ins (removed right after), so ``drawing_utils.plt`` imports the real pyplot only if
    it is ever used.
    """
    if "mediapipe" in sys.modules:
        return sys.modules["mediapipe"]
    stubs = [] if "matplotlib" in sys.modules else ["matplotlib", "matplotlib.pyplot"]
    for n in stubs:
        sys.modules[n] = _LazyModule(n)
    if stubs:   # `import matplotlib.pyplot as plt` takes getattr(matplotlib, "pyplot")
        sys.modules["matplotlib"].pyplot = sys.modules["matplotlib.pyplot"]
    try:
        import mediapipe
    finally:
        for n in stubs:
            if isinstance(sys.modules.get(n), _LazyModule):
                del sys.modules[n]
    return mediapipe


@dataclass
class MeshResult:
    """One detected face.

    Attributes:
        mesh: float32 [478, 3]; x, y in pixels of the input image, z in pixels of the same scale
            (MediaPipe's relative depth, z = 0 near the face centre, smaller = closer to the camera).
        blendshapes: float32 [52] scores in [0, 1], in MediaPipe's category order.
        pose: float32 [4, 4] MediaPipe facial transformation matrix (canonical face model -> camera,
            centimetres).
    """

    mesh: np.ndarray
    blendshapes: np.ndarray
    pose: np.ndarray


class MeshDetector:
    """Wrapper of MediaPipe's FaceLandmarker for one video (use as a context manager).

    Args:
        model_path: the ``.task`` bundle.
        video_mode: VIDEO running mode (tracking, frames must be fed in order) else IMAGE.
        fps: frame rate used to make VIDEO-mode timestamps.
        min_confidence: detection / presence / tracking confidence thresholds.
    Raises:
        InputError: the model file is missing.
    """

    def __init__(self, model_path: str | Path = DEFAULT_MODEL, video_mode: bool = True, fps: float = 25.0,
                 min_confidence: float = 0.5):
        import_mediapipe()
        from mediapipe.tasks.python import BaseOptions, vision

        model_path = Path(model_path)
        if not model_path.is_file():
            raise InputError(model_path, "MediaPipe face landmarker model not found (restore resources/models/)")
        mode = vision.RunningMode.VIDEO if video_mode else vision.RunningMode.IMAGE
        opts = vision.FaceLandmarkerOptions(
            base_options=BaseOptions(model_asset_path=str(model_path)), running_mode=mode, num_faces=1,
            min_face_detection_confidence=min_confidence, min_face_presence_confidence=min_confidence,
            min_tracking_confidence=min_confidence, output_face_blendshapes=True,
            output_facial_transformation_matrixes=True)
        self._lm = vision.FaceLandmarker.create_from_options(opts)
        self._video = video_mode
        self._dt_ms = 1000.0 / fps
        self.blendshape_names: list[str] | None = None

    def detect(self, rgb: np.ndarray, index: int) -> MeshResult | None:
        """Run on one frame.

        Args:
            rgb: uint8 [H, W, 3] RGB image.
            index: frame number (VIDEO mode timestamps; must increase).
        Returns:
            the face, or None when no face is found.
        """
        mp = import_mediapipe()
        image = mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(rgb))
        if self._video:
            res = self._lm.detect_for_video(image, int(round(index * self._dt_ms)))
        else:
            res = self._lm.detect(image)
        if not res.face_landmarks:
            return None
        h, w = rgb.shape[:2]
        pts = np.array([(p.x, p.y, p.z) for p in res.face_landmarks[0]], dtype=np.float32)
        pts[:, 0] *= w
        pts[:, 1] *= h
        pts[:, 2] *= w  # MediaPipe z uses roughly the same scale as x
        cats = res.face_blendshapes[0]
        if self.blendshape_names is None:
            self.blendshape_names = [c.category_name for c in cats]
        bs = np.array([c.score for c in cats], dtype=np.float32)
        pose = np.asarray(res.facial_transformation_matrixes[0], dtype=np.float32).reshape(4, 4)
        return MeshResult(pts, bs, pose)

    def close(self) -> None:
        """Release the MediaPipe graph."""
        self._lm.close()

    def __enter__(self) -> "MeshDetector":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
