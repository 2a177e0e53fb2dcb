"""Metric definitions against reference implementations and hand-computed values.

Real frames: the sample clip resources/sample/German_12s.mp4 (512x512). Network metrics are
exercised with stand-in weights the tests create (the real loading code); they never produce a
reported number.
"""
from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch

from tests.conftest import SAMPLE_VIDEO

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def frames():
    """Six real RGB frames (uint8 [512, 512, 3]) of the sample clip, 5 frames apart."""
    cap = cv2.VideoCapture(str(SAMPLE_VIDEO))
    out = []
    for i in range(26):
        ok, img = cap.read()
        assert ok
        if i % 5 == 0:
            out.append(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))
    cap.release()
    return out


def f32(a):
    return a.astype(np.float32) / 255.0


# ---------------------------------------------------------------- PSNR / SSIM

def test_psnr_ssim_equal_scikit_image(frames):
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    from pipeline.metrics.image import psnr, ssim

    for pred, gt in [(frames[1], frames[0]), (cv2.GaussianBlur(frames[2], (0, 0), 1.5), frames[2])]:
        p, g = f32(pred), f32(gt)               # as the metrics stage loads frames
        p64, g64 = p.astype(np.float64), g.astype(np.float64)
        # scikit-image computes float32 inputs in float32 and float64 inputs in float64; so do we
        assert psnr(p, g) == peak_signal_noise_ratio(g, p, data_range=1)
        assert psnr(p64, g64) == peak_signal_noise_ratio(g64, p64, data_range=1)
        assert ssim(p64, g64) == pytest.approx(structural_similarity(g64, p64, channel_axis=-1, data_range=1), abs=1e-12)
        assert ssim(p, g) == pytest.approx(structural_similarity(g, p, channel_axis=-1, data_range=1), abs=1e-6)
        # the float32 value is the float64 one to float32's precision, far below the 3 decimals reported
        assert ssim(p, g) == pytest.approx(ssim(p64, g64), abs=1e-6)
        assert psnr(p, g) == pytest.approx(psnr(p64, g64), abs=1e-5)
    assert 0.5 < ssim(f32(frames[1]), f32(frames[0])) < 1.0


@pytest.mark.parametrize("shape", [(7, 7, 3), (38, 41, 3), (70, 65), (97, 50, 3)])
def test_ssim_banded_equal_scikit_image_any_shape(frames, shape):
    """The banded computation (32-row bands, 3-row halo) matches scikit-image at the smallest
    frame, band edges, uneven last bands and greyscale; crops of a real frame, plus a noisy copy."""
    from skimage.metrics import structural_similarity

    from pipeline.metrics.image import ssim

    g = f32(frames[3])[100:100 + shape[0], 150:150 + shape[1]]
    g = g if len(shape) == 3 else g.mean(-1)
    p = np.clip(g + np.random.default_rng(0).normal(0, 0.05, g.shape), 0, 1)
    ref = structural_similarity(g.astype(np.float64), p, channel_axis=-1 if g.ndim == 3 else None, data_range=1)
    assert ssim(p, g) == pytest.approx(ref, abs=1e-12)
    # both float32: computed in float32, as scikit-image does (a 7x7 frame is one window: no averaging
    # of the float32 rounding, hence 1e-5 here against 1e-7 over a whole frame)
    p32, axis = p.astype(np.float32), -1 if g.ndim == 3 else None
    assert ssim(p32, g) == pytest.approx(structural_similarity(g, p32, channel_axis=axis, data_range=1), abs=1e-5)


def test_ssim_rejects_bad_shapes():
    from pipeline.metrics.image import ssim

    with pytest.raises(ValueError, match="shapes differ"):
        ssim(np.zeros((8, 8, 3)), np.zeros((8, 9, 3)))
    with pytest.raises(ValueError, match="smaller than the 7x7"):
        ssim(np.zeros((6, 8, 3)), np.zeros((6, 8, 3)))


def test_identical_frames_psnr_inf(frames):
    from pipeline.metrics.image import psnr, ssim

    p = f32(frames[0])
    assert math.isinf(psnr(p, p)) and psnr(p, p) > 0
    assert ssim(p, p) == pytest.approx(1.0)


# ---------------------------------------------------------------- LPIPS / FID (stand-in weights)

