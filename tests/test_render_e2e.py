"""End to end: `snakemake` on the default config renders both methods x (self + 2 cross-driven
tests) of the sample identity into valid render contracts; controls on a trained model.

To keep CI cheap the models are trained with the ``smoke`` profile (the render stage is the same
for every profile) in a working folder seeded with the session's dataset (copied with its
timestamps, so snakemake only runs the training and render jobs).
"""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from pipeline.common.layout import SELF_DRIVEN_TEST, render_dir
from pipeline.render.contract import REQUIRED_FIELDS, probe_av, sha256_file, validate_contract
from tests.conftest import PROJECT_ROOT, make_workdir, run_snakemake

torch.set_num_threads(1)
pytestmark = pytest.mark.slow

METHODS = ("rad_nerf", "er_nerf")
CROSS = {"jfk": PROJECT_ROOT / "resources/audio/jfk_4.2s.flac",
         "radio31": PROJECT_ROOT / "resources/audio/RD_Radio31_4.2s.wav"}
TESTS = (SELF_DRIVEN_TEST, *CROSS)


@pytest.fixture(scope="module")
def renders(sample_workdir, tmp_path_factory):
    wd = make_workdir(tmp_path_factory.mktemp("render_e2e"), {"train": {"profile": "smoke"}})
    for sub in ("data", "benchmarks"):  # the dataset and the stage benchmarks its manifest lists
        shutil.copytree(sample_workdir / "results" / sub, wd / "results" / sub, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("train_*", "render"))
    targets = [str(render_dir(m, "German", t) / "manifest.json") for m in METHODS for t in TESTS]
    proc = run_snakemake(wd, *targets, timeout=3000)
    assert "rule probe" not in proc.stdout + proc.stderr      # the dataset was reused, not rebuilt
    return wd / "results"


def test_default_config_renders_valid_contracts(renders, sample_dataset):
    n_val = len(json.loads(sample_dataset.transforms_val.read_text())["frames"])
    for method in METHODS:
        for test in TESTS:
            d = render_dir(method, "German", test, renders)
            assert validate_contract(d, check_all_frames=True) == [], d
            m = json.loads((d / "manifest.json").read_text())
            assert set(REQUIRED_FIELDS) <= set(m)
            assert (m["method"], m["identity"], m["test"]) == (method, "German", test)
            assert len(list((d / "frames").glob("*.png"))) == m["n_frames"]
            av = probe_av(d / "video.mp4")            # ffprobe
            assert av["n_frames"] == m["n_frames"] and av["acodec"] == "aac" and av["vcodec"] == "h264"
            assert abs(av["audio_s"] - av["video_s"]) <= 1 / 25
            assert abs(av["video_s"] - m["n_frames"] / 25) < 1e-3
            assert m["fps_render"] > 0 and m["render_seconds"] > 0
            if test == SELF_DRIVEN_TEST:
                assert m["protocol"] == "self_driven" and m["n_frames"] == n_val
                assert len(m["gt_reference"]["indices"]) == n_val
                assert m["driving_audio"]["sha256"] == sha256_file(sample_dataset.audio)
            else:
                # 4.2 s of audio (the FLAC is 44.1 kHz stereo, the WAV 16 kHz stereo) -> 105 frames
                assert m["protocol"] == "cross_driven" and m["n_frames"] == 105
                assert m["driving_audio"]["sha256"] == sha256_file(CROSS[test])


def _render_once(model, data, controls):
    from pipeline.render.controls import Controls
    from pipeline.render.protocol import self_driven
    from pipeline.render.renderer import Renderer

    r = Renderer(model, data, "full", Controls.from_config(controls))
    seq = self_driven(data, model.meta["audio_feature"])
    inp = r.frame_input(seq, 0, torch.from_numpy(seq.features), r.background)
    out = model.render(inp, torso=True)
    return ({k: v.cpu().numpy() for k, v in out.items()}, r.background)


def test_trained_model_controls(renders, sample_dataset, tmp_path):
    """On a trained model: a new background changes each pixel by exactly its see-through part
    (1 - head alpha) x (1 - torso alpha) of the background difference; a 15-degree yaw changes
    the head layer, a zero offset changes nothing. (Where yaw may and may not change pixels is
    tested on the analytic model in tests/test_render.py: smoke-profile models are translucent
    everywhere.)"""
    import cv2
    from skimage import data as skdata

    from pipeline.models.registry import load_trained

    model = load_trained(renders / "models" / "er_nerf" / "German", "cpu")
    base, bg0 = _render_once(model, sample_dataset, {})
    same, _ = _render_once(model, sample_dataset, {"yaw_deg": 0.0, "pitch_deg": 0.0})
    np.testing.assert_array_equal(same["rgb"], base["rgb"])
    yaw, _ = _render_once(model, sample_dataset, {"yaw_deg": 15})
    head = base["head_alpha"] > 0.5
    assert head.sum() > 100
    assert np.abs(yaw["head_rgb"] - base["head_rgb"]).max(-1)[head].mean() > 1e-3

    path = tmp_path / "astronaut.png"
    cv2.imwrite(str(path), cv2.cvtColor(skdata.astronaut(), cv2.COLOR_RGB2BGR))
    new, bg1 = _render_once(model, sample_dataset, {"background": str(path)})
    see_through = (1 - base["head_alpha"]) * (1 - base["torso_alpha"])
    assert np.abs(bg1 - bg0).mean() > 0.1 and see_through.mean() > 0.05
    expected = see_through[..., None] * (bg1 - bg0)
    np.testing.assert_allclose(new["rgb"] - base["rgb"], expected, atol=2e-2)
    np.testing.assert_array_equal(new["head_rgb"], base["head_rgb"])
