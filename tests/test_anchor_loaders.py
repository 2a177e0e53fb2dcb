"""Datasets read the way the anchors' own loaders read them.

What the loaders do (read from the anchors' repositories; described here, not copied):

* ER-NeRF ``nerf_triplane/provider.py`` (commit 0cf72d8):
  - lines 392-402: the training audio file is ``aud_eo.npy`` when ``--asr_model`` contains
    "esperanto", ``aud_ds.npy`` for "deepspeech", ``aud_hu.npy`` for "hubert";
  - lines 407-411: a 3-D array ``[N, W, C]`` is made float and permuted to ``[N, C, W]``;
  - line 477: the row of a frame is ``min(aud_id, N - 1)``;
  - lines 425-426: ``pd.read_csv(root/au.csv)[' AU45_r']`` (column name with OpenFace's leading
    space), indexed by ``img_id``; lines 500-501: eye input ``clip(AU45_r, 0, 2) / 2``;
  - lines 443-468: ``gt_imgs/{img_id}.jpg`` (3 channels) and ``torso_imgs/{img_id}.png`` (RGBA) by
    ``cv2.imread(..., IMREAD_UNCHANGED)``; line 481: ``np.loadtxt(ori_imgs/{img_id}.lms)`` is ``[68, 2]``;
  - ``NeRFDataset_Test`` lines 158-163: a test pose file's frame gives its eye value as
    ``eye_ratio`` (default 0.25 when absent).
* ``nerf_triplane/network.py`` lines 40-66 / 104-109 (RAD-NeRF ``nerf/network.py`` 41-67 / 114-119,
  TalkingGaussian ``scene/motion_net.py`` 39-65 / 100-105): the AudioNet takes ``[B, C, W]`` with
  C = 44 (esperanto), 29 (deepspeech), 1024 (hubert); it slices the window to ``8 +- win/2`` and runs
  four Conv1d(kernel 3, stride 2, padding 1) layers with channels C -> 32 -> 32 -> 64 -> 64, then
  squeezes the last axis: the window must shrink to length 1.
* ``nerf_triplane/utils.py`` lines 42-67 (``get_audio_features``, attention mode 2): 8 consecutive
  rows around the frame.
* TalkingGaussian ``scene/dataset_readers.py`` (commit 9bd34f7) lines 100-114: ``aud_{ds,eo,hu}.npy``
  by ``--audio_extractor``, permuted the same way; lines 117-131: ``' AU45_r'``, ``' AU25_r'`` and
  ``' AU01_r'``, ``' AU04_r'``, ``' AU05_r'``, ``' AU06_r'``, ``' AU07_r'`` from ``au.csv``; line 219:
  blink ``clip(AU45_r, 0, 2) / 2``; lines 197-204: ``np.load(teeth_mask/{img_id}.npy)`` (boolean
  [H, W]) and ``parsing/{img_id}.png`` through PIL as RGB: face = ``B > 254, R = G = 0`` XOR teeth,
  hair = all channels < 1, mouth = all channels == 100, plus teeth (``tests.test_teeth.tg_read_parsing``).
* RAD-NeRF ``nerf/provider.py`` (commit 0de5ed2): line 364 ``H = int(cy) * 2``, line 231
  ``focal_len``; 347-352 ``transforms_train.json`` + ``transforms_val.json``; 431 / 452
  ``gt_imgs/{img_id}.jpg`` / ``torso_imgs/{img_id}.png``; 469 ``ori_imgs/{img_id}.lms`` [68, 2];
  475-485 the eye input = polygon area of points 36-41 and 42-47 in percent of the image; 512-518
  ``bc.jpg`` read with cv2 and resized to [H, W] when it differs.
* ER-NeRF ``data_utils/process.py`` lines 139-143 (how its pipeline reads the parsing maps, cv2 B, G,
  R order): head ``seg == (255, 0, 0)``, neck ``(0, 255, 0)``, torso ``(0, 0, 255)``, background
  ``(255, 255, 255)``; lines 262-345 ``save_transforms`` from ``track_params.pt``
  (``tests.test_tracking.adnerf_save_transforms``).
"""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from pipeline.preprocess import audio_features as af
from pipeline.preprocess import aus as A
from pipeline.preprocess import tracking as T
from tests.conftest import SAMPLE_VIDEO
from tests.test_audio_features import WAV, tiny_models  # noqa: F401  (module fixture)
from tests.test_tracking import N_SAMPLE, mp_sample  # noqa: F401  (module fixture)


