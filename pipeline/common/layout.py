"""Paths of every artefact the pipeline writes: the single source of file names.

Dataset (ER-NeRF layout, ``results/data/{identity}/``)::

    probe.json                 container/stream info (probe stage)
    {identity}.mp4             cropped, 512x512 (config), constant 25 fps video
    aud.wav                    16 kHz mono PCM s16
    crop.json                  per-frame crop window, smoothing report
    ori_imgs/{i}.jpg           one per video frame, i from 0
    ori_imgs/{i}.lms           68 rows "x y" (pixels, iBUG order)
    face_mesh.npy              float32 [N, 478, 3] MediaPipe mesh, x/y in pixels, z in pixels (relative depth)
    blendshapes.npy            float32 [N, 52] MediaPipe blendshape scores in [0, 1]
    landmarks.json             backends, failed frames, interpolated frames
    parsing/{i}.png            colour code: head 255,0,0; neck 0,255,0; torso 0,0,255; background 255,255,255
    bc.jpg                     background estimate
    gt_imgs/{i}.jpg            frame with background replaced by bc.jpg
    torso_imgs/{i}.png         RGBA, head removed (alpha 0 on head and background)
    track_params.pt            torch.save dict, AD-NeRF schema (rows = frame index img_id):
                               euler float32 [N,3] rad (AD-NeRF euler2rot), trans float32 [N,3] dm,
                               focal float32 [1] px, exp float32 [N,52] MediaPipe blendshapes,
                               exp_names list[str], exp_model str, template float32 [K,3] cm,
                               landmark_ids int64 [K], reproj_error float32 [N] px, threedmm str
                               (3DMM status: ok | n/a: reason | not run); when the 3DMM ran:
                               id float32 [1,63] SFM identity, id_model str,
                               exp_sfm float32 [N,6] SFM expression weights, exp_sfm_names list[str]
    transforms_train.json      ER-NeRF schema: focal_len, cx, cy, frames[{img_id, aud_id, transform_matrix}]
    transforms_val.json        same, the last 1/11 of the frames
    teeth_mask/{i}.npy         TalkingGaussian teeth mask, bool [H, W] (preprocess.teeth_mask.enabled)
    parsing_tg/{i}.png         parsing in TalkingGaussian's colours: hair 0,0,0; inner mouth 100,100,100 (same switch)
    threedmm.npz, threedmm.json  Surrey Face Model fit: shape [63], expression [N, 6], pose, landmark error
    au.csv                     OpenFace 2 CSV format
    body_pose.npy              [N, 33, 4] MediaPipe Pose landmarks (x, y in [0,1], z, visibility)
    body_flow.npy              [N, 9, 2] mean optical flow of the body's 3 x 3 cells from a reference frame ([-1,1] units)
    aud_mel.npy                float32 [N, 16, 80] log-mel windows (built in)
    aud_eo.npy                 wav2vec2 features [N, 16, D] (if configured)
    aud_hu.npy                 HuBERT features [N, 2, 1024] (if configured)
    aud_ds.npy                 DeepSpeech features [N, 16, 29] (if configured)
    manifest.json              counts, crop window, focal, failed frames, backends, versions, timings

Models: ``results/models/{method}/{identity}/``; renders (the render contract):
``results/renders/{method}/{identity}/{test}/{frames/, video.mp4, manifest.json}``; metrics:
``results/metrics/{method}/{identity}/{test}.json``; tables ``results/tables/``; report
``results/report/index.html``.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

RESULTS = "results"

#: audio feature name (config ``preprocess.audio.features``) -> dataset file name (anchors' names)
AUDIO_FEATURE_FILES = {
    "mel": "aud_mel.npy",
    "wav2vec2": "aud_eo.npy",
    "hubert": "aud_hu.npy",
    "deepspeech": "aud_ds.npy",
}

#: the test name of the self-driven protocol; cross-driven tests are named by their config key
SELF_DRIVEN_TEST = "self"

#: parsing colour code, in the channel order of OpenCV (cv2.imread / cv2.imwrite: B, G, R), exactly as
#: the ER-NeRF / AD-NeRF face_parsing step writes it and their data loaders test it
#: (``seg[..., 0] == 255`` is head): their trainers read our maps unchanged. An RGB image viewer
#: therefore shows the head blue and the torso red. Read/write maps with
#: pipeline.preprocess.parsing.read_parsing / write_parsing rather than comparing colours by hand.
PARSING_COLORS = {
    "head": (255, 0, 0),
    "neck": (0, 255, 0),
    "torso": (0, 0, 255),
    "background": (255, 255, 255),
}


@dataclass(frozen=True)
class DatasetLayout:
    """Paths inside one identity's dataset folder ``results/data/{identity}``."""

    root: Path
    identity: str

    @classmethod
    def of(cls, identity: str, results: str | Path = RESULTS) -> "DatasetLayout":
        """The layout of ``{results}/data/{identity}``."""
        return cls(Path(results) / "data" / identity, identity)

    @property
    def probe(self) -> Path: return self.root / "probe.json"
    @property
    def video(self) -> Path: return self.root / f"{self.identity}.mp4"
    @property
    def audio(self) -> Path: return self.root / "aud.wav"
    @property
    def crop(self) -> Path: return self.root / "crop.json"
    @property
    def ori_imgs(self) -> Path: return self.root / "ori_imgs"
    @property
    def face_mesh(self) -> Path: return self.root / "face_mesh.npy"
    @property
    def blendshapes(self) -> Path: return self.root / "blendshapes.npy"
    @property
    def landmarks_report(self) -> Path: return self.root / "landmarks.json"
    @property
    def parsing(self) -> Path: return self.root / "parsing"
    @property
    def bc(self) -> Path: return self.root / "bc.jpg"
    @property
    def gt_imgs(self) -> Path: return self.root / "gt_imgs"
    @property
    def torso_imgs(self) -> Path: return self.root / "torso_imgs"
    @property
    def track_params(self) -> Path: return self.root / "track_params.pt"
    @property
    def transforms_train(self) -> Path: return self.root / "transforms_train.json"
    @property
    def transforms_val(self) -> Path: return self.root / "transforms_val.json"
    @property
    def au(self) -> Path: return self.root / "au.csv"
    @property
    def body_pose(self) -> Path: return self.root / "body_pose.npy"
    @property
    def body_flow(self) -> Path: return self.root / "body_flow.npy"
    @property
    def manifest(self) -> Path: return self.root / "manifest.json"

    def audio_feature(self, name: str) -> Path:
        """Path of an audio feature file (``name`` in :data:`AUDIO_FEATURE_FILES`)."""
        return self.root / AUDIO_FEATURE_FILES[name]

    def img(self, i: int) -> Path: return self.ori_imgs / f"{i}.jpg"
    def lms(self, i: int) -> Path: return self.ori_imgs / f"{i}.lms"
    def parsing_img(self, i: int) -> Path: return self.parsing / f"{i}.png"
    def gt_img(self, i: int) -> Path: return self.gt_imgs / f"{i}.jpg"
    def torso_img(self, i: int) -> Path: return self.torso_imgs / f"{i}.png"


def render_dir(method: str, identity: str, test: str, results: str | Path = RESULTS) -> Path:
    """``results/renders/{method}/{identity}/{test}`` (the render contract folder)."""
    return Path(results) / "renders" / method / identity / test


def model_dir(method: str, identity: str, results: str | Path = RESULTS) -> Path:
    """``results/models/{method}/{identity}``."""
    return Path(results) / "models" / method / identity