def _standin_alexnet(folder):
    from pipeline.common.tvcompat import import_torchvision

    tv = import_torchvision()
    torch.manual_seed(0)
    torch.save(tv.models.alexnet(weights=None).state_dict(), folder / "alexnet-owt-7be5be79.pth")


def test_lpips_loading_code_with_standin_backbone(tmp_path, frames):
    from pipeline.metrics.perceptual import LPIPS
    from pipeline.weights import WeightsMissing

    with pytest.raises(WeightsMissing, match="alexnet-owt-7be5be79.pth not found"):
        LPIPS(tmp_path)
    _standin_alexnet(tmp_path)
    lp = LPIPS(tmp_path, verify=False)  # loading code only: the stand-in must skip the hash check
    # the backbone tensors really are the file's
    state = torch.load(tmp_path / "alexnet-owt-7be5be79.pth")
    assert torch.equal(lp.model.net.slice1[0].weight, state["features.0.weight"])
    assert torch.equal(lp.model.net.slice5._modules["10"].weight, state["features.10.weight"])
    small = [cv2.resize(f, (128, 128), interpolation=cv2.INTER_AREA) for f in frames[:2]]
    assert lp(f32(small[0]), f32(small[0])) == 0.0
    assert lp(f32(small[1]), f32(small[0])) > 0.0
    # by default the file is checked against the pinned sha256: the stand-in under the real
    # file name is refused, an error (not n/a) naming the file and both hashes
    from pipeline.weights import WeightsMismatch, load_manifest, sha256_of

    path = tmp_path / "alexnet-owt-7be5be79.pth"
    with pytest.raises(WeightsMismatch) as exc:
        LPIPS(tmp_path)
    msg = str(exc.value)
    assert msg.startswith(f"{path}: ") and sha256_of(path) in msg
    assert load_manifest()["lpips_alexnet"].sha256 in msg


def _standin_fid_inception(folder):
    from pipeline.common.tvcompat import import_torchvision

    import_torchvision()
    from pytorch_fid import inception as inc

    torch.manual_seed(0)
    net = inc._inception_v3(num_classes=1008, aux_logits=False, weights=None)
    net.Mixed_5b = inc.FIDInceptionA(192, pool_features=32)
    net.Mixed_5c = inc.FIDInceptionA(256, pool_features=64)
    net.Mixed_5d = inc.FIDInceptionA(288, pool_features=64)
    net.Mixed_6b = inc.FIDInceptionC(768, channels_7x7=128)
    net.Mixed_6c = inc.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6d = inc.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6e = inc.FIDInceptionC(768, channels_7x7=192)
    net.Mixed_7b = inc.FIDInceptionE_1(1280)
    net.Mixed_7c = inc.FIDInceptionE_2(2048)
    torch.save(net.state_dict(), folder / "pt_inception-2015-12-05-6726825d.pth")


@pytest.mark.slow  # pytorch-fid's sqrtm of two 2048x2048 matrices: about a minute on 2 cores
def test_fid_loading_code_identical_sets_near_zero(tmp_path, frames):
    from pipeline.metrics.fid import InceptionFeatures, frechet_distance

    _standin_fid_inception(tmp_path)
    hub_before = torch.hub.get_dir()
    feats = InceptionFeatures(tmp_path, verify=False)  # stand-in: loading code only
    assert torch.hub.get_dir() == hub_before
    state = torch.load(tmp_path / "pt_inception-2015-12-05-6726825d.pth")
    assert torch.equal(feats.model.blocks[0][0].conv.weight, state["Conv2d_1a_3x3.conv.weight"])
    x = np.stack([f32(cv2.resize(f, (96, 96), interpolation=cv2.INTER_AREA)) for f in frames[:4]])
    f = feats(x)
    assert f.shape == (4, 2048)
    assert abs(frechet_distance(f, f)) < 1e-3


def test_fid_matches_gaussian_closed_form():
    from pipeline.metrics.fid import frechet_distance

    rng = np.random.default_rng(0)
    d, n = 8, 400

    def exact_moments(mu, sd):
        z = rng.normal(size=(n, d))
        z -= z.mean(0)
        z = z @ np.linalg.inv(np.linalg.cholesky(np.cov(z, rowvar=False)).T)  # sample cov = I
        return z * sd + mu

    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    sd1, sd2 = rng.uniform(0.5, 2, d), rng.uniform(0.5, 2, d)
    f1, f2 = exact_moments(mu1, sd1), exact_moments(mu2, sd2)
    closed = np.sum((mu1 - mu2) ** 2) + np.sum((sd1 - sd2) ** 2)  # diagonal covariances
    assert frechet_distance(f1, f2) == pytest.approx(closed, rel=1e-6)