def _anchor_load_audio(path, aud_ids):
    """ER-NeRF provider.py 407-411 and 477: float, [N, W, C] -> [N, C, W], row min(aud_id, N - 1)."""
    import torch

    feats = torch.from_numpy(np.load(path)).float().permute(0, 2, 1)
    return feats, torch.stack([feats[min(i, feats.shape[0] - 1)] for i in aud_ids])


def _audionet_conv(channels: int):
    """An AudioNet-shaped conv stack (network.py 45-54 as described in the module docstring)."""
    import torch.nn as nn

    dims = [channels, 32, 32, 64, 64]
    layers = []
    for a, b in zip(dims[:-1], dims[1:]):
        layers += [nn.Conv1d(a, b, kernel_size=3, stride=2, padding=1), nn.LeakyReLU(0.02)]
    return nn.Sequential(*layers)


def test_audio_files_fit_the_anchors_audionets(tiny_models, tmp_path, capsys):  # noqa: F811
    """aud_eo.npy [N, 16, 44] and aud_hu.npy [N, 2, H] go through the anchors' loading and an
    AudioNet-shaped stack to one 64-vector per frame (tiny random models: shapes only)."""
    track = tmp_path / "crop.json"
    track.write_text(json.dumps({"n_frames": 70, "fps": 25}))
    cfg = {"features": ["wav2vec2", "hubert"], "wav2vec2": str(tiny_models / "w2v_ctc"),
           "hubert": str(tiny_models / "hubert")}
    assert af.main(["--audio", str(WAV), "--track", str(track), "--out-dir", str(tmp_path),
                    "--cfg", json.dumps(cfg), "--threads", "1"]) == 0
    import torch

    for name, width in (("aud_eo.npy", 16), ("aud_hu.npy", 2)):
        feats, rows = _anchor_load_audio(tmp_path / name, range(0, 80, 7))  # aud_id past the end is clamped
        assert feats.shape[0] == 70 and feats.shape[2] == width
        channels = feats.shape[1]
        window = rows[:, :, 8 - 8:8 + 8]  # AudioNet.forward's slice (win_size 16)
        with torch.no_grad():
            out = _audionet_conv(channels)(window)
        assert out.shape == (len(rows), 64, 1)
    assert np.load(tmp_path / "aud_eo.npy").shape[2] == af.ANCHOR_CHANNELS["wav2vec2"] == 44
    # the tiny HuBERT has 16 channels, not the 1024 the anchors' AudioNets take: a warning says so
    assert "hubert: the configured model gives 16 channels per frame; the anchors' AudioNets take 1024" in capsys.readouterr().err


def test_eye_ratio_in_transforms_and_au45_as_the_anchors_read_them(mp_sample, tmp_path):  # noqa: F811
    """au.csv read with pandas as ER-NeRF/TalkingGaussian do; the transforms' eye_ratio equals the
    eye input their training loaders compute for the same frame."""
    au = tmp_path / "au.csv"
    assert A.main(["--video", str(SAMPLE_VIDEO), "--blendshapes", str(mp_sample / "blendshapes.npy"),
                   "--landmarks", str(mp_sample / "landmarks.json"), "--out", str(au),
                   "--out-report", str(tmp_path / "aus.json")]) == 0
    df = pd.read_csv(au)  # exactly as provider.py 425 / dataset_readers.py 117: no options
    for col in (" AU45_r", " AU25_r", " AU01_r", " AU04_r", " AU05_r", " AU06_r", " AU07_r"):
        assert col in df.columns and len(df[col].values) == N_SAMPLE
    blink = df[" AU45_r"].values
    assert blink.min() >= 0 and blink.max() <= 5 and np.ptp(blink) > 0.1  # the sample blinks

    out = tmp_path
    args = ["--frames", str(mp_sample / "ori_imgs"), "--mesh", str(mp_sample / "face_mesh.npy"),
            "--blendshapes", str(mp_sample / "blendshapes.npy"), "--landmarks", str(mp_sample / "landmarks.json"),
            "--au", str(au), "--out-params", str(out / "track_params.pt"),
            "--out-train", str(out / "transforms_train.json"), "--out-val", str(out / "transforms_val.json"),
            "--out-report", str(out / "tracking.json"), "--cfg", json.dumps({"focal_search": [1000, 1400, 200]})]
    assert T.main(args) == 0
    frames = [f for split in ("train", "val")
              for f in json.loads((out / f"transforms_{split}.json").read_text())["frames"]]
    assert [f["img_id"] for f in frames] == list(range(N_SAMPLE))
    for f in frames:
        # ER-NeRF provider.py 500-501 / TalkingGaussian dataset_readers.py 219 for the same frame
        assert f["eye_ratio"] == pytest.approx(np.clip(blink[f["img_id"]], 0, 2) / 2, abs=1e-6)
        assert 0.0 <= f["eye_ratio"] <= 1.0 and "eye" in f
    # a CSV with another frame count is refused, naming the file
    short = tmp_path / "short.csv"
    pd.read_csv(au).iloc[:10].to_csv(short, index=False)
    from pipeline.common.errors import InputError

    with pytest.raises(InputError, match=r"short.csv: 10 rows but the dataset has 60 frames"):
        A.eye_ratio_from_au(short, N_SAMPLE)


