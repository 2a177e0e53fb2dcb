"""Body flow (pipeline.preprocess.body_flow), its condition ``body_flow`` and the torso that sees it
(``TrainConfig.torso_body_flow``; docs/quality.md cause 16)."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch

from tests.conftest import table_with_training, train_all_stages
from pipeline.common.errors import InputError
from pipeline.models.conditions import get_condition
from pipeline.models.configs import make_config
from pipeline.preprocess import body_flow as F

torch.set_num_threads(1)

TINY = dict(levels=4, log2_hashmap=10, max_resolution=64, hidden=16, n_samples=8, occ_resolution=8,
            torso_levels=2, torso_resolution=32)


def test_reference_frame_is_the_one_nearest_the_median_shoulders():
    sh = np.array([[0.0, 0.0, 1.0, 0.0],
                   [0.1, 0.0, 1.1, 0.0],      # median of the finite rows: (0.1, 0, 1.1, 0) -> this frame
                   [np.nan, 0.0, 1.0, 0.0],
                   [0.5, 0.2, 1.5, 0.2],
                   [0.2, 0.0, 1.2, 0.0]])
    assert F.reference_frame(sh, 5) == 1
    assert F.reference_frame(None, 5) == 2
    assert F.reference_frame(np.full((4, 4), np.nan), 4) == 2
    with pytest.raises(ValueError, match="at least one frame"):
        F.reference_frame(None, 0)


def test_body_cells_split_the_body_box_and_replace_slivers():
    """A torso of rows 12-29 x columns 0-29 (18 x 30 px) gives 9 cells of 6 x 10 = 60 px; a neck
    sliver above it widens the box upwards, and a cell with under 2 % of the body takes the whole
    body instead."""
    lab = np.zeros((30, 30), np.uint8)
    lab[12:, :] = 3
    lab[:5, :5] = 1                                     # head: not body
    masks, pixels, whole = F.body_cells(lab)
    assert len(masks) == 9 and pixels == [60] * 9 and not any(whole)
    assert all(m.sum() == 60 for m in masks)
    assert masks[0][12:18, 0:10].all() and masks[8][24:30, 20:30].all()
    lab[0:3, 14:16] = 2                                 # neck: 6 px at the top -> box rows 0-29
    masks, pixels, whole = F.body_cells(lab)
    # rows 0-9 hold the 6 neck px (middle column: cells 0-9 of columns 10-19); 540 + 6 body px in all
    assert pixels[:3] == [0, 6, 0] and whole[:3] == [True, True, True]     # 6 < 2 % of 546
    body = np.isin(lab, (2, 3))
    assert all((masks[k] == body).all() for k in range(3)) and sum(pixels) == 546
    assert pixels[3:] == [80, 80, 80, 100, 100, 100] and masks[4][12:20, 10:20].all()
    assert F.body_cells(np.zeros((8, 8), np.uint8)) == ([], [], [])


def test_flow_of_a_shifted_real_frame(sample_dataset):
    """A real frame of the sample against itself moved by (+3, -2) px at the flow's 256 px, in the
    frame's [-1, 1] units (2 px / 256): the cells of the middle column (collar, tie, buttons:
    textured) measure the shift within 0.1 px; every cell points along it and none overshoots (the
    dark suit's flat cells and the frame's replicated border under-read it)."""
    from pipeline.preprocess.parsing import read_parsing

    frame = cv2.imread(str(sample_dataset.ori_imgs / "40.jpg"))
    ref = F.grey(frame, F.SIZE)
    h, w = ref.shape
    moved = cv2.warpAffine(ref, np.float32([[1, 0, 3], [0, 1, -2]]), (w, h), borderMode=cv2.BORDER_REPLICATE)
    labels = cv2.resize(read_parsing(sample_dataset.root / "parsing" / "40.png"), (w, h),
                        interpolation=cv2.INTER_NEAREST)
    masks, _, whole = F.body_cells(labels)
    got = F.cell_flow(ref, moved, masks)
    assert got.shape == (9, 2) and got.dtype == np.float32
    assert sum(not x for x in whole) >= 5                        # the sample's body fills most cells
    px = got * [w / 2, h / 2]
    np.testing.assert_allclose(px[[1, 4, 7]], np.tile([3.0, -2.0], (3, 1)), atol=0.1)
    assert (px[:, 0] > 0.3).all() and (px[:, 1] < -0.2).all()
    assert (px[:, 0] < 3.3).all() and (px[:, 1] > -2.3).all()
    np.testing.assert_allclose(px[:, 1] / px[:, 0], -2 / 3, atol=0.05)     # the shift's direction
    np.testing.assert_allclose(F.cell_flow(ref, ref, masks), 0, atol=1e-4)     # 0.013 px


def test_stage_on_the_sample_dataset(sample_dataset):
    """The dataset's body_flow.npy: [N, 9, 2], finite, zero at the reference frame, small (the
    anchor hardly moves: RMS under 2 % of the frame); the report names the reference and cells."""
    flow = np.load(sample_dataset.body_flow)
    n = len(list(sample_dataset.ori_imgs.glob("*.jpg")))
    assert flow.shape == (n, 9, 2) and np.isfinite(flow).all()
    rep = json.loads(sample_dataset.body_flow.with_suffix(".json").read_text())
    assert rep["frames"] == n and rep["grid"] == 3 and len(rep["cell_body_pixels"]) == 9
    np.testing.assert_allclose(flow[rep["reference_frame"]], 0, atol=1e-3)
    assert 0 < max(rep["rms_displacement"]) < 0.04
    assert "calcOpticalFlowFarneback" in rep["backend"]
    man = json.loads(sample_dataset.manifest.read_text())
    assert man["counts"]["body_flow"] == n


def test_condition_reads_eighteen_numbers_per_frame(tmp_path):
    flow = np.arange(3 * 9 * 2, dtype=np.float32).reshape(3, 9, 2) / 100
    np.save(tmp_path / "body_flow.npy", flow)
    cond = get_condition("body_flow")
    got = cond.read(tmp_path, 3, "rad_nerf")
    assert got.shape == (3, 18)
    np.testing.assert_array_equal(got[1], flow[1].reshape(-1))        # x0, y0, x1, y1, ...
    np.save(tmp_path / "body_flow.npy", flow[:, :4])
    with pytest.raises(InputError, match=r"body_flow.npy: expected \[N, 9, 2\]"):
        cond.read(tmp_path, 3, "rad_nerf")
    flow[2, 5, 1] = np.inf
    np.save(tmp_path / "body_flow.npy", flow)
    with pytest.raises(InputError, match="body_flow.npy: frame 2 has a non-finite body flow"):
        cond.read(tmp_path, 3, "rad_nerf")


@pytest.mark.parametrize("method", ["rad_nerf", "er_nerf"])
def test_torso_reads_the_flow_after_the_shoulders(method):
    """With torso_body_flow the body input is 4 + 18 numbers, encoded as the shoulders are; the
    body frame still maps by the first 4 (the shoulders); the flow moves the torso."""
    from pipeline.models.methods import get_method

    torch.manual_seed(0)
    cfg = make_config(method, {**TINY, "torso_body_pose": True, "torso_body_flow": True, "torso_body_frame": "on"})
    torso = get_method(method).torso(cfg)
    shoulders = get_method(method).torso(make_config(method, {**TINY, "torso_body_pose": True}))
    assert torso.uses_flow and torso.body_dim == 22 and tuple(torso.body_mean.shape) == (22,)
    assert torso.deform_net[0].in_features == shoulders.deform_net[0].in_features + 18 * (1 + 2 * torso.body_freqs)
    mean = torch.cat([torch.tensor([0.3, 0.1, -0.3, 0.1]), torch.zeros(18)])
    torso.set_body_stats(mean, torch.full((22,), 0.01))
    torso.body_frame = True
    xy = torch.rand(16, 2) * 2 - 1
    body = mean.clone()
    torch.testing.assert_close(torso.to_body_frame(xy, body), xy)      # shoulders at their mean
    pose = torch.eye(4)[:3].reshape(-1)
    a = torso(xy, pose, body)[0]
    flowed = body.clone()
    flowed[4:] = 0.02
    assert (torso(xy, pose, flowed)[0] - a).abs().max() > 1e-5
    torch.testing.assert_close(torso.to_body_frame(xy, flowed), xy)    # the flow does not move the frame
    with pytest.raises(InputError, match="torso_body_flow needs torso_body_pose"):
        make_config(method, {**TINY, "torso_body_flow": True})


def test_profiles_turn_the_flow_on_in_quick_only():
    from pipeline.models.methods import model_conditions
    from pipeline.train.profiles import resolve_config

    quick = resolve_config("er_nerf", {"profile": "quick"})
    assert quick.torso_body_flow and model_conditions(quick) == ("audio", "eye", "body_pose", "body_flow")
    paper = resolve_config("rad_nerf", {"profile": "paper"})
    assert not paper.torso_body_flow and model_conditions(paper) == ("audio", "eye")


def test_trained_torso_keeps_its_flow_statistics(tmp_path, dev_dataset):
    """Smoke training with the body flow on 24 real frames: the flow's training mean is in the
    meta and in the torso's buffers after the shoulders', each frame's flow reaches the torso, a
    record without it is refused, and the tables' Training cell names it."""
    from pipeline.metrics import BODY_FLOW_TORSO
    from pipeline.metrics.compute import training_setup
    from pipeline.models.api import FrameInput
    from pipeline.models.registry import load_trained
    from pipeline.train.profiles import resolve_config

    cfg = resolve_config("rad_nerf", {"profile": "smoke",
                                      "overrides": {"torso_body_pose": True, "torso_body_flow": True}})
    model_dir = train_all_stages(cfg, dev_dataset, tmp_path / "m")
    head = load_trained(model_dir)
    assert head.conditions == ("audio", "eye", "body_pose", "body_flow")
    train_flow = get_condition("body_flow").read(dev_dataset, 24, "rad_nerf")[:22]
    assert np.abs(train_flow).max() > 0                       # the dev clip's body moves
    np.testing.assert_allclose(head.meta["condition_values"]["body_flow"]["mean"], train_flow.mean(0), atol=1e-6)
    np.testing.assert_allclose(head.model.torso.body_mean.numpy()[4:], train_flow.mean(0), atol=1e-6)
    assert training_setup(model_dir).endswith(BODY_FLOW_TORSO)
    val = json.loads((dev_dataset / "transforms_val.json").read_text())["frames"][-1]
    feats = torch.from_numpy(np.load(dev_dataset / "aud_mel.npy"))
    body = torch.from_numpy(get_condition("body_pose").read(dev_dataset, 24, "rad_nerf")[23])
    flow = torch.from_numpy(get_condition("body_flow").read(dev_dataset, 24, "rad_nerf")[23])
    conds = {"eye": torch.tensor([0.2]), "body_pose": body, "body_flow": flow}
    frame = FrameInput(torch.tensor(val["transform_matrix"], dtype=torch.float32),
                       head.audio_window(feats, val["aud_id"]), torch.rand(64, 64, 3), conds)
    a = head.render(frame)["rgb"]
    b = head.render(FrameInput(frame.c2w, frame.audio, frame.background, {**conds, "body_flow": flow + 0.05}))["rgb"]
    assert (a - b).abs().max() > 1e-4
    with pytest.raises(ValueError, match=r"missing \['body_flow'\]"):
        head.render(FrameInput(frame.c2w, frame.audio, frame.background,
                               {"eye": conds["eye"], "body_pose": body}))