# ---------------------------------------------------------------- LMD / AUE (hand-computed)

def test_lmd_hand_computed():
    from pipeline.metrics.landmarks import FACE, MOUTH, lmd

    rng = np.random.default_rng(1)
    gt = rng.uniform(100, 400, size=(2, 68, 2))
    pred = gt + np.array([7.0, -3.0])               # a pure translation: removed by centring
    np.testing.assert_allclose(lmd(pred, gt), [0, 0], atol=1e-12)
    pred[1, 50] += [3.0, 4.0]                        # move one mouth point by 5 px in frame 1
    # mouth: that point is off by 5 * 19/20, the 19 others by 5/20 -> mean 0.475
    np.testing.assert_allclose(lmd(pred, gt, MOUTH), [0, 0.475], atol=1e-12)
    # face: 5 * 67/68 and 67 points at 5/68 -> mean 2 * 5 * 67 / 68^2
    np.testing.assert_allclose(lmd(pred, gt, FACE), [0, 2 * 5 * 67 / 68 ** 2], atol=1e-12)


def test_aue_hand_computed():
    from pipeline.metrics.aue import AUS, aue, au_matrix

    gt = np.zeros((2, 17))
    pred = np.zeros((2, 17))
    pred[:, AUS.index("AU01")] = 1.0                 # upper face, error 1 in both frames: MSE 1
    pred[0, AUS.index("AU25")] = 2.0                 # lower face, error 2 in one of two frames: MSE 2
    assert aue(pred, gt) == {"aue": 3.0, "aue_lower": 2.0, "aue_upper": 1.0}
    table = {f"{a}_r": pred[:, k] for k, a in enumerate(AUS)}
    np.testing.assert_array_equal(au_matrix(table), pred)
    with pytest.raises(ValueError):
        aue(pred[:, :5], gt[:, :5])


def test_aue_groups_are_talkinggaussians():
    """Upper/lower split of TalkingGaussian's auerror.py: AU09 (nose wrinkler) is upper face."""
    from pipeline.metrics.aue import AUS, LOWER, UPPER, aue

    assert UPPER == ("AU01", "AU02", "AU04", "AU05", "AU06", "AU07", "AU09", "AU45")
    assert LOWER == ("AU10", "AU12", "AU14", "AU15", "AU17", "AU20", "AU23", "AU25", "AU26")
    assert sorted(UPPER + LOWER) == sorted(AUS)
    pred = np.zeros((1, 17))
    pred[0, AUS.index("AU09")] = 2.0
    assert aue(pred, np.zeros((1, 17))) == {"aue": 4.0, "aue_lower": 0.0, "aue_upper": 4.0}


class _FixedLandmarks:
    """A landmarker stand-in: the landmarks of an image are looked up by its first pixel value
    (None: no face), so frame_lmd's bookkeeping can be checked by hand."""

    def __init__(self, table):
        self.table = table

    def landmarks(self, rgb, box=None):
        assert box is None, "each image's face is detected in that image"
        return self.table[int(rgb[0, 0, 0])]


def test_frame_lmd_detects_each_image_and_scales_to_512():
    from pipeline.metrics.landmarks import (GT_NO_FACE, OK, RENDER_NO_FACE, frame_lmd,
                                            lmd_note)

    rng = np.random.default_rng(2)
    gt = rng.uniform(10, 100, size=(68, 2))
    moved = gt.copy()
    moved[50] += [3.0, 4.0]                          # 5 px: mouth LMD 0.475 px (see above)
    lmk = _FixedLandmarks({1: gt, 2: moved, 3: None})
    img = lambda v, h: np.full((h, h, 3), v, np.uint8)  # noqa: E731
    mouth, face, status = frame_lmd(lmk, img(2, 128), img(1, 128))
    assert status == OK and mouth == pytest.approx(0.475 * 512 / 128)  # 128 px render: x4
    assert face == pytest.approx(2 * 5 * 67 / 68 ** 2 * 4)
    assert frame_lmd(lmk, img(2, 512), img(1, 512))[0] == pytest.approx(0.475)
    m, f, status = frame_lmd(lmk, img(3, 128), img(1, 128))
    assert math.isnan(m) and math.isnan(f) and status == RENDER_NO_FACE
    assert frame_lmd(lmk, img(2, 128), img(3, 128))[2] == GT_NO_FACE
    assert lmd_note([OK, RENDER_NO_FACE, RENDER_NO_FACE, GT_NO_FACE]) == (
        "render: no face in 2 of 4 frames (not scored); ground truth: no face in 1 of 4 frames (not scored)")
    assert lmd_note([OK, OK]) is None


