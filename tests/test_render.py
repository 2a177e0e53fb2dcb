"""Renderer: render contract, protocols, audio inputs, controls and compositing.

Uses the analytic stand-in model of tests/test_render_fakes.py on a small dataset cut from the
real sample video (no trained NeRF needed); the end-to-end renders of the trained models are in
tests/test_render_e2e.py.
"""
from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest
import torch

from pipeline.render.contract import fit_audio, probe_av, sha256_file, validate_contract, write_contract
from pipeline.render.controls import Controls, face_mask, ping_pong, pose_offset_matrix
from tests.conftest import PROJECT_ROOT, SAMPLE_VIDEO

torch.set_num_threads(1)

AUDIO = PROJECT_ROOT / "resources" / "audio"


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    from tests.test_render_fakes import build_dataset

    return build_dataset(tmp_path_factory.mktemp("render_data") / "German", SAMPLE_VIDEO)


@pytest.fixture
def model():
    from tests.test_render_fakes import SphereHead

    return SphereHead()


def _render(tmp_path, model, dataset, test="self", audio=None, cfg=None, name=None, fps512_frames=-1):
    from pipeline.render.__main__ import render_test

    out = tmp_path / (name or test)
    m = render_test("stand-in", dataset.root, "sphere", "German", test, out, audio=audio,
                    render_cfg=cfg or {}, audio_cfg={"features": ["mel"]}, device="cpu", model=model,
                    fps512_frames=fps512_frames)
    return out, m


# ---- pure helpers (hand-computed values) -----------------------------------------------------
def test_ping_pong_matches_anchor_mirror_index():
    assert [ping_pong(i, 3) for i in range(10)] == [0, 1, 2, 2, 1, 0, 0, 1, 2, 2]
    assert [ping_pong(i, 1) for i in range(3)] == [0, 0, 0]


def test_pose_offset_rotates_camera_about_head_centre():
    cam = np.array([0.0, 0.0, 2.0, 1.0])
    m = pose_offset_matrix(90.0, 0.0)
    np.testing.assert_allclose(m @ cam, [2.0, 0.0, 0.0, 1.0], atol=1e-6)   # to the subject's left (+x)
    centre = np.array([0.0, 0.0, 1.0])
    m = pose_offset_matrix(0.0, 90.0, centre)
    np.testing.assert_allclose(m @ cam, [0.0, -1.0, 1.0, 1.0], atol=1e-6)  # distance to the centre kept
    np.testing.assert_allclose(m @ np.append(centre, 1.0), [0, 0, 1, 1], atol=1e-6)
    assert np.allclose(pose_offset_matrix(0, 0), np.eye(4))


def test_controls_validation_and_eye_override():
    c = Controls.from_config({"eye_openness": 1.0, "yaw_deg": 15})
    assert c.eye_value(1.7) == 0.0 and Controls().eye_value(1.7) == pytest.approx(1.7)
    assert Controls.from_config({"eye_openness": 0.0}).eye_value(0.3) == 2.0
    assert c.as_manifest() == {"eye_openness": 1.0, "eye_au45": 0.0, "yaw_deg": 15.0}
    with pytest.raises(ValueError, match="eye_openness"):
        Controls.from_config({"eye_openness": 1.5})
    with pytest.raises(ValueError, match="unknown"):
        Controls.from_config({"roll_deg": 3})


def test_fit_audio_trims_and_pads_to_video_length():
    a = np.ones(1000, np.float32)
    assert len(fit_audio(a, 1)) == 640 and len(fit_audio(a, 3)) == 1920
    assert fit_audio(a, 3)[1000:].sum() == 0


# ---- the contract itself -----------------------------------------------------------------------
FIELDS = dict(method="m", identity="i", test="jfk", protocol="cross_driven",
              driving_audio={"path": "a.wav", "sha256": "0" * 64}, compositing="full", controls={},
              device="cpu", render_seconds=0.5, fps_render=14.0, gt_reference=None)


