"""The torso's retrieval input (TrainConfig.torso_retrieval, docs/quality.md cause 17): the mean
colour of the training frames nearest in the body input, left out around the fitted frame."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.conftest import PROJECT_ROOT, table_with_training, train_all_stages
from pipeline.common.errors import InputError
from pipeline.models.configs import make_config
from pipeline.models.torso import nearest_bodies

TINY = dict(resolution=32, hidden=16, torso_levels=2, torso_resolution=32)


def test_nearest_bodies_hand_computed():
    """Standardised distances of a 2-number body input, by hand: query (1, 0), std (1, 2):
    frame 0 (1, 0) d=0, frame 1 (0, 0) d=1, frame 2 (1, 4) d=4, frame 3 (3, 0) d=4, frame 4 (1, 1) d=0.25."""
    bank = torch.tensor([[1.0, 0.0], [0.0, 0.0], [1.0, 4.0], [3.0, 0.0], [1.0, 1.0]])
    mean, std = torch.tensor([5.0, -3.0]), torch.tensor([1.0, 2.0])
    q = torch.tensor([1.0, 0.0])
    assert nearest_bodies(bank, q, mean, std, 3).tolist() == [0, 4, 1]
    assert nearest_bodies(bank, q, mean, std, 5).tolist() == [0, 4, 1, 2, 3]     # tie 2/3: bank order
    ids = torch.tensor([10, 11, 12, 13, 14])
    # exclude img_id 10 +- 1: frames 0 and 1 are left out
    assert nearest_bodies(bank, q, mean, std, 2, ids, exclude=10, window=1).tolist() == [4, 2]
    # window 0 leaves out the frame itself only
    assert nearest_bodies(bank, q, mean, std, 1, ids, exclude=10, window=0).tolist() == [4]
    # fewer candidates than k: all that remain
    assert nearest_bodies(bank, q, mean, std, 5, ids, exclude=12, window=1).tolist() == [0, 4]
    with pytest.raises(ValueError, match="no bank frame is left"):
        nearest_bodies(bank, q, mean, std, 1, ids, exclude=12, window=5)
    with pytest.raises(ValueError, match="exclude needs the bank's ids"):
        nearest_bodies(bank, q, mean, std, 1, exclude=12)
    with pytest.raises(ValueError, match="k must be at least 1"):
        nearest_bodies(bank, q, mean, std, 0)


@pytest.mark.parametrize("method", ["rad_nerf", "er_nerf"])
def test_torso_reads_the_mean_of_the_nearest_frames(method):
    """A pixel centre reads the mean of the K nearest bank frames' pixel exactly; the input widens
    the torso MLP by 3 numbers; an empty bank and a torso without the body pose are refused."""
    from pipeline.models.methods import get_method

    torch.manual_seed(0)
    cfg = make_config(method, {**TINY, "torso_body_pose": True, "torso_retrieval": 2, "torso_retrieval_exclude": 0})
    torso = get_method(method).torso(cfg)
    plain = get_method(method).torso(make_config(method, {**TINY, "torso_body_pose": True}))
    assert torso.net[0].in_features == plain.net[0].in_features + 3
    xy = torch.tensor([[-0.75, -0.75], [0.25, 0.75]])            # pixel centres of a 4 x 4 image: (0, 0), (3, 2)
    with pytest.raises(ValueError, match="holds no bank"):
        torso.retrieved_colour(xy, torch.zeros(4))
    rgb = torch.randint(0, 256, (4, 4, 4, 3), dtype=torch.uint8)
    body = torch.tensor([[0.0, 0, 0, 0], [1, 0, 0, 0], [2, 0, 0, 0], [3, 0, 0, 0]])
    torso.set_body_stats(torch.zeros(4), torch.ones(4))
    torso.set_bank(rgb, body, [0, 1, 2, 3])
    got = torso.retrieved_colour(xy, torch.tensor([2.9, 0, 0, 0]))    # nearest: frames 3 and 2
    want = (rgb[[3, 2]].float().mean(0) / 255)[[0, 3], [0, 2]]
    torch.testing.assert_close(got, want)
    got = torso.retrieved_colour(xy, torch.tensor([2.9, 0, 0, 0]), exclude=3)    # frame 3 left out: 2 and 1
    torch.testing.assert_close(got, (rgb[[2, 1]].float().mean(0) / 255)[[0, 3], [0, 2]])
    got = torso.retrieved_colour(xy, torch.tensor([2.9, 0, 0, 0]), exclude=3, window=1)   # 2 and 3 left out
    torch.testing.assert_close(got, (rgb[[1, 0]].float().mean(0) / 255)[[0, 3], [0, 2]])
    pose = torch.eye(4)[:3].reshape(-1)
    a = torso(xy, pose, torch.tensor([2.9, 0, 0, 0]))[0]
    b = torso(xy, pose, torch.tensor([2.9, 0, 0, 0]), exclude=3)[0]
    assert (a - b).abs().max() > 1e-6                                   # the retrieved colour reaches the MLP
    with pytest.raises(ValueError, match=r"need uint8 \[N, H, W, 3\]"):
        torso.set_bank(rgb.float(), body, [0, 1, 2, 3])
    with pytest.raises(InputError, match="torso_retrieval needs torso_body_pose"):
        make_config(method, {**TINY, "torso_retrieval": 5})
    with pytest.raises(InputError, match="frame counts, at least 0"):
        make_config(method, {**TINY, "torso_body_pose": True, "torso_retrieval_exclude": -1})
    with pytest.raises(InputError, match="torso_retrieval_exclude_max 3: a frame count at least"):
        make_config(method, {**TINY, "torso_body_pose": True, "torso_retrieval_exclude": 5,
                             "torso_retrieval_exclude_max": 3})


def test_quick_profile_retrieves_five_bodies():
    """quick: K = 5 with the default window (5 .. the validation frames' count; docs/quality.md
    cause 17); paper (the anchors' set-up) and smoke leave it off; an override turns it off."""
    from pipeline.train.profiles import resolve_config

    for method in ("rad_nerf", "er_nerf"):
        quick = resolve_config(method, {"profile": "quick"})
        assert (quick.torso_retrieval, quick.torso_retrieval_exclude, quick.torso_retrieval_exclude_max) == (5, 5, None)
        for profile in ("paper", "smoke"):
            assert resolve_config(method, {"profile": profile}).torso_retrieval == 0
        assert resolve_config(method, {"profile": "quick", "overrides": {"torso_retrieval": 0}}).torso_retrieval == 0


def test_trained_torso_keeps_its_bank(tmp_path, dev_dataset):
    """Smoke training with retrieval on 24 real frames: the torso checkpoint holds the training
    frames (gt_imgs at 64 px) and their body input, reloads them, renders with them, and the
    tables' Training cell names the retrieval."""
    from pipeline.metrics import RETRIEVAL_TORSO
    from pipeline.metrics.compute import training_setup
    from pipeline.models.registry import load_checkpoint
    from pipeline.train.data import TalkingDataset
    from pipeline.train.profiles import resolve_config

    cfg = resolve_config("rad_nerf", {"profile": "smoke", "overrides": {
        "torso_body_pose": True, "torso_body_flow": True, "torso_retrieval": 3}})
    model_dir = train_all_stages(cfg, dev_dataset, tmp_path / "m")
    model, ck = load_checkpoint(model_dir / "torso.pt")
    data = TalkingDataset(dev_dataset, cfg.resolution, cfg.audio_feature, ("train",),
                          conditions=("eye", "body_pose", "body_flow"), method="rad_nerf")
    tr = data.splits["train"]
    assert ck["meta"]["torso_bank"] == {"frames": len(tr), "H": 64, "W": 64}
    assert torch.equal(model.torso.bank_rgb, tr.gt) and model.torso.bank_ids.tolist() == list(tr.ids)
    torch.testing.assert_close(model.torso.bank_body[:, :4], tr.conds["body_pose"].reshape(len(tr), -1))
    assert training_setup(model_dir).endswith(RETRIEVAL_TORSO)
    # a training frame's own body input retrieves itself first at render time (no exclusion)
    idx = nearest_bodies(model.torso.bank_body, model.torso.bank_body[5], model.torso.body_mean,
                         model.torso.body_std, 3)
    assert int(idx[0]) == 5
    head_ck = load_checkpoint(model_dir / "head.pt")[1]
    assert "torso_bank" not in head_ck["meta"]

    # scripts/analysis/body_composite.py (docs/quality.md) on the same model: its full-render body
    # error is the quality benchmark's (body_references "model", from the saved 8-bit panels)
    import importlib.util

    from pipeline.train.quality import body_references, read_panels

    spec = importlib.util.spec_from_file_location("body_composite", PROJECT_ROOT / "scripts" / "analysis" / "body_composite.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    comp = mod.body_composite(model_dir, dev_dataset)
    ids, pred, gt, labels = read_panels(model_dir, dev_dataset)
    refs = body_references(pred / 255.0, gt / 255.0, labels, np.zeros((len(ids), 6)),
                           tr.gt.numpy()[:1] / 255.0, np.zeros((1, 6)))
    assert abs(comp["full"] - refs["model"]) < 2e-4, (comp, refs["model"])
    assert 0 < comp["torso_over_bc"] < 0.2 and 0 < comp["retrieved"] < 0.2
    assert 0 <= comp["head_covered"] <= 1 and 0 <= comp["head_covered_error"] <= 1


@pytest.mark.parametrize("exclude_max", [None, 1])
def test_torso_stage_draws_the_exclusion_window(tmp_path, dev_dataset, exclude_max):
    """Each torso step leaves out the fitted frame's neighbours within a window drawn uniformly
    from [torso_retrieval_exclude, torso_retrieval_exclude_max] (None: the validation frames'
    count); equal bounds give one fixed window."""
    from pipeline.models.methods import model_conditions
    from pipeline.train.data import TalkingDataset
    from pipeline.train.profiles import resolve_config
    from pipeline.train.trainer import Stage

    cfg = resolve_config("rad_nerf", {"profile": "smoke", "overrides": {
        "torso_body_pose": True, "torso_retrieval": 2, "torso_retrieval_exclude": 1,
        "torso_retrieval_exclude_max": exclude_max}})
    data = TalkingDataset(dev_dataset, cfg.resolution, cfg.audio_feature, ("train", "val"),
                          conditions=model_conditions(cfg), method=cfg.method)
    n_train, n_val = len(data.splits["train"]), len(data.splits["val"])
    assert n_val >= 2
    stage = Stage("torso", cfg, data, tmp_path / "m", None, None, torch.device("cpu"))
    want_hi = n_val if exclude_max is None else exclude_max
    assert stage.retrieval_windows == (1, want_hi)
    seen = []
    render = stage.model.render_torso_pix

    def spy(*args, **kw):
        seen.append((kw["exclude"], kw["window"]))
        return render(*args, **kw)

    stage.model.render_torso_pix = spy
    gen = torch.Generator().manual_seed(0)
    for step in range(24):
        stage.loss_step(step % n_train, gen)
    assert [e for e, _ in seen] == [int(stage.train.ids[step % n_train]) for step in range(24)]
    assert {w for _, w in seen} == set(range(1, want_hi + 1))


def test_tables_footnote_the_retrieval():
    """A Training cell naming the retrieval gets a footnote that says the published torsos lack it."""
    from pipeline.metrics import BODY_POSE_TORSO, RETRIEVAL_TORSO

    training = f"quick, {BODY_POSE_TORSO}, {RETRIEVAL_TORSO}"
    tab = table_with_training(training, "rad_nerf")
    k = 1 + next(i for i, n in enumerate(tab.footnotes) if n.startswith(f"Training '{RETRIEVAL_TORSO}'"))
    assert tab.rows[0]["cells"][2].startswith(training + " (") and str(k) in tab.rows[0]["cells"][2]
    assert "cause 17" in tab.footnotes[k - 1] and "do not have" in tab.footnotes[k - 1]


def test_torso_only_run_on_reused_head_and_lips(tmp_path, dev_dataset):
    """The quality benchmark's ``--reuse-heads``: a run copies another run's head and lips and
    trains only the torso; the torso stage, started from a checkpoint made without retrieval,
    trains a fresh torso with it (the head weights untouched); another seed's models are refused."""
    from pipeline.common.errors import InputError
    from pipeline.models.registry import load_checkpoint
    from pipeline.train.profiles import resolve_config
    from pipeline.train.quality import train_and_score

    import shutil

    data = tmp_path / "data"                       # the benchmark reads the dataset's manifest
    shutil.copytree(dev_dataset, data)
    (data / "manifest.json").write_text('{"n_frames": 24}')
    dev_dataset = data
    base = {"torso_body_pose": True, "torso_body_flow": True, "val_frames": 2}
    src = train_all_stages(resolve_config("rad_nerf", {"profile": "smoke", "overrides": base}), dev_dataset,
                           tmp_path / "src")
    rec = train_and_score("rad_nerf", dev_dataset, tmp_path / "ret",
                          {"profile": "smoke", "overrides": {**base, "torso_retrieval": 2}}, reuse_dir=src)
    assert rec["reused_heads"] == str(src) and np.isfinite(rec["psnr"])
    lips, _ = load_checkpoint(src / "lips.pt")
    model, ck = load_checkpoint(tmp_path / "ret" / "torso.pt")
    assert model.torso.retrieval_k == 2 and len(model.torso.bank_rgb) == ck["meta"]["torso_bank"]["frames"] > 0
    for name, p in lips.head.state_dict().items():
        assert torch.equal(p, model.head.state_dict()[name]), name
    assert (tmp_path / "ret" / "head.pt").read_bytes() == (src / "head.pt").read_bytes()
    with pytest.raises(InputError, match="trained with seed 0, this run uses seed 1"):
        train_and_score("rad_nerf", dev_dataset, tmp_path / "ret1",
                        {"profile": "smoke", "seed": 1, "overrides": {**base, "torso_retrieval": 2}}, reuse_dir=src)
    with pytest.raises(InputError, match="no lips checkpoint to reuse"):
        train_and_score("rad_nerf", dev_dataset, tmp_path / "ret2", {"profile": "smoke"}, reuse_dir=tmp_path / "none")


def test_body_pose_off_takes_the_profiles_retrieval_and_flow_with_it():
    """A face-only clip's advice (README, `train.overrides: {torso_body_pose: false}`) gives the
    papers' torso at the quick profile; retrieval asked for explicitly without the pose is refused."""
    from pipeline.common.errors import InputError
    from pipeline.train.profiles import resolve_config

    cfg = resolve_config("er_nerf", {"profile": "quick", "overrides": {"torso_body_pose": False}})
    assert (cfg.torso_body_pose, cfg.torso_body_flow, cfg.torso_retrieval) == (False, False, 0)
    with pytest.raises(InputError, match="torso_retrieval needs torso_body_pose"):
        resolve_config("er_nerf", {"profile": "quick", "overrides": {"torso_body_pose": False, "torso_retrieval": 5}})