# ---------------------------------------------------------------- LSE

def test_lse_offset_search_finds_known_shift():
    from pipeline.metrics.sync import lse_from_distances, offset_distances

    # constructed distances: the minimum at offset +4 frames
    d = np.full((40, 31), 10.0)
    d[:, 15 - 4] = 2.0
    d[:, 15 - 3] = 6.0
    r = lse_from_distances(d)
    assert r == {"lse_d": 2.0, "lse_c": 8.0, "offset": 4}
    # features: audio window j equals video window j + 3 -> video i matches audio i - 3
    rng = np.random.default_rng(2)
    v = torch.from_numpy(rng.normal(size=(60, 16)))
    a = torch.zeros_like(v)
    a[:-3] = v[3:]
    dist = offset_distances(v, a, vshift=15)
    assert dist.shape == (60, 31)
    r = lse_from_distances(dist)
    assert r["offset"] == 3
    assert r["lse_d"] < 0.5 < r["lse_c"]
    # against the reference: syncnet_python's calc_pdist and SyncNetInstance.evaluate's offset,
    # confidence (LSE-C) and minimum distance (LSE-D)
    from pipeline.common.tvcompat import import_torchvision

    import_torchvision()
    from syncnet_python.SyncNetInstance import calc_pdist

    a[-3:] = torch.from_numpy(rng.normal(size=(3, 16)))
    ref = calc_pdist(v, a, vshift=15)
    torch.testing.assert_close(offset_distances(v, a, vshift=15), torch.stack(ref), rtol=0, atol=1e-12)
    mdist = torch.mean(torch.stack(ref, 1), 1)
    minval, minidx = torch.min(mdist, 0)
    assert lse_from_distances(offset_distances(v, a, vshift=15)) == pytest.approx(
        {"lse_d": float(minval), "lse_c": float(torch.median(mdist) - minval), "offset": int(15 - minidx)}, abs=1e-12)


def test_syncnet_loading_code_with_standin_weights(tmp_path):
    from syncnet_python.SyncNetModel import S

    from pipeline.metrics.sync import LSE, load_syncnet, syncnet_features
    from pipeline.weights import WeightsMissing

    with pytest.raises(WeightsMissing):
        load_syncnet(tmp_path)
    torch.manual_seed(0)
    ref = S(num_layers_in_fc_layers=1024)
    torch.save({f"__S__.{k}": v for k, v in ref.state_dict().items()}, tmp_path / "syncnet_v2.model")
    net, sha = load_syncnet(tmp_path)
    assert len(sha) == 64
    assert torch.equal(net.netcnnlip[0].weight, ref.netcnnlip[0].weight)
    crops = np.random.default_rng(0).integers(0, 255, size=(7, 224, 224, 3), dtype=np.uint8)
    vf, af = syncnet_features(net, crops, np.zeros((13, 28)))
    assert vf.shape == (2, 1024) and af.shape == (2, 1024)
    # audio of exactly 7 frames (4480 samples) has 27 MFCC columns; the reference still counts
    # floor(4480 / 640) = 7 frames, so 2 windows, not T // 4 - 5 = 1
    from pipeline.metrics.sync import mfcc

    assert mfcc(np.zeros(7 * 640)).shape == (13, 27)
    # on the wav's own int16 samples, as the reference reads them: bit-equal MFCC
    import python_speech_features

    pcm = np.random.default_rng(0).integers(-32768, 32768, size=8000).astype(np.int16)
    np.testing.assert_array_equal(mfcc(pcm.astype(np.float32) / 32768.0),
                                  python_speech_features.mfcc(pcm, 16000).T)
    assert syncnet_features(net, crops, np.zeros((13, 27)))[0].shape == (1, 1024)
    assert syncnet_features(net, crops, np.zeros((13, 27)), audio_frames=7)[0].shape == (2, 1024)
    with pytest.raises(ValueError, match="MFCC columns"):
        syncnet_features(net, crops, np.zeros((13, 20)), audio_frames=7)
    # S3FD stand-in, then a clip of exactly 100 frames is refused clearly: the reference keeps a
    # face track only when len(track) > --min_track (100)
    from syncnet_python.detectors.s3fd.nets import S3FDNet

    torch.save(S3FDNet(device="cpu").state_dict(), tmp_path / "sfd_face.pth")
    lse = LSE(tmp_path)
    return_video = tmp_path / "short.mp4"
    import subprocess

    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(SAMPLE_VIDEO), "-frames:v", "100", "-t", "4.2",
                    str(return_video)], check=True)
    with pytest.raises(ValueError, match="^100 frames with audio: .* needs more than 100"):
        lse(return_video)


