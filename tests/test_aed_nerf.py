"""AED-NeRF and emotion labels: label syntax and codes, identities-table errors naming file and
row, per-frame labels and a validation split covering every label, the emotion code as a field
input, the render control, and the workflow listing aed_nerf's train rules."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.common.emotion import CATEGORIES, code_label, emotion_code, label_code, parse_spec
from pipeline.common.errors import InputError
from tests.conftest import PROJECT_ROOT, SAMPLE_VIDEO, make_workdir, run_snakemake


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
    ent = f.ray_loss({"alpha": torch.tensor([0.5, 0.5])}, "head")
    assert ent.item() == pytest.approx(1e-4, rel=1e-4)
    assert f.ray_loss({"alpha": torch.tensor([0.0, 1.0])}, "head").item() == pytest.approx(1.8065e-8, rel=1e-3)


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
    for rule in ("train_head", "train_lips", "train_torso", "emotion", "render_emotion_edit"):
        assert rule in out, out[-3000:]
    proc = run_snakemake(wd, "results/models/aed_nerf/German/train_manifest.json", args=("-n",), timeout=300)
    out = proc.stdout + proc.stderr
    assert "method: aed_nerf" in out or "method=aed_nerf" in out, out[-3000:]
    assert PROJECT_ROOT.is_dir()
