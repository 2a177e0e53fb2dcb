"""AED-NeRF and emotion labels: label syntax and codes, identities-table errors naming file and
row, per-frame labels and a validation split covering every label, the emotion code as a field
input, the render control, and the workflow listing aed_nerf's train rules."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.common.emotion import CATEGORIES, code_label, emotion_code, label_code, parse_spec
from pipeline.common.errors import InputError
from tests.conftest import SAMPLE_VIDEO, make_workdir, run_snakemake


def test_labels_and_codes():
    assert parse_spec("happy:3")[0].label == "happy:3"
    assert parse_spec("Neutral")[0].label == "neutral:1"              # level defaults to 1
    e = label_code("sad:2")
    assert e.tolist() == [0, 0, 0, 0, 1, 0, 1, 0] and code_label(e) == "sad:2"
    assert emotion_code("neutral", 1).sum() == 2 and len(CATEGORIES) == 5
    segs = parse_spec("0-30.5 happy:3; 30.5-62 neutral")
    assert [(s.start_s, s.end_s, s.label) for s in segs] == [(0, 30.5, "happy:3"), (30.5, 62, "neutral:1")]
    for bad, why in [("joyful", "unknown emotion category 'joyful'"), ("happy:4", "level 4"),
                     ("0-3 happy; 4-6 sad", "does not start where the previous one ends"),
                     ("1-3 happy", "must start at 0")]:
        with pytest.raises(ValueError, match=why):
            parse_spec(bad)


@pytest.mark.parametrize("cell, why", [("joyful:2", "unknown emotion category 'joyful'"),
                                       ("sad:7", "emotion level 7"),
                                       ("happy:3 sad", "does not match")])
def test_bad_label_in_identities_table_names_file_and_row(tmp_path, cell, why):
    from pipeline.common.config import load_identities

    table = tmp_path / "identities.tsv"
    table.write_text(f"id\tvideo\temotion\nA\t{SAMPLE_VIDEO}\thappy:2\nB\t{SAMPLE_VIDEO}\t{cell}\n")
    with pytest.raises(InputError) as exc:
        load_identities(table)
    msg = str(exc.value)
    assert msg.startswith(str(table)) and "row 2 ('B')" in msg and why in msg, msg
    assert "\n" not in msg


def test_frame_labels_and_val_split_cover_every_label(tmp_path):
    from pipeline.preprocess.emotion import build, main, read_segments
    from pipeline.preprocess.tracking import split_ids

    codes, info = build(300, "0-6 happy:3; 6-12.5 sad:1", 25.0, "identities.tsv")
    assert codes.shape == (300, 8) and info["labels"][149] == "happy:3" and info["labels"][150] == "sad:1"
    assert [(s["start"], s["end"], s["label"]) for s in info["segments"]] == [(0, 150, "happy:3"), (150, 300, "sad:1")]
    with pytest.raises(InputError, match="identities.tsv: the emotion segments end at 10 s but the clip has 300"):
        build(300, "0-6 happy:3; 6-10 sad:1", 25.0, "identities.tsv")
    # the CLI writes both files; the split takes the last 1/11 of each segment
    frames = tmp_path / "ori_imgs"
    frames.mkdir()
    for i in range(22):
        (frames / f"{i}.jpg").write_bytes(b"")
    assert main(["--frames", str(frames), "--label", "0-0.44 angry:2; 0.44-1 fearful:3",
                 "--out-npy", str(tmp_path / "emotion.npy"), "--out-json", str(tmp_path / "emotion.json")]) == 0
    segs = read_segments(tmp_path / "emotion.json")
    assert segs == [(0, 11), (11, 22)]
    train, val = split_ids(22, 1 / 11, segs)
    assert val == [10, 21] and sorted(train + val) == list(range(22))
    labels = {code_label(c) for c in np.load(tmp_path / "emotion.npy")[val]}
    assert labels == {"angry:2", "fearful:3"}
    assert split_ids(22, 1 / 11, [(0, 22)]) == (list(range(20)), [20, 21])   # one label: as before
    # an identity without a label (the rule passes --label=): zero codes, one unlabelled segment
    assert main(["--frames", str(frames), "--label=", "--out-npy", str(tmp_path / "none.npy"),
                 "--out-json", str(tmp_path / "none.json")]) == 0
    assert np.load(tmp_path / "none.npy").sum() == 0 and read_segments(tmp_path / "none.json") == [(0, 22)]


def _tiny_aed(**over):
    from pipeline.models.configs import make_config
    from pipeline.models.methods import get_method

    cfg = make_config("aed_nerf", dict(levels=4, log2_hashmap=10, max_resolution=64, hidden=16, **over))
    return get_method("aed_nerf").field(cfg, 8)


def test_field_output_depends_on_emotion_code():
    torch.manual_seed(0)
    f = _tiny_aed()
    x = torch.rand(200, 3) * 1.2 - 0.6                 # inside the head box (the face region)
    d = torch.nn.functional.normalize(torch.randn(200, 3), dim=-1)
    base = {"audio": torch.randn(8), "eye": torch.tensor([0.3])}
    happy = f(x, d, {**base, "emotion": torch.from_numpy(label_code("happy:3"))})
    sad = f(x, d, {**base, "emotion": torch.from_numpy(label_code("sad:1"))})
    assert (happy.sigma - sad.sigma).abs().mean() > 1e-4
    again = f(x, d, {**base, "emotion": torch.from_numpy(label_code("happy:3"))})
    torch.testing.assert_close(again.sigma, happy.sigma)
    # emotion_in_color: the code reaches the colour MLP directly (same density input otherwise)
    fc = _tiny_aed(emotion_in_color=True)
    assert fc.color_net[0].in_features == f.color_net[0].in_features + 8
    # alpha entropy x 1e-4: 1 bit at alpha 0.5; at 0 / 1 the clamp to [1e-5, 1 - 1e-5] leaves
    # H(1e-5) = 1e-5 log2(1e5) + (1 - 1e-5) log2(1 / (1 - 1e-5)) = 1.8065e-4 bits
    # (the shared trainer term, pipeline.train.trainer.opacity_losses; head-mask term off here)
    from pipeline.train.trainer import opacity_losses

    from pipeline.models.configs import make_config

    cfg = make_config("aed_nerf", {})
    head = torch.tensor([True, True])
    ent = opacity_losses(torch.tensor([0.5, 0.5]), head, cfg)
    assert cfg.lambda_entropy == 1e-4 and ent.item() == pytest.approx(1e-4, rel=1e-4)
    assert opacity_losses(torch.tensor([0.0, 1.0]), head, cfg).item() == pytest.approx(1.8065e-8, rel=1e-3)


def test_emotion_render_control():
    from pipeline.models.conditions import EMOTION, EYE
    from pipeline.render.controls import Controls

    c = Controls.from_config({"emotion": "Happy:3"})
    assert c.emotion == "happy:3" and c.as_manifest() == {"emotion": "happy:3"}
    np.testing.assert_array_equal(c.apply(EMOTION, label_code("sad:1")), label_code("happy:3"))
    np.testing.assert_array_equal(c.apply(EYE, np.array([1.5], np.float32)), [1.5])      # other conditions kept
    np.testing.assert_array_equal(Controls().apply(EMOTION, label_code("sad:1")), label_code("sad:1"))
    with pytest.raises(ValueError, match="unknown emotion category 'bored'"):
        Controls.from_config({"emotion": "bored"})


def test_unlabelled_dataset_is_refused_for_aed_nerf(tmp_path):
    from pipeline.models.conditions import EMOTION

    np.save(tmp_path / "emotion.npy", np.zeros((5, 8), np.float32))
    with pytest.raises(InputError, match=r"emotion.npy: frame 0 has no emotion label"):
        EMOTION.read(tmp_path, 5, "aed_nerf")
    (tmp_path / "emotion.npy").unlink()
    with pytest.raises(InputError, match=r"emotion.npy: file not found \(method aed_nerf needs it"):
        EMOTION.read(tmp_path, 5, "aed_nerf")


def test_snakemake_dry_run_lists_aed_nerf_train_rules(tmp_path):
    wd = make_workdir(tmp_path / "wd", {"train": {"methods": ["rad_nerf", "er_nerf", "aed_nerf"]},
                                        "render": {"emotion_edit": ["aed_nerf"]}})
    (wd / "identities.tsv").write_text(f"id\tvideo\temotion\nGerman\t{SAMPLE_VIDEO}\t0-6 happy:3; 6-12 sad:1\n")
    proc = run_snakemake(wd, args=("-n", "--quiet", "rules"), timeout=300)
    out = proc.stdout + proc.stderr
    for rule in ("train_head", "train_lips", "train_torso", "emotion", "render_emotion_edit", "metrics_emotion_expr"):
        assert rule in out, out[-3000:]
    proc = run_snakemake(wd, "results/models/aed_nerf/German/train_manifest.json", args=("-n",), timeout=300)
    out = proc.stdout + proc.stderr
    assert "method: aed_nerf" in out or "method=aed_nerf" in out, out[-3000:]


@pytest.mark.slow
def test_trained_on_two_labelled_halves_renders_each_label_closer_to_its_frames(tmp_path_factory):
    """A real clip whose halves carry different labels (two 2-second pieces of the sample video,
    8 s apart, concatenated as AED-NeRF concatenates its clips per label), every 9th frame inside
    each half held out: after a short head training (smoke scale, 1000 steps), rendering a held-out
    frame under its own label is closer (PSNR on the face box) to its ground truth than under the
    other label, on average over the held-out frames of each half.

    The sample speaker does not change emotion, so the label only carries what differs between
    the two pieces (~0.1-0.2 dB here); the held-out frames are inside the halves because the last
    frames of the first half (the dataset's validation frames) already resemble the second half.
    """
    import json
    import subprocess

    from pipeline.models.conditions import EMOTION
    from pipeline.preprocess.emotion import build
    from pipeline.train.devdata import cached
    from pipeline.train.profiles import resolve_config
    from pipeline.train.trainer import frame_conditions, psnr_from_mse, train_stage

    torch.set_num_threads(1)
    work = tmp_path_factory.mktemp("aed")
    clip = work / "two_halves.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(SAMPLE_VIDEO), "-filter_complex",
                    "[0:v]trim=0:2,setpts=PTS-STARTPTS[a];[0:v]trim=8:10,setpts=PTS-STARTPTS[b];"
                    "[0:a]atrim=0:2,asetpts=PTS-STARTPTS[c];[0:a]atrim=8:10,asetpts=PTS-STARTPTS[d];"
                    "[a][c][b][d]concat=n=2:v=1:a=1[v][au]", "-map", "[v]", "-map", "[au]", "-r", "25", str(clip)],
                   check=True)
    n = 100
    ds = cached(work, n_frames=n, video=clip)
    codes, info = build(n, "0-2 happy:3; 2-4 sad:1", 25.0, "test")
    np.save(ds / "emotion.npy", codes)
    segs = [(s["start"], s["end"]) for s in info["segments"]]
    val_ids = [i for a, b in segs for i in range(a + 5, b - 3, 9)]
    train_ids = [i for i in range(n) if i not in val_ids]
    frames = {f["img_id"]: f for n in ("train", "val") for f in json.loads((ds / f"transforms_{n}.json").read_text())["frames"]}
    head = json.loads((ds / "transforms_train.json").read_text())
    for name, ids in (("train", train_ids), ("val", val_ids)):
        (ds / f"transforms_{name}.json").write_text(json.dumps({**head, "frames": [frames[i] for i in ids]}))

    cfg = resolve_config("aed_nerf", {"profile": "smoke", "seed": 0, "device": "cpu",
                                      "overrides": {"resolution": 64, "head_steps": 1000, "checkpoint_every": 10 ** 6}})
    md = tmp_path_factory.mktemp("aed_model")
    train_stage("head", cfg, ds, md, md / "head.pt")

    from pipeline.models.registry import load_checkpoint
    from pipeline.train.data import TalkingDataset

    model, _ = load_checkpoint(md / "head.pt")
    assert model.meta["condition_values"]["emotion"] == ["happy:3", "sad:1"]
    data = TalkingDataset(ds, 64, "mel", ("train", "val"), conditions=model.conditions, method="aed_nerf")
    val = data.splits["val"]
    own_minus_other = {}
    with torch.no_grad():
        for k in range(len(val)):
            own = code_label(val.conds["emotion"][k].numpy())
            other = "sad:1" if own == "happy:3" else "happy:3"
            rows, cols = torch.nonzero(val.head[k], as_tuple=True)
            box = (slice(int(rows.min()), int(rows.max()) + 1), slice(int(cols.min()), int(cols.max()) + 1))
            gt = val.gt[k].float()[box] / 255
            psnr = {}
            for label in (own, other):
                split_label = type(val)(**{**val.__dict__, "conds": {**val.conds, "emotion": torch.from_numpy(
                    np.tile(EMOTION.encode_value(label_code(label)).numpy(), (len(val), 1)))}})
                cond = frame_conditions(model, split_label, k, data.audio, torch.device("cpu"))
                out = model.render_frame(model.scene_pose(val.poses[k]), cond, data.bc, torso=False)
                psnr[label] = psnr_from_mse(((out["rgb"][box] - gt) ** 2).mean().item())
            own_minus_other.setdefault(own, []).append(psnr[own] - psnr[other])
    assert set(own_minus_other) == {"happy:3", "sad:1"}
    for label, diffs in own_minus_other.items():
        assert np.mean(diffs) > 0, (label, diffs)


def test_report_shows_emotion_edits_side_by_side(tmp_path):
    """The report's media/page builder puts the emotion_edit videos of one model in one row."""
    import json
    import subprocess

    from pipeline.report.html import build_media, render_page

    edit = tmp_path / "renders" / "aed_nerf" / "German" / "emotion_edit"
    folders = {"happy:3": "happy-3", "sad:1": "sad-1"}
    for folder in folders.values():
        (edit / folder).mkdir(parents=True)
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc=size=32x32:rate=25:duration=0.2",
                        "-pix_fmt", "yuv420p", str(edit / folder / "video.mp4")], check=True)
    (edit / "index.json").write_text(json.dumps({"labels": list(folders), "folders": folders}))
    groups = build_media([], [], {}, tmp_path / "media", [str(edit)])
    assert groups == {("German", "emotion_edit/aed_nerf"): [
        ("aed_nerf · happy:3", "German/emotion_edit/aed_nerf/happy-3.mp4", "video"),
        ("aed_nerf · sad:1", "German/emotion_edit/aed_nerf/sad-1.mp4", "video")]}
    assert (tmp_path / "media" / "German" / "emotion_edit" / "aed_nerf" / "sad-1.mp4").is_file()
    page = render_page({"protocols": {}}, [], "plots", groups, "media", ["aed_nerf"])
    assert "emotion edits: the self-driven test under every trained label" in page
    assert page.index("aed_nerf · happy:3") < page.index("aed_nerf · sad:1")