def test_contract_written_and_violations_found(tmp_path):
    rng = np.random.default_rng(0)
    frames = [rng.random((48, 62, 3), dtype=np.float32) for _ in range(7)]
    audio = np.sin(np.arange(16000) / 16000 * 2 * np.pi * 220).astype(np.float32)
    out = tmp_path / "r"
    m = write_contract(out, iter(frames), audio, FIELDS)
    assert validate_contract(out, check_all_frames=True) == []
    assert m["n_frames"] == 7 and m["resolution"] == [62, 48] and m["fps"] == 25
    av = probe_av(out / "video.mp4")
    assert (av["vcodec"], av["pix_fmt"], av["acodec"], av["n_frames"]) == ("h264", "yuv420p", "aac", 7)
    assert abs(av["audio_s"] - 7 / 25) <= 1 / 25 and abs(av["video_s"] - 7 / 25) < 1e-6
    # rewriting from the frames folder gives the same manifest; the old folder is swapped out
    m2 = write_contract(tmp_path / "copy", out / "frames", audio, FIELDS)
    assert m2["n_frames"] == 7 and m2["resolution"] == [62, 48]
    # violations
    (out / "frames" / "3.png").unlink()
    man = json.loads((out / "manifest.json").read_text())
    man["protocol"] = "sideways"
    del man["device"]
    (out / "manifest.json").write_text(json.dumps(man))
    assert validate_contract(out) == ["manifest: missing 'device'"]
    man["device"] = "cpu"
    (out / "manifest.json").write_text(json.dumps(man))
    problems = validate_contract(out)
    assert any("protocol" in p for p in problems) and any("frames/: 6 files" in p for p in problems)
    with pytest.raises(ValueError, match="gt_reference"):
        write_contract(tmp_path / "bad", iter(frames), audio, {k: v for k, v in FIELDS.items() if k != "gt_reference"})
    assert not (tmp_path / "bad").exists()


def test_contract_detects_audio_video_mismatch(tmp_path):
    out = tmp_path / "r"
    write_contract(out, iter([np.zeros((32, 32, 3), np.uint8)] * 10), np.zeros(6400, np.float32),
                   {**FIELDS, "fps_render": 20.0})
    assert validate_contract(out) == []
    # the same 10 frames (0.4 s) with 1.0 s of audio
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-framerate", "25", "-start_number", "0", "-i",
                    str(out / "frames" / "%d.png"), "-f", "lavfi", "-t", "1.0", "-i", "anullsrc=r=48000:cl=mono",
                    "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", str(out / "video.mp4")], check=True)
    assert any("more than one frame apart" in p for p in validate_contract(out))


# ---- protocols with the stand-in model ---------------------------------------------------------
def test_self_driven_render_contract(tmp_path, dataset, model):
    out, m = _render(tmp_path, model, dataset)
    assert validate_contract(out, check_all_frames=True) == []
    assert m["protocol"] == "self_driven" and m["test"] == "self" and m["n_frames"] == 2
    assert m["gt_reference"]["indices"] == [20, 21] and m["pose_frame_ids"] == [20, 21]
    assert m["driving_audio"] == {"path": str(dataset.audio), "sha256": sha256_file(dataset.audio)}
    assert m["resolution"] == [64, 64] and m["device"] == "cpu" and m["compositing"] == "full"
    assert m["render_seconds"] > 0 and m["fps_render"] == pytest.approx(2 / m["render_seconds"])
    assert model.calls == 3  # one untimed warm-up call + one per frame
    assert abs(m["video"]["audio_s"] - 2 / 25) <= 1 / 25


@pytest.mark.parametrize("kind", ["flac_44k", "mp3", "wav_named_mp3", "wav_48k"])
def test_cross_driven_audio_kinds_frame_count(tmp_path, dataset, model, kind):
    src = AUDIO / "RD_Radio31_4.2s.wav"
    if kind == "flac_44k":
        path = AUDIO / "jfk_4.2s.flac"
    elif kind == "mp3":
        path = tmp_path / "drive.mp3"
        subprocess.run(["ffmpeg", "-v", "error", "-i", str(src), "-c:a", "libmp3lame", "-b:a", "64k", str(path)], check=True)
    elif kind == "wav_named_mp3":
        path = tmp_path / "drive.mp3"
        shutil.copy(src, path)
    else:
        path = tmp_path / "drive.wav"
        subprocess.run(["ffmpeg", "-v", "error", "-i", str(src), "-ar", "48000", str(path)], check=True)
    # the duration of the original recording (an mp3's container duration includes encoder padding)
    orig = path if kind == "flac_44k" else src
    duration = float(json.loads(subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "json", str(orig)],
        capture_output=True, text=True, check=True).stdout)["format"]["duration"])
    assert duration == pytest.approx(4.2, abs=0.01)
    out, m = _render(tmp_path, model, dataset, test="drive", audio=path)
    assert validate_contract(out) == []
    assert m["protocol"] == "cross_driven" and m["gt_reference"] is None
    assert abs(m["n_frames"] - duration * 25) <= 1, (m["n_frames"], duration)
    assert abs(m["video"]["audio_s"] - m["video"]["video_s"]) <= 1 / 25
    assert m["driving_audio"]["sha256"] == sha256_file(path)
    # poses come from the 20 training frames, played forward then backward
    assert m["pose_frame_ids"][:22] == list(range(20)) + [19, 18]


def test_cross_driven_rejects_bad_audio(tmp_path, dataset, model):
    from pipeline.common.errors import InputError

    bad = tmp_path / "notes.wav"
    bad.write_text("not audio")
    with pytest.raises(InputError, match="notes.wav"):
        _render(tmp_path, model, dataset, test="bad", audio=bad)
    assert not (tmp_path / "bad").exists()