def _box(x, y=100, size=200, conf=0.99):
    return np.array([x, y, x + size, y + size, conf], np.float64)


def test_face_tracks_follow_track_shot():
    """syncnet_python's ``track_shot`` rules on hand-made detections, each expectation worked out
    by hand: IoU over 0.5 continues a track, a jump starts another, a gap of more than 25 frames
    ends one, missed frames are interpolated between detections only, the detector's order picks
    the face a track starts from, tracks of 100 detections or fewer and small faces are dropped."""
    from pipeline.metrics.sync import face_tracks, no_track_reason

    empty = np.empty((0, 5))
    # one face over 120 frames, missed at 30-39; a second face (left, listed first) in 0-50
    a = [np.stack([_box(300.0)]) if not 30 <= i < 40 else empty for i in range(120)]
    both = [np.stack([_box(0.0), *a[i]]) if i <= 50 else a[i] for i in range(120)]
    (first, bb), = face_tracks(both)                      # the left face's 51 detections: dropped
    assert first == 0 and bb.shape == (120, 4) and np.allclose(bb, _box(300.0)[:4])
    assert [(f, len(b)) for f, b in face_tracks(both, min_track=50)] == [(0, 51), (0, 120)]   # listed first
    # a linear move with missed frames: interpolated between the detections at 10 and 20
    moving = [np.stack([_box(100.0 + 3 * i)]) if not 10 < i < 20 else empty for i in range(110)]
    (first, bb), = face_tracks(moving)
    assert np.allclose(bb[15, :4], [145, 100, 345, 300])
    # a jump to IoU 0 at frame 60 starts a second track; a gap of 30 frames ends one
    jump = [np.stack([_box(0.0 if i < 60 else 300.0)]) for i in range(120)]
    assert [(f, len(b)) for f, b in face_tracks(jump, min_track=20)] == [(0, 60), (60, 60)]
    gap = [np.stack([_box(0.0)]) if not 40 <= i < 70 else empty for i in range(120)]
    assert [(f, len(b)) for f, b in face_tracks(gap, min_track=20)] == [(0, 40), (70, 50)]
    # detections at frames 39 and 64, 25 apart (24 missed): bridged, one track
    bridged = [np.stack([_box(0.0)]) if not 40 <= i < 64 else empty for i in range(120)]
    assert [(f, len(b)) for f, b in face_tracks(bridged, min_track=20)] == [(0, 120)]
    # IoU of a 200-px box shifted by 67 px is 133/267 = 0.498: not over 0.5, a new track
    drift = [np.stack([_box(67.0 * (i >= 60))]) for i in range(120)]
    assert len(face_tracks(drift, min_track=20)) == 2
    assert len(face_tracks([np.stack([_box(66.0 * (i >= 60))]) for i in range(120)], min_track=20)) == 1
    # the reasons
    assert face_tracks([empty] * 120) == [] and no_track_reason([empty] * 120) == "no face found by S3FD"
    assert "no face track over 100 frames (the longest spans 60" in no_track_reason(jump)
    small = [np.stack([_box(0.0, size=90)]) for _ in range(120)]
    assert face_tracks(small) == [] and "mean size 100 px or less" in no_track_reason(small)