@pytest.mark.slow
def test_aed_nerf_through_snakemake_with_emotion_edit(tmp_path):
    """The sample identity with two labelled segments, train.methods [aed_nerf] (smoke profile),
    render.emotion_edit [aed_nerf]: the dataset's validation split holds frames of both labels, the
    model's meta lists them, render_emotion_edit writes one valid contract per label with the label
    in its manifest, and metrics_emotion_expr writes its JSON (n/a without the SFM files)."""
    import json

    from pipeline.render.contract import validate_contract

    wd = make_workdir(tmp_path / "wd", {"train": {"methods": ["aed_nerf"], "profile": "smoke"},
                                        "render": {"cross_driven": {}, "emotion_edit": ["aed_nerf"]},
                                        "weights_dir": str(tmp_path / "no_weights")})
    (wd / "identities.tsv").write_text(f"id\tvideo\temotion\nGerman\t{SAMPLE_VIDEO}\t0-6 happy:3; 6-12 sad:1\n")
    target = "results/metrics/aed_nerf/German/emotion_edit/sfm_expression.json"
    run_snakemake(wd, target, timeout=1800)
    data = wd / "results" / "data" / "German"
    val_ids = [f["img_id"] for f in json.loads((data / "transforms_val.json").read_text())["frames"]]
    labels = json.loads((data / "emotion.json").read_text())["labels"]
    assert {labels[i] for i in val_ids} == {"happy:3", "sad:1"}
    edit = wd / "results" / "renders" / "aed_nerf" / "German" / "emotion_edit"
    index = json.loads((edit / "index.json").read_text())
    assert index["labels"] == ["happy:3", "sad:1"]
    for label, folder in index["folders"].items():
        assert validate_contract(edit / folder) == []
        man = json.loads((edit / folder / "manifest.json").read_text())
        assert man["controls"]["emotion"] == label and man["n_frames"] == len(val_ids)
    res = json.loads((wd / target).read_text())
    assert res["labels"] is None and "sfm_shape_3448.bin not found" in res["reason"]
