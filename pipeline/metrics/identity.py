"""CSIM: cosine similarity of face-identity embeddings between an identity reference and each
generated frame, averaged over frames (higher is better).

Identity reference (:func:`identity_reference`): the mean of the unit embeddings of up to
:data:`REFERENCE_FRAMES` training frames, evenly spaced over the training split, leaving out every
frame a baseline copies (:data:`BASELINE_FRAMES`: the first training frame, which ``static_frame``
repeats and external one-shot baselines take as their input). A baseline that repeats a frame
therefore cannot score 1.0 by matching the reference with itself.

Embedders:

* ArcFace (Deng et al. 2019): insightface ``arcface_torch`` iresnet100 (512-d), weights entry
  ``arcface_r100``; faces aligned to the 112x112 ArcFace 5-point template.
* Fallback: dlib's 128-d ResNet face descriptor (``face_recognition_models``, offline), labelled
  as such in the JSON ``backend``: a real identity embedding, but not the ArcFace of the papers.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from pipeline.weights import file_sha256, require

#: ArcFace 112x112 alignment template (left eye, right eye, nose tip, left / right mouth corner)
ARCFACE_TEMPLATE = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                             [41.5493, 92.3655], [70.7299, 92.2041]], np.float64)


def cosine_similarity(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of [D] / [N, D] embeddings along the last axis (broadcasting), in [-1, 1]."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


#: training frames averaged into the identity reference
REFERENCE_FRAMES = 16
#: positions in the training split that baselines copy (pipeline.baselines.spec.first_training_frame)
BASELINE_FRAMES = (0,)


def reference_images(data_dir, n: int = REFERENCE_FRAMES) -> list:
    """Image paths of the identity reference: up to ``n`` evenly spaced frames of
    ``transforms_train.json`` except the positions in :data:`BASELINE_FRAMES`, each
    ``ori_imgs/{img_id}.jpg`` (the cropped video frame), else ``gt_imgs/{img_id}.jpg``. Empty when
    the dataset has no training split or no other frame."""
    from pipeline.metrics import training_frame_paths

    return training_frame_paths(data_dir, n, BASELINE_FRAMES, ("ori_imgs", "gt_imgs"))


def identity_reference(embed, images: list[np.ndarray]) -> tuple[np.ndarray | None, int]:
    """Mean of the unit embeddings of ``images`` (RGB uint8), renormalised.

    Args:
        embed: an embedder (``__call__(rgb) -> [D] | None``), :class:`ArcFaceEmbedder` or
            :class:`DlibEmbedder`.
    Returns:
        ([D] unit reference or None when no image has a face, number of images with a face).
    """
    embs = [e / np.linalg.norm(e) for e in (embed(img) for img in images) if e is not None]
    if not embs:
        return None, 0
    m = np.mean(embs, axis=0)
    return m / np.linalg.norm(m), len(embs)


def reference_note(n_ref: int) -> str:
    """The suffix of the CSIM backend string that names the identity reference (``n_ref`` frames
    with a face, :func:`identity_reference`); the report's tables print its ``reference:`` part in
    the column header (``pipeline.report.presets.compared_against``)."""
    return f"; reference: mean embedding of {n_ref} training frames (not the first, which baselines copy)"


def five_points(lms68: np.ndarray) -> np.ndarray:
    """[5, 2] eye centres, nose tip and mouth corners from [68, 2] iBUG landmarks."""
    l = np.asarray(lms68, np.float64)
    return np.stack([l[36:42].mean(0), l[42:48].mean(0), l[30], l[48], l[54]])


# ------------------------------------------------------------------------------------------------
# iresnet (insightface arcface_torch backbones/iresnet.py architecture, re-implemented)


class IBasicBlock(nn.Module):
    """Pre-activation residual block: BN, conv3x3, BN, PReLU, conv3x3(stride), BN (+ shortcut)."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(inplanes, eps=1e-5)
        self.conv1 = nn.Conv2d(inplanes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes, eps=1e-5)
        self.prelu = nn.PReLU(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes, eps=1e-5)
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride, bias=False),
                                            nn.BatchNorm2d(planes, eps=1e-5))

    def forward(self, x):
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        return out + (self.downsample(x) if self.downsample is not None else x)