def test_built_sample_dataset_as_er_nerf_and_talkinggaussian_read_it(sample_dataset):
    """The default build of the sample, read the anchors' way (frames, images, landmarks, blink)."""
    import cv2

    ds = sample_dataset
    train = json.loads(ds.transforms_train.read_text())
    val = json.loads(ds.transforms_val.read_text())
    au = pd.read_csv(ds.au)  # provider.py 425: no options, ' AU45_r' with the leading space
    blink = au[" AU45_r"].values
    for tf in (train, val):
        # provider.py: H = int(cy) * 2, W = int(cx) * 2 (NeRFDataset_Test), focal_len for the intrinsics
        assert int(tf["cy"]) * 2 == 512 and int(tf["cx"]) * 2 == 512 and tf["focal_len"] > 0
        for f in tf["frames"][:: max(1, len(tf["frames"]) // 7)]:
            i = f["img_id"]
            assert np.asarray(f["transform_matrix"], np.float32).shape == (4, 4)
            lms = np.loadtxt(ds.root / "ori_imgs" / f"{i}.lms")  # provider.py 481
            assert lms.shape == (68, 2)
            gt = cv2.imread(str(ds.root / "gt_imgs" / f"{i}.jpg"), cv2.IMREAD_UNCHANGED)
            torso = cv2.imread(str(ds.root / "torso_imgs" / f"{i}.png"), cv2.IMREAD_UNCHANGED)
            assert gt.shape == (512, 512, 3) and torso.shape == (512, 512, 4)  # provider.py 443-468
            assert f["eye_ratio"] == pytest.approx(np.clip(blink[i], 0, 2) / 2, abs=1e-6)
    n = len(train["frames"]) + len(val["frames"])
    assert len(blink) == n and [f["img_id"] for f in train["frames"] + val["frames"]] == list(range(n))
    manifest = json.loads(ds.manifest.read_text())
    assert manifest["av_durations"]["status"] == "ok"
    assert manifest["threedmm"]["status"] == _expected_threedmm_status()


def _expected_threedmm_status() -> str:
    """The sample's 3DMM fit: ``ok`` where the Surrey Face Model files are in the weights folder
    the workflow uses (config ``weights_dir`` from the project root, or ``$TALKING_NERF_WEIGHTS``),
    else ``n/a`` (a fresh clone, CI: the files are fetched, not shipped)."""
    from pipeline.common.config import weights_dir

    return "ok" if (weights_dir() / "sfm" / "sfm_shape_3448.bin").is_file() else "n/a"


def _polygon_area(x, y):
    """Shoelace formula (RAD-NeRF provider.py ``polygon_area``)."""
    return 0.5 * abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1)))