def test_crop_track_box_and_padding():
    """``crop_video``'s crop on a hand-made frame: a box of half-size s centred at (cx, cy) takes
    rows cy - s .. cy + 1.8 s and columns cx - 1.4 s .. cx + 1.4 s (crop scale 0.4), grey 110
    outside the frame."""
    from pipeline.metrics.sync import crop_track

    img = np.zeros((400, 400, 3), np.uint8)
    img[100:300, 100:300] = 255                          # the face box itself, white
    crops = crop_track([img] * 13, np.tile([100.0, 100.0, 300.0, 300.0], (13, 1)))
    assert crops.shape == (13, 224, 224, 3)
    # s = 100: rows 0 .. 280 of the frame, columns 60 .. 340, resized 280 -> 224 (x0.8)
    c = crops[6].astype(int)
    assert c[100, 112].tolist() == [255, 255, 255]                     # frame (225, 200): the box
    assert c[100, 20].tolist() == [0, 0, 0]                            # frame (225, 85): black frame
    edge = crop_track([img] * 13, np.tile([0.0, 0.0, 200.0, 200.0], (13, 1)))[6].astype(int)
    assert edge[40, 20].tolist() == [110, 110, 110]                     # left of the frame: padding


def test_reference_decode_and_xvid_roundtrip(tmp_path):
    """The reference's lossy chain on a real 2 s clip: 50 frames (25 fps) of the clip's size and
    32000 audio samples; frames near OpenCV's own decode (the -qscale 2 re-encodes cost little),
    crops through XVID + JPEG changed but near the input."""
    import subprocess

    from pipeline.metrics.sync import crop_track, read_audio_16k, read_video_bgr, reference_decode, xvid_roundtrip

    clip = tmp_path / "clip.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(SAMPLE_VIDEO), "-t", "2", str(clip)], check=True)
    frames, audio, avi = reference_decode(clip, tmp_path / "dec")
    assert avi.suffix == ".avi" and avi.is_file()
    direct = read_video_bgr(clip)
    assert len(frames) == len(direct) == 50 and frames[0].shape == direct[0].shape
    assert abs(len(audio) - 32000) <= 640 and abs(len(audio) - len(read_audio_16k(clip))) <= 640
    diff = np.mean([np.abs(f.astype(int) - d.astype(int)).mean() for f, d in zip(frames, direct)])
    assert 0.1 < diff < 3.0, diff
    h, w = frames[0].shape[:2]
    crops = crop_track(frames, np.tile([w * 0.3, h * 0.2, w * 0.7, h * 0.6], (50, 1)))
    back = xvid_roundtrip(crops, tmp_path / "xvid")
    assert back.shape == crops.shape
    err = np.abs(back.astype(int) - crops.astype(int)).mean()
    assert 0.2 < err < 6.0, err
    (tmp_path / "clip.txt").write_text("not a video")
    with pytest.raises(ValueError, match="clip.txt"):
        reference_decode(tmp_path / "clip.txt", tmp_path / "bad")


def test_shots_split_a_clip_at_a_cut(tmp_path):
    """``scene_detect``'s shots on real frames: 2 s of the sample followed by the same 2 s with
    their colours inverted is two shots cut at frame 50; the sample alone is one shot."""
    import subprocess

    from pipeline.metrics.sync import shots

    cut = tmp_path / "cut.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(SAMPLE_VIDEO), "-filter_complex",
                    "[0:v]trim=duration=2,setpts=PTS-STARTPTS,split[a][b];[b]negate[n];[a][n]concat=n=2:v=1[v]",
                    "-map", "[v]", str(cut)], check=True)
    assert shots(cut, 100) == [(0, 50), (50, 100)]
    one = tmp_path / "one.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(SAMPLE_VIDEO), "-t", "4", str(one)], check=True)
    assert shots(one, 100) == [(0, 100)]


# ---------------------------------------------------------------- CPBD / CSIM

def test_cpbd_ranks_blur_below_sharp(frames):
    from pipeline.metrics.sharpness import cpbd

    sharp = frames[0]
    blurred = cv2.GaussianBlur(sharp, (0, 0), 2.0)
    assert cpbd(blurred) < cpbd(sharp)