class IResNet(nn.Module):
    """ArcFace iresnet: [B, 3, 112, 112] RGB in [-1, 1] -> [B, 512] embedding.

    Args:
        layers: blocks per stage ([3, 13, 30, 3] for iresnet100, [3, 4, 14, 3] for iresnet50).
    """

    def __init__(self, layers=(3, 13, 30, 3), num_features: int = 512):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64, eps=1e-5)
        self.prelu = nn.PReLU(64)
        inplanes = 64
        for i, (n, planes) in enumerate(zip(layers, (64, 128, 256, 512)), start=1):
            blocks = [IBasicBlock(inplanes, planes, 2)] + [IBasicBlock(planes, planes) for _ in range(n - 1)]
            setattr(self, f"layer{i}", nn.Sequential(*blocks))
            inplanes = planes
        self.bn2 = nn.BatchNorm2d(512, eps=1e-5)
        self.dropout = nn.Dropout(0.0)
        self.fc = nn.Linear(512 * 7 * 7, num_features)
        self.features = nn.BatchNorm1d(num_features, eps=1e-5)

    def forward(self, x):
        x = self.prelu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = self.dropout(torch.flatten(self.bn2(x), 1))
        return self.features(self.fc(x))


def iresnet_layers(state: dict) -> tuple[int, ...]:
    """Blocks per stage of an iresnet state dict (e.g. (3, 13, 30, 3) for iresnet100)."""
    return tuple(1 + max((int(k.split(".")[1]) for k in state if k.startswith(f"layer{i}.")), default=-1)
                 for i in range(1, 5))


def align_arcface(rgb: np.ndarray, lms68: np.ndarray) -> np.ndarray:
    """[112, 112, 3] uint8 face aligned by a similarity transform of :func:`five_points` onto
    :data:`ARCFACE_TEMPLATE` (insightface ``norm_crop``)."""
    import cv2
    from skimage.transform import SimilarityTransform

    tf = SimilarityTransform()
    tf.estimate(five_points(lms68), ARCFACE_TEMPLATE)
    return cv2.warpAffine(np.asarray(rgb), tf.params[:2], (112, 112), borderValue=0.0)


class ArcFaceEmbedder:
    """ArcFace iresnet100 embeddings from the weights folder.

    Raises:
        WeightsMissing: the checkpoint is absent.
    """

    def __init__(self, weights_dir, landmarker, verify: bool | None = None, device: str = "cpu"):
        path = require("arcface_r100", weights_dir, verify=verify)
        self.weights_sha256 = file_sha256(path)
        state = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
        state = {k.removeprefix("module."): v for k, v in state.items()}
        layers = iresnet_layers(state)
        net = IResNet(layers)
        net.load_state_dict(state, strict=True)
        self.net = net.eval().to(device)
        self.device = device
        self.landmarker = landmarker
        depth = {(2, 2, 2, 2): "18", (3, 4, 6, 3): "34", (3, 4, 14, 3): "50",
                 (3, 13, 30, 3): "100"}.get(layers, f" with blocks {layers}")
        self.backend = f"ArcFace iresnet{depth} (insightface arcface_torch)"

    @torch.no_grad()
    def __call__(self, rgb: np.ndarray) -> np.ndarray | None:
        """[512] embedding of the face in an [H, W, 3] uint8 RGB frame, or None without a face."""
        lms = self.landmarker.landmarks(rgb)
        if lms is None:
            return None
        face = align_arcface(rgb, lms).astype(np.float32) / 127.5 - 1.0
        x = torch.from_numpy(face).permute(2, 0, 1)[None].to(self.device)
        return self.net(x)[0].cpu().double().numpy()


class DlibEmbedder:
    """dlib's 128-d face descriptor (``face_recognition_models``; ResNet-29 trained on faces)."""

    backend = "dlib 128-d face descriptor (face_recognition_models), not ArcFace"

    def __init__(self, landmarker):
        import warnings

        import dlib

        from pipeline.preprocess.backends.dlib68 import predictor_path

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # face_recognition_models imports pkg_resources
            import face_recognition_models as frm
        self.encoder = dlib.face_recognition_model_v1(frm.face_recognition_model_location())
        self.weights_sha256 = file_sha256(frm.face_recognition_model_location())
        self.shape = dlib.shape_predictor(predictor_path())
        self.landmarker = landmarker
        self._dlib = dlib

    def __call__(self, rgb: np.ndarray) -> np.ndarray | None:
        """[128] descriptor of the largest face in an [H, W, 3] uint8 RGB frame, or None."""
        rgb = np.ascontiguousarray(rgb)
        box = self.landmarker.detect(rgb)
        if box is None:
            return None
        rect = self._dlib.rectangle(*(int(round(v)) for v in box))
        return np.asarray(self.encoder.compute_face_descriptor(rgb, self.shape(rgb, rect)), np.float64)