def test_built_sample_dataset_as_rad_nerf_reads_it_parsing_and_track_params(sample_dataset):
    """RAD-NeRF's provider reads the sample (H from cy, bc.jpg, eye areas from the .lms); every parsing
    pixel is exactly one of ER-NeRF's four classes; track_params.pt re-creates the transforms by
    AD-NeRF/ER-NeRF's save_transforms to 1e-5; the manifest says where the focal came from."""
    import cv2
    import torch

    from tests.test_tracking import assert_track_params_recreate_transforms

    ds = sample_dataset
    train = json.loads(ds.transforms_train.read_text())
    val = json.loads(ds.transforms_val.read_text())
    frames = train["frames"] + val["frames"]  # provider.py 347-352 (trainval)
    h = w = int(train["cy"]) * 2               # provider.py 364
    bc = cv2.imread(str(ds.root / "bc.jpg"), cv2.IMREAD_UNCHANGED)
    assert bc.shape == (h, w, 3)               # 514-516: no resize needed
    areas = []
    for f in frames[:: 10]:
        i = f["img_id"]
        lms = np.loadtxt(ds.root / "ori_imgs" / f"{i}.lms")
        area = (_polygon_area(lms[36:42, 0], lms[36:42, 1]) + _polygon_area(lms[42:48, 0], lms[42:48, 1])) / (h * w) * 100
        areas.append(area)
        seg = cv2.imread(str(ds.root / "parsing" / f"{i}.png"))  # process.py 139-143
        head = (seg[..., 0] == 255) & (seg[..., 1] == 0) & (seg[..., 2] == 0)
        neck = (seg[..., 0] == 0) & (seg[..., 1] == 255) & (seg[..., 2] == 0)
        torso = (seg[..., 0] == 0) & (seg[..., 1] == 0) & (seg[..., 2] == 255)
        bg = (seg[..., 0] == 255) & (seg[..., 1] == 255) & (seg[..., 2] == 255)
        assert (head.astype(int) + neck + torso + bg == 1).all(), i   # a partition: no other colour
        # the head class holds the face: the landmarks' nose tip and eye corners are head pixels
        for k in (30, 36, 45):
            assert head[int(lms[k, 1]), int(lms[k, 0])], (i, k)
        assert torso.sum() > 0.05 * h * w and bg.sum() > 0.05 * h * w
        rgba = cv2.imread(str(ds.root / "torso_imgs" / f"{i}.png"), cv2.IMREAD_UNCHANGED)
        assert (rgba[..., 3][head] == 0).all()                       # torso images have the head cut out
    assert 0.05 < np.mean(areas) < 2.0  # percent of the image, both eyes of a 512 px head-and-shoulders crop
    params = torch.load(ds.track_params)
    assert_track_params_recreate_transforms(params, train, val, h, w)
    if _expected_threedmm_status() == "ok":
        assert params["threedmm"] == "ok"
    else:
        assert params["threedmm"].startswith("n/a: Surrey Face Model files not found"), params["threedmm"]
    man = json.loads(ds.manifest.read_text())
    assert man["focal_source"] == "search" and man["excluded_frames"] == []  # the sample's curve has a minimum
    assert man["train_val_frames"] == [len(train["frames"]), len(val["frames"])]


def test_talkinggaussian_extras_on_the_built_sample(sample_dataset, tmp_path):
    """With the TalkingGaussian extras (the teeth_mask rule's command, run here on the built sample):
    teeth_mask/{img_id}.npy and parsing_tg/{img_id}.png read the way dataset_readers.py 197-204 does;
    the inner mouth lies between the lips, hair is a part of the head, the face holds the landmarks."""
    from pipeline.preprocess import teeth as TM
    from pipeline.preprocess.parsing import read_parsing
    from tests.test_teeth import tg_read_parsing

    ds = sample_dataset
    out = tmp_path
    assert TM.main(["--frames", str(ds.root / "ori_imgs"), "--mesh", str(ds.face_mesh), "--parsing",
                    str(ds.root / "parsing"), "--out-parsing", str(out / "parsing_tg"), "--out",
                    str(out / "teeth_mask"), "--report", str(out / "teeth_mask.json")]) == 0
    frames = json.loads(ds.transforms_train.read_text())["frames"]
    mouths, hair_fraction = [], []
    for f in frames[:: 15]:
        i = f["img_id"]
        teeth = np.load(out / "teeth_mask" / f"{i}.npy")
        face, hair, mouth = tg_read_parsing(out / "parsing_tg" / f"{i}.png")
        assert teeth.dtype == np.bool_ and teeth.shape == face.shape == (512, 512)
        face_mask = face ^ teeth                  # dataset_readers.py 202
        mouth_mask = mouth + teeth                # 204
        head = read_parsing(ds.root / "parsing" / f"{i}.png") == 1
        np.testing.assert_array_equal(face | hair | mouth, head)
        lms = np.loadtxt(ds.root / "ori_imgs" / f"{i}.lms")
        for k in (30, 36, 45, 27):                # nose, eye corners, bridge: face, not hair
            assert face_mask[int(lms[k, 1]), int(lms[k, 0])], (i, k)
        if mouth.any():                           # the inner mouth lies between the outer lip corners
            ys, xs = np.nonzero(mouth)
            assert lms[48, 0] - 2 <= xs.min() and xs.max() <= lms[54, 0] + 2
            assert lms[50:53, 1].min() - 3 <= ys.min() and ys.max() <= lms[56:59, 1].max() + 3
        # the teeth lie in the inner-mouth label and off the face label (BiSeNet's mouth class holds
        # the teeth too), so face ^ teeth (202) is the face plus the teeth and mouth + teeth (204)
        # adds nothing outside the mouth
        assert not (teeth & ~mouth).any() and not (teeth & face).any()
        np.testing.assert_array_equal(face_mask, face | teeth)
        np.testing.assert_array_equal(mouth_mask, mouth)
        mouths.append(int(mouth.sum()))
        hair_fraction.append(hair.sum() / head.sum())
    assert sum(m > 0 for m in mouths) >= 3        # she talks: the mouth is open in several frames
    assert 0.05 < np.mean(hair_fraction) < 0.5    # the news anchor's hair above the face
