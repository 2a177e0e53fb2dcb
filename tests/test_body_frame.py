"""The torso in the body's frame (``TrainConfig.torso_body_frame``): each frame's image coordinates
mapped by the similarity that takes its shoulders onto their training mean, on for a body that
sways across the frame (docs/quality.md, cause 15)."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from pipeline.common.errors import InputError
from pipeline.models.configs import make_config
from pipeline.models.model import body_frame_meta
from pipeline.models.torso import AdaptivePoseTorso, TorsoField, body_sway

torch.set_num_threads(1)

TINY = dict(levels=4, log2_hashmap=10, max_resolution=64, hidden=16, n_samples=8, occ_resolution=8,
            torso_levels=2, torso_resolution=32, torso_body_pose=True)
MEAN = [0.5, 0.6, -0.5, 0.6]      # training mean: shoulders at x = +-0.5, y = 0.6 (width 1.0)


def test_body_sway_is_the_midpoint_spread_in_shoulder_widths():
    """Hand-computed: shoulders 0.5 apart whose midpoint sits at x = -0.05 and +0.05 on alternate
    frames: RMS distance 0.05, sway 0.05 / 0.5 = 0.1; a width change alone does not sway."""
    body = np.array([[0.2, 0.5, -0.3, 0.5], [0.3, 0.5, -0.2, 0.5]] * 5)
    assert body_sway(body) == pytest.approx(0.1)
    widen = np.array([[0.25, 0.5, -0.25, 0.5], [0.3, 0.5, -0.3, 0.5]])
    assert body_sway(widen) == pytest.approx(0.0, abs=1e-12)
    # a midpoint moving by (0.03, 0.04) on half the frames: RMS 0.025, width 1.0
    body = np.array([[0.5, 0.6, -0.5, 0.6], [0.53, 0.64, -0.47, 0.64]])
    assert body_sway(body) == pytest.approx(0.025)
    with pytest.raises(ValueError, match=r"\[N, 4\]"):
        body_sway(np.zeros((3, 2)))
    with pytest.raises(ValueError, match="coincide"):
        body_sway(np.zeros((3, 4)))


@pytest.mark.parametrize("torso_cls", [TorsoField, AdaptivePoseTorso])
def test_to_body_frame_takes_the_shoulders_onto_their_mean(torso_cls):
    """The mapping sends each shoulder of the frame onto its training mean; identity at the mean;
    a body rotated by 90 degrees about its midpoint and shifted is rotated and shifted back
    (hand-computed)."""
    torso = torso_cls(make_config("rad_nerf", TINY))
    torso.set_body_stats(MEAN, [0.05] * 4)
    xy = torch.tensor([[0.0, 0.0], [0.3, -0.2], [-0.9, 0.9]])
    torch.testing.assert_close(torso.to_body_frame(xy, torch.tensor(MEAN)), xy)
    body = torch.tensor([0.62, 0.55, -0.41, 0.63])
    out = torso.to_body_frame(body.reshape(2, 2), body)
    torch.testing.assert_close(out, torch.tensor(MEAN).reshape(2, 2), atol=1e-6, rtol=0)
    # the body turned by +90 degrees about its midpoint (0.1, 0.6) (shoulders at (0.1, 1.1) and
    # (0.1, 0.1)): a point 0.2 above that midpoint, (0.1, 0.4), comes back to 0.2 left of the mean
    # midpoint (0, 0.6) turned by -90 degrees: (-0.2, 0.6)
    turned = torch.tensor([0.1, 1.1, 0.1, 0.1])
    torch.testing.assert_close(torso.to_body_frame(torch.tensor([[0.1, 0.4]]), turned),
                               torch.tensor([[-0.2, 0.6]]), atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="coincide"):
        torso.to_body_frame(xy, torch.tensor([0.3, 0.3, 0.3, 0.3]))


def test_torso_reads_image_coordinates_in_the_body_frame():
    """With ``body_frame`` on the torso's output at a pixel is the output of the plain torso at the
    mapped pixel: a body shifted by (0.1, 0) in the image is drawn shifted by (0.1, 0)."""
    torch.manual_seed(0)
    torso = TorsoField(make_config("rad_nerf", TINY))
    torso.set_body_stats(MEAN, [0.05] * 4)
    pose = torch.eye(4)[:3].reshape(-1)
    xy = torch.rand(50, 2) * 1.6 - 0.8
    shifted = torch.tensor(MEAN) + torch.tensor([0.1, 0.0, 0.1, 0.0])
    plain = torso(xy, pose, shifted)
    torso.body_frame = True
    framed = torso(xy + torch.tensor([0.1, 0.0]), pose, shifted)
    torso.body_frame = False
    # the body-pose features still see the shifted shoulders, only the image coordinates move
    for a, b in zip(framed, plain):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    torso.body_frame = True
    with pytest.raises(ValueError, match="body is None"):
        torso(xy, pose, None)


def test_auto_turns_on_for_a_swaying_body_only():
    """``off``: no meta; ``on``: always; ``auto``: from ``torso_body_frame_min_sway`` (0.035 by
    default) of the training frames' sway."""
    still = np.array([[0.5, 0.6, -0.5, 0.6], [0.52, 0.6, -0.48, 0.6]])       # sway 0.01
    sway = np.array([[0.45, 0.6, -0.55, 0.6], [0.55, 0.6, -0.45, 0.6]])      # sway 0.05
    cfg = lambda mode, **kw: make_config("rad_nerf", {**TINY, "torso_body_frame": mode, **kw})  # noqa: E731
    assert body_frame_meta(cfg("off"), sway) is None
    assert body_frame_meta(cfg("auto"), still) == {"mode": "auto", "sway": 0.01, "min_sway": 0.035, "on": False}
    assert body_frame_meta(cfg("auto"), sway)["on"] is True
    assert body_frame_meta(cfg("on"), still)["on"] is True
    assert body_frame_meta(cfg("auto", torso_body_frame_min_sway=0.005), still)["on"] is True
    with pytest.raises(InputError, match="one of off, on, auto"):
        cfg("always")
    with pytest.raises(InputError, match="torso_body_frame_min_sway -0.1"):
        cfg("auto", torso_body_frame_min_sway=-0.1)
    with pytest.raises(InputError, match="needs torso_body_pose"):
        make_config("rad_nerf", {**TINY, "torso_body_pose": False, "torso_body_frame": "on"})
    # a clip without shoulders is trained with torso_body_pose off (the body-pose loader's advice):
    # the quick profile's auto then stays off instead of refusing
    assert make_config("rad_nerf", {**TINY, "torso_body_pose": False, "torso_body_frame": "auto"}).torso_body_frame == "auto"


