"""The head-up input (``TrainConfig.head_up``): the camera's up axis in head coordinates, derived
from each frame's pose and fed to the head field (docs/quality.md, cause 14)."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from tests.conftest import train_all_stages
from pipeline.models.configs import make_config
from pipeline.models.model import HEAD_UP_DIM, head_up_stats, head_up_value

torch.set_num_threads(1)

TINY = dict(levels=4, log2_hashmap=10, max_resolution=64, hidden=16, n_samples=8, occ_resolution=8,
            torso_levels=2, torso_resolution=32)



def roll(deg: float, t=(0.0, 0.0, 4.0)) -> np.ndarray:
    """A camera-to-head matrix rolled by ``deg`` about the viewing axis (z)."""
    a = math.radians(deg)
    m = np.eye(4, dtype=np.float32)
    m[:3, :3] = [[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]]
    m[:3, 3] = t
    return m


def test_head_up_is_the_standardised_up_axis():
    """Hand-computed: rolls of -10, 0 and +10 degrees have up axes (-sin a, cos a, 0); their mean is
    (0, (1 + 2 cos 10) / 3, 0) and the spread gets the 1e-3 floor where it is 0 (z)."""
    poses = np.stack([roll(-10), roll(0), roll(10)])
    stats = head_up_stats(poses)
    s, c = math.sin(math.radians(10)), math.cos(math.radians(10))
    np.testing.assert_allclose(stats["mean"], [0.0, (1 + 2 * c) / 3, 0.0], atol=1e-7)
    np.testing.assert_allclose(stats["std"], [math.sqrt(2 / 3) * s + 1e-3,
                                              math.sqrt(((1 - (1 + 2 * c) / 3) ** 2 + 2 * (c - (1 + 2 * c) / 3) ** 2) / 3) + 1e-3,
                                              1e-3], rtol=1e-5)
    v = head_up_value(torch.from_numpy(roll(10)), stats)
    assert v.shape == (HEAD_UP_DIM,) and v.dtype == torch.float32
    np.testing.assert_allclose(v.numpy(), [(-s - 0.0) / stats["std"][0], (c - stats["mean"][1]) / stats["std"][1], 0.0],
                               rtol=1e-5, atol=1e-6)
    # a pose far outside the training range (90 degrees of roll) is clamped to 5 spreads
    np.testing.assert_allclose(head_up_value(torch.from_numpy(roll(90)), stats).numpy(), [-5.0, -5.0, 0.0], atol=1e-6)
    # only the rotation is read: the translation (scene units or transforms units) does not matter
    torch.testing.assert_close(head_up_value(torch.from_numpy(roll(10, (1.0, 2.0, 9.0))), stats), v)
    with pytest.raises(ValueError, match="at least one training pose"):
        head_up_stats(np.zeros((0, 4, 4), np.float32))


@pytest.mark.parametrize("method", ["rad_nerf", "er_nerf"])
def test_head_fields_read_the_head_up_input(method):
    """With head_up the density MLP takes 3 more inputs and the field's output follows
    ``cond["head_up"]``; without it the field is the reference's (same input width, no up input)."""
    from pipeline.models.methods import get_method

    torch.manual_seed(0)
    on = get_method(method).field(make_config(method, {**TINY, "head_up": True}), 8)
    off = get_method(method).field(make_config(method, TINY), 8)
    assert on.sigma_net[0].in_features == off.sigma_net[0].in_features + HEAD_UP_DIM
    x = torch.rand(64, 3) * 2 - 1
    d = torch.nn.functional.normalize(torch.randn(64, 3), dim=-1)
    cond = {"audio": torch.randn(8), "eye": torch.tensor([0.3]), "head_up": torch.zeros(3)}
    a = on(x, d, cond)
    b = on(x, d, {**cond, "head_up": torch.tensor([1.5, -1.0, 0.5])})
    assert (a.sigma - b.sigma).abs().max() > 1e-6 and (a.rgb - b.rgb).abs().max() > 1e-6
    with pytest.raises(KeyError, match="head_up"):
        on(x, d, {"audio": cond["audio"], "eye": cond["eye"]})
    off(x, d, {"audio": cond["audio"], "eye": cond["eye"]})          # the reference field needs no up input