def test_cpbd_fast_path_equals_the_cpbd_package(frames):
    """The vectorised edge widths and histogram (pipeline.metrics.sharpness) against cpbd 1.0.7's
    pixel loops on the same greyscale images, tolerance 0 (bit for bit): real frames of the sample,
    a blurred one, a crop not a multiple of the 64-px blocks, and synthetic images that reach the
    walks' ends (ramps longer than 101 px, edges next to the border, falling and rising steps)
    and the no-angle case (a flat image)."""
    from pipeline.metrics import sharpness as S

    C = S._cpbd_compute()
    from cpbd.octave import sobel

    grey = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY).astype(np.float64) for f in frames[:3]]
    grey.append(cv2.GaussianBlur(grey[0], (0, 0), 2.0).round())
    grey.append(grey[1][37:250, 11:300].copy())
    ramp = np.tile(np.concatenate([np.linspace(0, 250, 150), np.linspace(250, 0, 150)]).round(), (80, 1))
    steps = np.zeros((70, 140))
    steps[:, 1:3] = 200          # edges next to the left border
    steps[:, 60:] = 90           # a rising step
    steps[:, 100:137] = 10       # a falling step, then a rise at the right border
    steps[:, 138:] = 255
    steps[20:40] = steps[20:40, ::-1]
    noise = np.random.default_rng(0).integers(0, 256, (130, 200)).astype(np.float64)
    grey += [ramp, ramp.T.copy(), steps, noise, np.full((64, 64), 77.0)]
    reached_end = False
    for g in grey:
        edges = sobel(g)
        ref = C.marziliano_method(edges, g)
        fast = S.edge_widths(edges, g)
        assert np.array_equal(fast, ref), g.shape
        reached_end |= bool((ref >= 101).any())
        assert S.cpbd_grey(g) == C.compute(g)
    assert reached_end  # a walk ran all 101 steps on one side
    assert S.cpbd(frames[0]) == C.compute(cv2.cvtColor(frames[0], cv2.COLOR_RGB2GRAY).astype(np.float64))


def test_csim_dlib_descriptor(frames):
    from pipeline.metrics.identity import DlibEmbedder, cosine_similarity
    from pipeline.metrics.landmarks import make_landmarker

    lmk, note = make_landmarker(None)
    emb = DlibEmbedder(lmk)
    e0, e1 = emb(frames[0]), emb(frames[3])
    assert e0.shape == (128,)
    assert cosine_similarity(e0, e0) == pytest.approx(1.0)
    assert cosine_similarity(e0, e1) > 0.9                       # same person
    from skimage import data

    other = emb(data.astronaut())
    assert other is not None and cosine_similarity(e0, other) < cosine_similarity(e0, e1)


def test_arcface_loading_code_with_standin_weights(tmp_path, frames):
    from pipeline.metrics.identity import ArcFaceEmbedder, IResNet, align_arcface, cosine_similarity
    from pipeline.metrics.landmarks import make_landmarker

    torch.manual_seed(0)
    ref = IResNet((1, 1, 1, 1)).eval()
    torch.save({f"module.{k}": v for k, v in ref.state_dict().items()}, tmp_path / "arcface_r100_ms1mv3.pth")
    lmk, _ = make_landmarker(None)
    emb = ArcFaceEmbedder(tmp_path, lmk)
    assert "blocks (1, 1, 1, 1)" in emb.backend     # a stand-in is never labelled iresnet100
    e = emb(frames[0])
    assert e.shape == (512,) and cosine_similarity(e, emb(frames[0])) == pytest.approx(1.0)
    face = align_arcface(frames[0], lmk.landmarks(frames[0]))
    assert face.shape == (112, 112, 3) and face.mean() > 20