def test_quick_profile_decides_per_identity_and_paper_keeps_the_references():
    from pipeline.train.profiles import resolve_config

    assert resolve_config("er_nerf", {"profile": "quick"}).torso_body_frame == "auto"
    assert resolve_config("er_nerf", {"profile": "paper"}).torso_body_frame == "off"


def test_model_sets_the_torso_frame_from_its_meta():
    """The decision lives in the model's meta (so a loaded model draws as it was trained); a
    model without ``meta["body_frame"]`` (older, or off) keeps the image-plane torso."""
    from pipeline.models.registry import build_model

    cfg = make_config("er_nerf", {**TINY, "torso_body_frame": "auto", "resolution": 16})
    meta = {"H": 16, "W": 16, "focal": 20.0, "cx": 8.0, "cy": 8.0, "scene_scale": 1.0, "bound": 1.0,
            "audio_shape": [16, 8], "condition_values": {"body_pose": {"mean": MEAN, "std": [0.05] * 4}}}
    assert build_model(cfg, meta).torso.body_frame is False
    on = {**meta, "body_frame": {"mode": "auto", "sway": 0.1, "min_sway": 0.035, "on": True}}
    assert build_model(cfg, on).torso.body_frame is True
    assert build_model(cfg, {**on, "body_frame": {**on["body_frame"], "on": False}}).torso.body_frame is False


def test_trained_model_records_the_decision_and_the_tables_say_so(tmp_path, dev_dataset):
    """Smoke training on 24 real frames of the sample with ``torso_body_frame: on``: the meta and
    the manifest hold the sample's sway (computed here from body_pose.npy) and the decision, the
    loaded model draws in the body frame, and the Training column names it with its footnote."""
    from pipeline.metrics import BODY_FRAME_TORSO
    from pipeline.metrics.compute import training_setup
    from pipeline.models.registry import load_trained
    from pipeline.preprocess.body_pose import SHOULDERS
    from pipeline.train.profiles import resolve_config
    from tests.conftest import train_all_stages

    cfg = resolve_config("rad_nerf", {"profile": "smoke", "overrides": {"torso_body_pose": True,
                                                                        "torso_body_frame": "on"}})
    model_dir = train_all_stages(cfg, dev_dataset, tmp_path / "m")
    ids = [f["img_id"] for f in json.loads((dev_dataset / "transforms_train.json").read_text())["frames"]]
    lm = np.load(dev_dataset / "body_pose.npy")[ids][:, list(SHOULDERS), :2].reshape(len(ids), 4) * 2 - 1
    manifest = json.loads((model_dir / "train_manifest.json").read_text())
    assert manifest["body_frame"]["on"] is True
    assert manifest["body_frame"]["sway"] == pytest.approx(body_sway(lm), abs=1e-5)
    assert math.isfinite(manifest["val_psnr_db"])
    head = load_trained(model_dir)
    assert head.model.torso.body_frame is True
    assert training_setup(model_dir).endswith(BODY_FRAME_TORSO)

    import pandas as pd

    from pipeline.report.presets import get_preset
    from pipeline.report.tables import build_table

    rows = [{"method": "rad_nerf", "identity": "German", "protocol": "self_driven", "test": "self", "metric": "psnr",
             "value": 30.0, "backend": "skimage", "na_reason": None, "n_frames": 10, "compositing": "full",
             "resolution": "128x128", "training": training_setup(model_dir), "note": None,
             "weights_sha256": None, "source_file": "x"}]
    reported = pd.DataFrame(columns=["method", "source", "table", "metric", "value", "notes", "setup", "resolution", "id"])
    tab = build_table(pd.DataFrame(rows), get_preset("livenerf_table2"), "self_driven", ["rad_nerf"], reported)
    assert any(n.startswith(f"Training '{BODY_FRAME_TORSO}'") and "cause 15" in n for n in tab.footnotes)