@pytest.mark.parametrize("method", ["aed_nerf", "nerf3dtalker"])
def test_rad_nerf_subclasses_read_the_head_up_input(method):
    """The fields built on RAD-NeRF's (AED-NeRF's emotion input, NeRF-3DTalker's own density
    input) take the head-up input too, so the quick profile trains every registered method."""
    from pipeline.models.methods import get_method

    torch.manual_seed(0)
    on = get_method(method).field(make_config(method, {**TINY, "head_up": True}), 8)
    off = get_method(method).field(make_config(method, TINY), 8)
    assert on.sigma_net[0].in_features == off.sigma_net[0].in_features + HEAD_UP_DIM
    on.eval()
    x = torch.rand(32, 3) * 2 - 1
    d = torch.nn.functional.normalize(torch.randn(32, 3), dim=-1)
    cond = {"audio": torch.randn(8), "eye": torch.tensor([0.3]), "emotion": torch.eye(8)[0],
            "prior3d": torch.rand(126), "audio_window": torch.randn(8, 16, 80), "head_up": torch.zeros(3)}
    with torch.no_grad():
        a = on(x, d, cond)
        b = on(x, d, {**cond, "head_up": torch.tensor([2.0, -1.0, 1.0])})
    assert (a.sigma - b.sigma).abs().max() > 1e-6


@pytest.mark.parametrize("method", ["rad_nerf", "er_nerf", "aed_nerf", "nerf3dtalker"])
def test_head_up_input_is_gated_by_position(method):
    """Every head field takes the up axis through a gate of the position, ``up x
    sigmoid(up_att(enc(x)))`` (ER-NeRF's form for its eye input; rad_nerf's ungated direct input
    carried some of the sample's mouth motion, docs/quality.md cause 14): with the gate shut (its
    output layer zero, bias -100) the up axis changes nothing; open (bias +100), it moves the
    densities."""
    from pipeline.models.methods import get_method

    torch.manual_seed(0)
    field = get_method(method).field(make_config(method, {**TINY, "head_up": True}), 8)
    field.eval()
    x = torch.rand(32, 3) * 2 - 1
    d = torch.nn.functional.normalize(torch.randn(32, 3), dim=-1)
    cond = {"audio": torch.randn(8), "eye": torch.tensor([0.3]), "emotion": torch.eye(8)[0],
            "prior3d": torch.rand(126), "audio_window": torch.randn(8, 16, 80), "head_up": torch.zeros(3)}
    last = field.up_att[-1]
    for bias, moves in ((-100.0, False), (100.0, True)):
        with torch.no_grad():
            last.weight.zero_()
            last.bias.fill_(bias)
            a = field(x, d, cond)
            b = field(x, d, {**cond, "head_up": torch.tensor([2.0, -1.0, 1.0])})
        change = float((a.sigma - b.sigma).abs().max())
        assert (change > 1e-6) == moves, (bias, change)


def test_quick_profile_turns_it_on():
    """The quick profile gives the head the up axis (cause 14 of docs/quality.md); the paper
    profile keeps the papers' heads; it is not a dataset condition (derived from the pose)."""
    from pipeline.models.methods import model_conditions
    from pipeline.train.profiles import resolve_config

    quick = resolve_config("er_nerf", {"profile": "quick"})
    assert quick.head_up and not resolve_config("rad_nerf", {"profile": "paper"}).head_up
    assert "head_up" not in model_conditions(quick)
    assert not resolve_config("rad_nerf", {"profile": "quick", "overrides": {"head_up": False}}).head_up


