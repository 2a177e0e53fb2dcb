"""Free-view protocol (pipeline/render/freeview.py, pipeline/metrics/freeview.py): render contracts
per view with protocol free_view, CSIM against the frontal render, the table with n/a reasons."""
from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline.metrics.freeview import view_csim, write_table
from tests.conftest import SAMPLE_VIDEO


@pytest.fixture(scope="module")
def dev_with_audio(tmp_path_factory):
    """24 real frames of the sample in the ER-NeRF layout (pipeline.train.devdata) with aud.wav."""
    from pipeline.train.devdata import cached

    ds = tmp_path_factory.mktemp("fv") / "German"
    shutil.copytree(cached(tmp_path_factory.getbasetemp()), ds)
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(SAMPLE_VIDEO), "-t", "0.96", "-ac", "1", "-ar", "16000",
                    str(ds / "aud.wav")], check=True)
    return ds


def test_views_are_render_contracts_from_rotated_cameras(dev_with_audio, tmp_path):
    from pipeline.models.configs import make_config
    from pipeline.models.registry import build_model, checkpoint_payload, load_trained
    from pipeline.render.contract import validate_contract
    from pipeline.render.freeview import render_views

    torch.manual_seed(0)
    meta = dict(H=24, W=24, focal=30.0, cx=12.0, cy=12.0, scene_scale=0.5, bound=1.0, audio_feature="mel",
                audio_window=8, audio_shape=[16, 80], profile="smoke")
    model = build_model(make_config("rad_nerf", dict(levels=2, log2_hashmap=8, max_resolution=32, hidden=16,
                                                     n_samples=8, occ_resolution=8, torso_levels=2,
                                                     torso_resolution=16)), meta)
    torch.save(checkpoint_payload(model, "head", {}), tmp_path / "head.pt")
    head = load_trained(tmp_path)
    out = tmp_path / "freeview"
    index = render_views(head, dev_with_audio, "rad_nerf", "German", out, {"yaw+30": (30.0, 0.0)}, frames=2)
    assert index["protocol"] == "free_view" and list(index["views"]) == ["front", "yaw+30"]
    assert json.loads((out / "manifest.json").read_text()) == index
    frames = {}
    for view in ("front", "yaw+30"):
        assert validate_contract(out / view) == []
        man = json.loads((out / view / "manifest.json").read_text())
        assert man["protocol"] == "free_view" and man["n_frames"] == 2 and man["compositing"] == "head_on_gt"
        frames[view] = np.asarray(Image.open(out / view / "frames" / "0.png"))
    assert man["controls"] == {"yaw_deg": 30.0} and man["view"] == {"name": "yaw+30", "yaw_deg": 30.0, "pitch_deg": 0.0}
    assert np.abs(frames["front"].astype(int) - frames["yaw+30"].astype(int)).max() > 0


class _Embed:
    """Stand-in embedder for the arithmetic of view_csim (no number of it reaches a table)."""

    backend = "test vectors"

    def __init__(self, table):
        self.table = table

    def __call__(self, rgb):
        return self.table[int(rgb[0, 0, 0])]


def test_view_csim_is_the_framewise_cosine_against_the_front():
    vec = {0: np.array([1.0, 0.0]), 1: np.array([1.0, 1.0]), 2: None, 3: np.array([0.0, 2.0])}
    img = lambda k: np.full((2, 2, 3), k, np.uint8)  # noqa: E731
    v = view_csim(_Embed(vec), [img(1), img(3), img(2)], [img(0), img(0), img(0)])
    # frame 0: cos((1,1), (1,0)) = 1/sqrt(2); frame 1: cos((0,2), (1,0)) = 0; frame 2: no face
    assert v.value == pytest.approx((1 / np.sqrt(2) + 0.0) / 2) and v.n_frames == 2
    assert "1 of 3 frames" in v.note
    none = view_csim(_Embed(vec), [img(2)], [img(0)])
    assert none.value is None and none.na_reason == "no face pair found in any of 1 frames"


def test_table_marks_na_cells_with_their_reason(tmp_path):
    res = {"method": "m", "identity": "I", "protocol": "free_view", "reference_view": "front", "views": {
        "front": {"yaw_deg": 0, "pitch_deg": 0, "csim": {"value": 1.0, "backend": "b"}, "cpbd": {"value": 0.3}},
        "yaw+30": {"yaw_deg": 30, "pitch_deg": 0, "csim": {"value": None, "na_reason": "no face pair found"},
                   "cpbd": {"value": 0.25}}}}
    write_table([res], tmp_path / "t.md", tmp_path / "t.csv", {"static_frame": "no 3D model"})
    md = (tmp_path / "t.md").read_text()
    assert "| m | I | yaw+30 | 30 | 0 | n/a (1) | 0.250 |" in md and "(1) no face pair found" in md
    assert "| static_frame | all | all | – | – | n/a (2) | n/a (2) |" in md and "(2) no 3D model" in md
    assert (tmp_path / "t.csv").read_text().splitlines()[0] == "method,identity,view,yaw_deg,pitch_deg,csim_vs_front,cpbd"