def test_stage_refuses_a_body_pose_of_another_clip(tmp_path):
    """body_pose.npy with another frame count is refused with one line naming it."""
    frames = tmp_path / "ori_imgs"
    frames.mkdir()
    for i in range(3):
        cv2.imwrite(str(frames / f"{i}.jpg"), np.full((32, 32, 3), 100, np.uint8))
    np.save(tmp_path / "body_pose.npy", np.zeros((2, 33, 4), np.float32))
    args = ["--frames", str(frames), "--parsing", str(tmp_path), "--body-pose", str(tmp_path / "body_pose.npy"),
            "--out", str(tmp_path / "body_flow.npy"), "--report", str(tmp_path / "body_flow.json")]
    with pytest.raises(InputError, match=r"body_pose.npy: expected \[3, 33, 4\] landmarks, got shape \[2, 33, 4\]"):
        F.main(args)
    assert not (tmp_path / "body_flow.npy").exists()


def test_tables_footnote_the_body_flow():
    """A Training cell naming the body flow gets a footnote saying where the flow was measured and
    that the published torsos do not see it."""
    from pipeline.metrics import BODY_FLOW_TORSO, BODY_POSE_TORSO

    training = f"quick, {BODY_POSE_TORSO}, {BODY_FLOW_TORSO}"
    tab = table_with_training(training, "er_nerf")
    k = 1 + next(i for i, n in enumerate(tab.footnotes) if n.startswith(f"Training '{BODY_FLOW_TORSO}'"))
    assert tab.rows[0]["cells"][2].startswith(training + " (") and str(k) in tab.rows[0]["cells"][2]
    note = tab.footnotes[k - 1]
    assert "validation frame itself" in note and "cause 16" in note and "do not (head pose only" in note