def test_folded_head_up_equals_concatenation(monkeypatch):
    """rad_nerf folds its per-frame constants (the eye value) into the density MLP's first bias
    (:func:`pipeline.models.fields.mlp_const`) beside the per-point gated head-up input: densities
    and colours equal the concatenated reference within float32 rounding (relative 1e-5),
    quick-profile field with random tables, head-up at the standardised scale (-2..2)."""
    import pipeline.models.fields as F
    from pipeline.models.methods import get_method
    from pipeline.train.profiles import resolve_config

    torch.manual_seed(7)
    cfg = resolve_config("rad_nerf", {"profile": "quick", "device": "cpu"})
    field = get_method("rad_nerf").field(cfg, cfg.audio_dim)
    with torch.no_grad():
        for name, p in field.named_parameters():
            if "embeddings" in name:
                p.uniform_(-0.5, 0.5)
    cond = {"audio": torch.randn(cfg.audio_dim), "eye": torch.rand(1), "head_up": torch.tensor([-2.0, 0.7, 1.9])}
    x, d = torch.rand(6000, 3) * 2 - 1, torch.nn.functional.normalize(torch.randn(6000, 3), dim=-1)
    outs = []
    for fold in (True, False):
        monkeypatch.setattr(F, "FOLD_CONSTANTS", fold)
        with torch.no_grad():
            outs.append(field(x, d, cond))
    torch.testing.assert_close(outs[0].sigma, outs[1].sigma, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(outs[0].rgb, outs[1].rgb, rtol=1e-5, atol=1e-6)
    moved = field(x, d, {**cond, "head_up": torch.zeros(3)})
    assert (moved.rgb - outs[1].rgb).abs().max() > 1e-4


def test_model_derives_head_up_from_the_pose():
    """The model adds ``head_up`` to every condition record from the frame's pose (so every
    protocol has it) and refuses a head_up model without the training statistics."""
    from pipeline.models.registry import build_model

    cfg = make_config("rad_nerf", {**TINY, "head_up": True, "resolution": 16})
    meta = {"H": 16, "W": 16, "focal": 20.0, "cx": 8.0, "cy": 8.0, "scene_scale": 1.0, "bound": 1.0,
            "audio_shape": [16, 8], "head_up": head_up_stats(np.stack([roll(-5), roll(5)]))}
    model = build_model(cfg, meta)
    c2w = torch.from_numpy(roll(5))
    cond = model.with_pose_inputs({"eye": torch.tensor([0.2])}, c2w)
    torch.testing.assert_close(cond["head_up"], head_up_value(c2w, meta["head_up"]))
    assert cond["eye"].item() == pytest.approx(0.2)
    plain = build_model(make_config("rad_nerf", {**TINY, "resolution": 16}), {k: v for k, v in meta.items() if k != "head_up"})
    assert "head_up" not in plain.with_pose_inputs({"eye": torch.tensor([0.2])}, c2w)
    with pytest.raises(ValueError, match="head_up needs meta"):
        build_model(cfg, {k: v for k, v in meta.items() if k != "head_up"})


def test_trained_head_keeps_the_up_statistics_and_follows_the_pose(tmp_path, dev_dataset):
    """Smoke training with head_up on 24 real frames (occupancy updates included): the training
    poses' up-axis mean and spread are in the model's meta, the loaded model renders, and rolling
    the camera changes the head's input."""
    from pipeline.models.api import FrameInput
    from pipeline.models.registry import load_trained
    from pipeline.train.profiles import resolve_config

    cfg = resolve_config("er_nerf", {"profile": "smoke", "overrides": {"head_up": True}})
    head = load_trained(train_all_stages(cfg, dev_dataset, tmp_path / "m"))
    frames = json.loads((dev_dataset / "transforms_train.json").read_text())["frames"]
    ups = np.array([np.asarray(f["transform_matrix"], np.float32)[:3, 1] for f in frames])
    np.testing.assert_allclose(head.meta["head_up"]["mean"], ups.mean(0), atol=1e-6)
    np.testing.assert_allclose(head.meta["head_up"]["std"], ups.std(0) + 1e-3, rtol=1e-5)
    val = json.loads((dev_dataset / "transforms_val.json").read_text())["frames"][-1]
    feats = torch.from_numpy(np.load(dev_dataset / "aud_mel.npy"))
    c2w = torch.tensor(val["transform_matrix"], dtype=torch.float32)
    conds = {n: torch.zeros(4 if n == "body_pose" else 1) for n in head.conditions if n != "audio"}
    frame = FrameInput(c2w, head.audio_window(feats, val["aud_id"]), torch.rand(64, 64, 3), conds)
    out = head.render(frame)["rgb"]
    assert out.shape == (64, 64, 3) and torch.isfinite(out).all()
    # the same camera position, rolled by 3 degrees about its viewing axis: a new up input
    rolled = c2w.clone()
    rolled[:3, :3] = rolled[:3, :3] @ torch.from_numpy(roll(3)[:3, :3])
    a = head.model.with_pose_inputs({}, head.model.scene_pose(c2w))["head_up"]
    b = head.model.with_pose_inputs({}, head.model.scene_pose(rolled))["head_up"]
    assert (a - b).abs().max() > 0.01


def test_tables_say_when_the_head_saw_the_up_axis(tmp_path):
    """The Training column names a head that saw the up axis, with a footnote saying it is not the
    paper's, beside the body-pose torso's."""
    from pipeline.metrics import BODY_POSE_TORSO, HEAD_UP_HEAD
    from pipeline.metrics.compute import training_setup

    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "train_manifest.json").write_text(json.dumps(
        {"profile": "quick", "config": {"profile": "quick", "head_up": True, "torso_body_pose": True}}))
    assert training_setup(tmp_path / "a") == f"quick, {HEAD_UP_HEAD}, {BODY_POSE_TORSO}"
    import pandas as pd

    from pipeline.report.presets import get_preset
    from pipeline.report.tables import build_table

    rows = [{"method": "rad_nerf", "identity": "German", "protocol": "self_driven", "test": "self", "metric": "psnr",
             "value": 30.0, "backend": "skimage", "na_reason": None, "n_frames": 10, "compositing": "full",
             "resolution": "128x128", "training": training_setup(tmp_path / "a"), "note": None,
             "weights_sha256": None, "source_file": "x"}]
    reported = pd.DataFrame(columns=["method", "source", "table", "metric", "value", "notes", "setup", "resolution", "id"])
    tab = build_table(pd.DataFrame(rows), get_preset("livenerf_table2"), "self_driven", ["rad_nerf"], reported)
    up = 1 + next(i for i, n in enumerate(tab.footnotes) if n.startswith(f"Training '{HEAD_UP_HEAD}'"))
    body = 1 + next(i for i, n in enumerate(tab.footnotes) if n.startswith(f"Training '{BODY_POSE_TORSO}'"))
    assert tab.rows[0]["cells"][2] == f"quick, {HEAD_UP_HEAD}, {BODY_POSE_TORSO} ({up},{body})"
    assert "audio and blink only" in tab.footnotes[up - 1]
    # the README's trimmed table renumbers both marks of the cell (pipeline.report.readme_assets)
    from dataclasses import asdict

    from pipeline.report.readme_assets import trimmed_table

    short = trimmed_table(asdict(tab), max_reported=0)
    cell = short.rows[0]["cells"][2]
    marks = [int(k) for k in cell.rsplit("(", 1)[1].rstrip(")").split(",")]
    assert cell.startswith(f"quick, {HEAD_UP_HEAD}, {BODY_POSE_TORSO} (")
    assert len(marks) == 2 and short.footnotes[marks[0] - 1].startswith(f"Training '{HEAD_UP_HEAD}'")
    assert short.footnotes[marks[1] - 1].startswith(f"Training '{BODY_POSE_TORSO}'")