@pytest.mark.slow
def test_lse_pipeline_glue_with_standin_weights(tmp_path, monkeypatch):
    """Face track -> crops -> MFCC -> SyncNet windows -> offset search on a real 4.2 s clip, with
    stand-in SyncNet/S3FD weights and a fixed face box (checks the plumbing, not the values of a
    trained SyncNet): a feature pair per 5-frame window, and LSE-D, LSE-C and the offset are what
    syncnet_python's ``evaluate`` computes from the same features."""
    import subprocess

    from syncnet_python.detectors.s3fd.nets import S3FDNet
    from syncnet_python.SyncNetModel import S

    from syncnet_python.SyncNetInstance import calc_pdist

    from pipeline.metrics import sync
    from pipeline.metrics.sync import LSE, VSHIFT

    feats = []
    search = sync.offset_distances
    monkeypatch.setattr(sync, "offset_distances", lambda vf, af, *a: (feats.append((vf, af)), search(vf, af, *a))[1])

    torch.manual_seed(0)
    torch.save(S().state_dict(), tmp_path / "syncnet_v2.model")
    torch.save(S3FDNet(device="cpu").state_dict(), tmp_path / "sfd_face.pth")
    clip = tmp_path / "clip.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(SAMPLE_VIDEO), "-frames:v", "104", "-t", "4.16",
                    str(clip)], check=True)
    lse = LSE(tmp_path)
    boxes = []
    lse.det.detect_faces = lambda img, conf_th, scales: (boxes.append(img.shape), np.array([[150, 90, 370, 380, 0.99]]))[1]
    r = lse(clip)
    assert r["n_frames"] >= 100 and len(boxes) == r["n_frames"]
    (vf, af), = feats
    # SyncNetInstance.evaluate: lastframe = min(N, floor(samples / 640)) - 5 windows
    assert len(vf) == len(af) == r["n_frames"] - 5
    mdist = torch.mean(torch.stack(calc_pdist(vf, af, vshift=VSHIFT), 1), 1)  # SyncNetInstance.evaluate
    minval, minidx = torch.min(mdist, 0)
    assert r["lse_d"] == pytest.approx(float(minval), rel=1e-6)  # ours averages in float64, the reference in float32
    assert r["lse_c"] == pytest.approx(float(torch.median(mdist) - minval), rel=1e-5, abs=1e-6)
    assert r["offset"] == VSHIFT - int(minidx) and r["tracks"] == 1
    # the face jumps (IoU 0) at frame 50: two tracks, each scored on its own frames and audio
    # slice, the clip's LSE the mean of the two (Wav2Lip's one line per track)
    feats.clear()
    lse.min_frames = 20
    jump = iter(range(10 ** 6))
    lse.det.detect_faces = lambda img, conf_th, scales: (
        np.array([[150, 90, 370, 380, 0.99]]) if next(jump) < 50 else np.array([[0, 0, 140, 300, 0.99]]))
    r2 = lse(clip)
    assert r2["tracks"] == 2 and [len(v) for v, _ in feats] == [45, r["n_frames"] - 50 - 5]
    per = [sync.lse_from_distances(search(v, a)) for v, a in feats]
    assert r2["lse_d"] == pytest.approx(np.mean([p["lse_d"] for p in per]), rel=1e-12)
    assert r2["lse_c"] == pytest.approx(np.mean([p["lse_c"] for p in per]), rel=1e-12)


def test_lse_short_clip_option(tmp_path, monkeypatch):
    """A 40-frame clip (1.6 s) is under the reference's 100 frames: n/a by default; with
    metrics.lse_short_clips it is scored and the note says so (stand-in SyncNet/S3FD weights and a
    fixed face box: the plumbing, not the values)."""
    import subprocess

    from syncnet_python.detectors.s3fd.nets import S3FDNet
    from syncnet_python.SyncNetModel import S

    import pipeline.metrics.sync as sync
    from pipeline.metrics.compute import MetricsConfig, _lse

    torch.manual_seed(0)
    torch.save(S().state_dict(), tmp_path / "syncnet_v2.model")
    torch.save(S3FDNet(device="cpu").state_dict(), tmp_path / "sfd_face.pth")
    clip = tmp_path / "clip.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(SAMPLE_VIDEO), "-t", "1.6", str(clip)], check=True)

    class FixedBoxLSE(sync.LSE):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.det.detect_faces = lambda img, conf_th, scales: np.array([[150, 90, 370, 380, 0.99]])

    monkeypatch.setattr(sync, "LSE", FixedBoxLSE)
    default = _lse(MetricsConfig(weights_dir=tmp_path), clip)
    assert default["lse_c"].value is None and "needs more than 100" in default["lse_c"].na_reason
    short = _lse(MetricsConfig(weights_dir=tmp_path, lse_short_clips=True), clip)
    for k in ("lse_c", "lse_d"):
        assert short[k].value is not None and np.isfinite(short[k].value) and short[k].n_frames == 40
        assert short[k].note.startswith("short clip: 40 frames, not over the reference pipeline's 100-frame minimum")
        assert short[k].backend.endswith("; short clip")