# ---- controls and compositing ------------------------------------------------------------------
def _frames_and_alpha(model, dataset, cfg):
    from pipeline.render.protocol import self_driven
    from pipeline.render.renderer import Renderer

    r = Renderer(model, dataset, cfg.get("compositing", "full"), Controls.from_config(cfg.get("controls")))
    seq = self_driven(dataset, "mel")
    frames, _ = r.render_all(seq)
    inp = r.frame_input(seq, 0, torch.from_numpy(seq.features), r.background)
    out = model.render(inp, torso=True)
    return frames[0], out["head_alpha"].numpy() > 0.5, out["torso_alpha"].numpy() > 0.5


def test_yaw_offset_changes_head_only(dataset, model):
    base, head, torso = _frames_and_alpha(model, dataset, {})
    yaw, head_y, torso_y = _frames_and_alpha(model, dataset, {"controls": {"yaw_deg": 15}})
    assert head.sum() > 200
    diff = np.abs(yaw - base).max(-1)
    assert diff[head & head_y].mean() > 0.05            # the head is seen from another side
    outside = ~(head | head_y | torso | torso_y)
    assert outside.sum() > 1000 and diff[outside].max() == 0.0   # background untouched


def test_background_control_changes_background_only(tmp_path, dataset, model):
    import cv2

    from skimage import data as skdata

    bg = tmp_path / "astronaut.png"
    cv2.imwrite(str(bg), cv2.cvtColor(skdata.astronaut(), cv2.COLOR_RGB2BGR))
    base, head, torso = _frames_and_alpha(model, dataset, {})
    new, _, _ = _frames_and_alpha(model, dataset, {"controls": {"background": str(bg)}})
    diff = np.abs(new - base).max(-1)
    fg = head | torso
    assert diff[fg].max() == 0.0
    assert (diff[~fg] > 0.02).mean() > 0.5
    out, m = _render(tmp_path, model, dataset, cfg={"controls": {"background": str(bg), "eye_openness": 0.5}})
    assert m["controls"] == {"background": str(bg), "eye_openness": 0.5, "eye_au45": 1.0}


def test_head_on_gt_and_paste_back(tmp_path, dataset, model):
    from pipeline.render.controls import load_image, read_lms

    gt, head, _ = _frames_and_alpha(model, dataset, {"compositing": "head_on_gt"})
    assert np.abs(gt - load_image(dataset.gt_img(20), (64, 64)))[~head].mean() < 0.1  # GT torso + background
    pb, _, _ = _frames_and_alpha(model, dataset, {"compositing": "paste_back"})
    ori = load_image(dataset.img(20), (64, 64))
    mask = face_mask(read_lms(dataset.lms(20)), (256, 256), (64, 64))
    assert mask.max() > 0.99 and mask.min() == 0.0
    np.testing.assert_allclose(pb[mask == 0], ori[mask == 0], atol=1e-6)     # original frame outside the face
    inner = (mask > 0.99) & head
    assert inner.any() and np.abs(pb - ori)[inner].mean() > 0.05               # rendered face inside
    out, m = _render(tmp_path, model, dataset, cfg={"compositing": "paste_back"})
    assert m["compositing"] == "paste_back" and validate_contract(out) == []


# ---- render speed ------------------------------------------------------------------------------
def test_fps_measured_at_512(tmp_path, dataset, model):
    from pipeline.render.benchmark import at_resolution, measure_fps

    before = dict(model.meta)
    r = measure_fps(model, dataset, 512, frames=2)
    assert r["size"] == [512, 512] and r["frames"] == 2 and r["fps_render"] > 0
    assert model.meta == before                       # intrinsics restored
    with at_resolution(model, 128):
        assert (model.meta["W"], model.meta["focal"], model.meta["cx"]) == (128, 160.0, 64.0)
    out, m = _render(tmp_path, model, dataset, fps512_frames=1)
    assert m["fps_render_512"] > 0 and "512x512" in m["fps_render_512_source"]
    _, m = _render(tmp_path, model, dataset, name="cpu_default")
    assert m["fps_render_512"] is None and "benchmark" in m["fps_render_512_source"]


def test_cli_errors_are_one_line(tmp_path, dataset, capsys):
    from pipeline.common.log import run_main
    from pipeline.render.__main__ import main

    base = ["--model", str(tmp_path / "nomodel"), "--data", str(dataset.root), "--method", "rad_nerf",
            "--identity", "German", "--out", str(tmp_path / "out")]
    assert run_main(main, [*base, "--test", "self"]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("ERROR: ") and "nomodel" in err and "checkpoint" in err
    assert not (tmp_path / "out").exists()
