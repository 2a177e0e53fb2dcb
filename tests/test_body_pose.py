"""Body pose (pipeline.preprocess.body_pose), its condition ``body_pose`` and the torso that sees it
(``TrainConfig.torso_body_pose``)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tests.conftest import require_shared, train_all_stages
from pipeline.common.errors import InputError
from pipeline.models.conditions import get_condition
from pipeline.models.configs import make_config
from pipeline.preprocess import body_pose as B

torch.set_num_threads(1)

# Hand-marked shoulder joints (x, y in source pixels) on frame t = 2 s of
# ../shared/data/identities/longhair_pt_14s.mp4 (400x720): the middle of the bare shoulder caps
# beside the hair, as a person marks them. Subject's left shoulder (MediaPipe 11) is on the image's
# right.
LONGHAIR_SHOULDERS = {11: (330, 445), 12: (85, 445)}


def test_fill_missing_takes_the_nearest_found_frame():
    lm = np.arange(6 * 33 * 4, dtype=np.float32).reshape(6, 33, 4)
    found = np.array([False, True, False, False, True, False])
    out = B.fill_missing(lm, found)
    # frame 2 is 1 from frame 1 and 2 from frame 4; frame 3 the other way round
    assert [int(np.flatnonzero((out[i] == lm).all(axis=(1, 2)))[0]) for i in range(6)] == [1, 1, 1, 4, 4, 4]
    tie = B.fill_missing(lm[:3], np.array([True, False, True]))
    np.testing.assert_array_equal(tie[1], lm[0])                      # a tie takes the earlier frame
    edges = np.zeros(7, bool)
    edges[[2, 4]] = True                                  # none found before 2 or after 4; 3 is a tie
    lm7 = np.arange(7, dtype=np.float32)[:, None, None] * np.ones((1, 33, 4), np.float32)
    assert B.fill_missing(lm7, edges)[:, 0, 0].tolist() == [2, 2, 2, 2, 4, 4, 4]
    long = np.zeros(50_000, bool)                         # a long clip: no N x M distance matrix
    long[[10, 30_000]] = True
    got = B.fill_missing(np.arange(50_000, dtype=np.float32)[:, None, None] * np.ones((1, 33, 4), np.float32), long)
    assert got[[0, 15_005, 15_006, 49_999], 0, 0].tolist() == [10, 10, 30_000, 30_000]
    with pytest.raises(ValueError, match="no frame has a body"):
        B.fill_missing(lm, np.zeros(6, bool))


def test_shoulders_of_a_real_frame_at_hand_marked_points():
    """MediaPipe Pose (the model inside the mediapipe wheel) finds the shoulders of a real
    long-haired speaker within 30 px (7.5 % of the frame's width) of hand-marked joints."""
    from pipeline.preprocess.media import read_frames_at

    rgb = read_frames_at(require_shared("identities", "longhair_pt_14s.mp4"), [2.0])[0]
    lm, found = B.track([rgb])
    assert found.tolist() == [True] and lm.shape == (1, 33, 4)
    h, w = rgb.shape[:2]
    for k, (x, y) in LONGHAIR_SHOULDERS.items():
        got = lm[0, k, :2] * [w, h]
        assert np.hypot(*(got - [x, y])) < 30, (k, got.tolist())
        assert lm[0, k, 3] > 0.9                                        # visible


def test_stage_on_the_sample_dataset(sample_dataset):
    """The dataset's body_pose.npy: [N, 33, 4], every frame finite, both shoulders visible on the
    sample (a news anchor framed to mid-chest) and below the nose, left shoulder on the image's right."""
    lm = np.load(sample_dataset.body_pose)
    n = len(list(sample_dataset.ori_imgs.glob("*.jpg")))
    assert lm.shape == (n, 33, 4) and np.isfinite(lm).all()
    nose, left, right = lm[:, 0], lm[:, 11], lm[:, 12]
    assert (left[:, 1] > nose[:, 1]).all() and (right[:, 1] > nose[:, 1]).all()
    assert (left[:, 0] > nose[:, 0]).all() and (right[:, 0] < nose[:, 0]).all()
    rep = json.loads(sample_dataset.body_pose.with_suffix(".json").read_text())
    assert rep["frames"] == n and rep["found"] + rep["filled_from_nearest"] == n


def test_clip_without_a_body_builds_but_the_body_torso_refuses_it(tmp_path):
    """A clip where MediaPipe Pose finds no body (here grey frames; in practice a face-only crop)
    still gets its dataset file (NaN, a warning, the report says 0 found); the condition refuses
    it naming the file and the switch that trains without it."""
    frames = tmp_path / "ori_imgs"
    frames.mkdir()
    import cv2

    for i in range(2):
        cv2.imwrite(str(frames / f"{i}.jpg"), np.full((64, 64, 3), 128, np.uint8))
    assert B.main(["--frames", str(frames), "--out", str(tmp_path / "body_pose.npy"),
                   "--report", str(tmp_path / "body_pose.json")]) == 0
    lm = np.load(tmp_path / "body_pose.npy")
    assert lm.shape == (2, 33, 4) and np.isnan(lm).all()
    rep = json.loads((tmp_path / "body_pose.json").read_text())
    assert rep["found"] == 0 and rep["shoulder_std_px"] is None
    with pytest.raises(InputError, match=r"body_pose.npy: frame 0 has no shoulder landmarks .*torso_body_pose: false"):
        get_condition("body_pose").read(tmp_path, 2, "rad_nerf")


def test_condition_reads_the_shoulders_in_minus_one_to_one(tmp_path):
    lm = np.zeros((3, 33, 4), np.float32)
    lm[:, 11, :2] = [[0.75, 0.5], [0.5, 1.0], [1.1, 0.0]]
    lm[:, 12, :2] = [[0.25, 0.5], [0.0, 0.9], [0.2, 0.3]]
    np.save(tmp_path / "body_pose.npy", lm)
    cond = get_condition("body_pose")
    got = cond.read(tmp_path, 3, "rad_nerf")
    np.testing.assert_allclose(got, [[0.5, 0.0, -0.5, 0.0], [0.0, 1.0, -1.0, 0.8], [1.2, -1.0, -0.6, -0.4]],
                               atol=1e-6)
    stats = cond.summarize(got)
    np.testing.assert_allclose(stats["mean"], got.mean(0), atol=1e-6)
    np.testing.assert_allclose(stats["std"], got.std(0), atol=1e-6)
    np.save(tmp_path / "body_pose.npy", lm[:, :17])
    with pytest.raises(InputError, match=r"body_pose.npy: expected \[N, 33, 4\]"):
        cond.read(tmp_path, 3, "rad_nerf")
    lm[1, 12, 0] = np.nan
    np.save(tmp_path / "body_pose.npy", lm)
    with pytest.raises(InputError, match="body_pose.npy: frame 1 has no shoulder landmarks"):
        cond.read(tmp_path, 3, "rad_nerf")
    (tmp_path / "body_pose.npy").unlink()
    with pytest.raises(InputError, match=r"body_pose.npy: file not found \(method rad_nerf needs it"):
        cond.read(tmp_path, 3, "rad_nerf")



TINY = dict(levels=4, log2_hashmap=10, max_resolution=64, hidden=16, n_samples=8, occ_resolution=8,
            torso_levels=2, torso_resolution=32)


@pytest.mark.parametrize("method", ["rad_nerf", "er_nerf"])
def test_torso_sees_the_standardised_body_pose(method):
    """With torso_body_pose the torso's pose encoding gains the frequency-encoded standardised
    shoulders, clamp((b - mean) / (4 std), -1.5, 1.5); the body moves the torso; a missing body is
    an error, and without the switch the torso is the reference's (no body input)."""
    from pipeline.models.methods import get_method
    from pipeline.models.torso import freq_encode

    torch.manual_seed(0)
    cfg = make_config(method, {**TINY, "torso_body_pose": True})
    torso = get_method(method).torso(cfg)
    mean, std = torch.tensor([0.3, 0.1, -0.3, 0.1]), torch.tensor([0.02, 0.05, 0.0, 0.01])
    torso.set_body_stats(mean, std)
    body = mean + 4 * torch.tensor([0.02, -0.05, 1e-3, 1.0])           # z = (1, -1, 1, 1.5 clamped from 100)
    z = torch.tensor([[1.0, -1.0, 1.0, 1.5]])
    feats = torso.body_features(body)
    torch.testing.assert_close(feats[:, :4], z)                          # the raw block of the encoding
    torch.testing.assert_close(feats, freq_encode(z, torso.body_freqs), atol=1e-4, rtol=0)  # sin(2^k pi z) of a z 1e-7 off
    xy = torch.rand(25, 2) * 2 - 1
    pose = torch.eye(4)[:3].reshape(-1).clone()
    pose[11] = 3.0
    rgb, alpha, dxy = torso(xy, pose, body)
    assert rgb.shape == (25, 3) and alpha.shape == (25,) and dxy.shape == (25, 2)
    moved = body + torch.tensor([0.04, 0.0, 0.0, 0.0])
    assert (torso(xy, pose, moved)[0] - rgb).abs().max() > 1e-5          # the shoulders move the torso
    with pytest.raises(ValueError, match="conditioned on the body pose"):
        torso(xy, pose)
    plain = get_method(method).torso(make_config(method, TINY))
    assert not plain.uses_body and "body_mean" not in plain.state_dict()
    assert torso.deform_net[0].in_features == plain.deform_net[0].in_features + 4 * (1 + 2 * torso.body_freqs)


def test_profiles_and_model_conditions():
    """The quick profile conditions the torso on the body pose (cause 12 of docs/quality.md); the
    paper profile keeps the anchors' torsos; the condition list follows the switch."""
    from pipeline.models.methods import model_conditions
    from pipeline.train.profiles import resolve_config

    quick = resolve_config("rad_nerf", {"profile": "quick"})
    paper = resolve_config("er_nerf", {"profile": "paper"})
    assert quick.torso_body_pose and not paper.torso_body_pose
    assert model_conditions(quick) == ("audio", "eye", "body_pose", "body_flow")
    assert model_conditions(paper) == ("audio", "eye")
    off = resolve_config("rad_nerf", {"profile": "quick", "overrides": {"torso_body_pose": False,
                                                                        "torso_body_flow": False}})
    assert model_conditions(off) == ("audio", "eye")


def test_trained_torso_keeps_its_body_statistics(tmp_path, dev_dataset):
    """Smoke training with torso_body_pose on 24 real frames: the body pose's training mean and
    spread are in the model's meta and the torso's buffers (saved with it), the render protocols'
    per-frame reader hands each frame its own body pose, and the render follows it."""
    from pipeline.common.layout import DatasetLayout
    from pipeline.models.api import FrameInput
    from pipeline.models.registry import load_trained
    from pipeline.render.protocol import frame_conditions
    from pipeline.train.profiles import resolve_config

    cfg = resolve_config("rad_nerf", {"profile": "smoke", "overrides": {"torso_body_pose": True}})
    head = load_trained(train_all_stages(cfg, dev_dataset, tmp_path / "m"))
    assert head.conditions == ("audio", "eye", "body_pose")
    train_vals = get_condition("body_pose").read(dev_dataset, 24, "rad_nerf")[:22]
    stats = head.meta["condition_values"]["body_pose"]
    np.testing.assert_allclose(stats["mean"], train_vals.mean(0), atol=1e-5)
    np.testing.assert_allclose(head.model.torso.body_mean.numpy(), train_vals.mean(0), atol=1e-5)
    np.testing.assert_allclose(head.model.torso.body_std.numpy(), np.maximum(train_vals.std(0), 1e-3), atol=1e-5)
    every = get_condition("body_pose").read(dev_dataset, 24, "rad_nerf")
    conds = frame_conditions(DatasetLayout(dev_dataset, "dev"), np.array([23, 5]), head.conditions, "rad_nerf")
    np.testing.assert_array_equal(conds["body_pose"], every[[23, 5]])   # the protocols' per-frame values
    val = json.loads((dev_dataset / "transforms_val.json").read_text())["frames"][-1]
    feats = torch.from_numpy(np.load(dev_dataset / "aud_mel.npy"))
    frame = FrameInput(torch.tensor(val["transform_matrix"], dtype=torch.float32),
                       head.audio_window(feats, val["aud_id"]), torch.rand(64, 64, 3),
                       {"eye": torch.as_tensor(conds["eye"][0]), "body_pose": torch.as_tensor(conds["body_pose"][0])})
    a = head.render(frame)["rgb"]
    shifted = dict(frame.conditions, body_pose=frame.conditions["body_pose"] + 0.2)
    b = head.render(FrameInput(frame.c2w, frame.audio, frame.background, shifted))["rgb"]
    assert (a - b).abs().max() > 1e-4
    with pytest.raises(ValueError, match=r"missing \['body_pose'\]"):
        head.render(FrameInput(frame.c2w, frame.audio, frame.background, {"eye": frame.conditions["eye"]}))


def test_tables_say_when_the_torso_saw_the_body_pose(tmp_path):
    """The metric JSON's ``training`` (from train_manifest.json) and the tables' Training column:
    a torso that saw the body pose is named, with a footnote saying it is not the paper's."""
    import pandas as pd

    from pipeline.metrics import BODY_POSE_TORSO
    from pipeline.metrics.compute import training_setup
    from pipeline.report.presets import get_preset
    from pipeline.report.tables import build_table

    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "train_manifest.json").write_text(json.dumps(
        {"profile": "quick", "config": {"profile": "quick", "torso_body_pose": True}}))
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "train_manifest.json").write_text(json.dumps(
        {"profile": "paper", "config": {"profile": "paper", "torso_body_pose": False}}))
    assert training_setup(tmp_path / "a") == f"quick, {BODY_POSE_TORSO}"
    assert training_setup(tmp_path / "b") == "paper"
    assert training_setup(tmp_path / "c") is None and training_setup(None) is None
    rows = [{"method": m, "identity": "German", "protocol": "self_driven", "test": "self", "metric": "psnr",
             "value": v, "backend": "skimage", "na_reason": None, "n_frames": 10, "compositing": "full",
             "resolution": "128x128", "training": t, "note": None, "weights_sha256": None, "source_file": "x"}
            for m, v, t in (("rad_nerf", 30.0, f"quick, {BODY_POSE_TORSO}"), ("er_nerf", 29.0, "paper"))]
    df = pd.DataFrame(rows)
    reported = pd.DataFrame(columns=["method", "source", "table", "metric", "value", "notes", "setup", "resolution", "id"])
    tab = build_table(df, get_preset("livenerf_table2"), "self_driven", ["rad_nerf", "er_nerf"], reported)
    assert tab.headers[:3] == ["Resolution", "Compositing", "Training"]
    cells = {r["method"]: r["cells"][:3] for r in tab.rows}
    k = 1 + next(i for i, n in enumerate(tab.footnotes) if n.startswith(f"Training '{BODY_POSE_TORSO}'"))
    assert cells == {"rad_nerf": ["128x128", "full", f"quick, {BODY_POSE_TORSO} ({k})"],
                     "er_nerf": ["128x128", "full", "paper"]}
    assert "do not (head pose only" in tab.footnotes[k - 1]
