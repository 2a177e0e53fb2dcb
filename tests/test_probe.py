"""Probe stage on good inputs: container facts, faces per sampled frame, small faces, VFR."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import PROJECT_ROOT, SAMPLE_VIDEO, require_shared


def test_probe_cli_sample(tmp_path):
    out = tmp_path / "probe.json"
    proc = subprocess.run([sys.executable, "-m", "pipeline.preprocess.probe", "--video", str(SAMPLE_VIDEO),
                           "--out", str(out), "--cfg", json.dumps({"sample_frames": 4})],
                          cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rep = json.loads(out.read_text())
    assert rep["resolution"] == [512, 512]
    assert rep["fps"] == {"avg": 25.0, "r": 25.0, "variable": False}
    assert rep["duration"] == pytest.approx(12.0, abs=0.05)
    assert rep["nb_frames"] == 300
    assert {s["codec_type"] for s in rep["streams"]} == {"video", "audio"}
    assert rep["audio"]["sample_rate"] == 44100
    # 4 samples at the centres of 4 equal slices, one face each, the anchor's face in the middle
    assert [f["t"] for f in rep["faces"]] == pytest.approx([1.5, 4.5, 7.5, 10.5], abs=0.01)
    for f in rep["faces"]:
        assert len(f["boxes"]) == 1
        x, y, w, h, score = f["boxes"][0]
        assert 150 < x + w / 2 < 360 and 180 < y + h / 2 < 360 and 180 < w < 330 and score > 0.5


def test_probe_small_face_in_720p(tmp_path):
    """The Obama clip: a face about 110-130 px wide in 1280x720 is found in every sample."""
    from pipeline.preprocess.probe import ProbeConfig, probe_video

    video = require_shared("identities", "obama_dnc2020_64s.mp4")
    rep = probe_video(video, ProbeConfig(sample_frames=4))
    assert rep["resolution"] == [1280, 720]
    assert rep["fps"]["avg"] == pytest.approx(29.97, abs=0.01)
    for f in rep["faces"]:
        assert len(f["boxes"]) == 1, f
        x, y, w, h, _ = f["boxes"][0]
        assert 90 < w < 200 and 450 < x + w / 2 < 800 and y < 360


def test_probe_accepts_variable_frame_rate(tmp_path):
    from pipeline.preprocess.probe import ProbeConfig, probe_video

    vfr = tmp_path / "vfr.mp4"
    # keep 3 of every 5 frames with their original timestamps: r = 25 fps, avg = 15 fps
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(SAMPLE_VIDEO), "-t", "5", "-vf",
                    "select='lt(mod(n\\,5)\\,3)'", "-fps_mode", "vfr", "-c:a", "copy", "-preset", "ultrafast",
                    str(vfr)], check=True)
    rep = probe_video(vfr, ProbeConfig(sample_frames=2))
    assert rep["fps"]["variable"] is True
    assert rep["fps"]["avg"] == pytest.approx(15.0, abs=0.5)
    assert all(len(f["boxes"]) == 1 for f in rep["faces"])


def test_probe_rotated_video_reports_displayed_size(tmp_path):
    """A phone-style display rotation (matrix, 90 deg): sizes and face boxes are in the displayed
    (rotated) frame, as ffmpeg decodes it for the crop stage."""
    import numpy as np

    from pipeline.preprocess.media import iter_frames, probe_media, read_frames_at
    from pipeline.preprocess.probe import ProbeConfig, probe_video

    wide, rot = tmp_path / "wide.mp4", tmp_path / "rot.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(SAMPLE_VIDEO), "-t", "4", "-vf", "crop=512:400:0:56",
                    "-c:a", "copy", "-preset", "ultrafast", str(wide)], check=True)
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(wide), "-c", "copy", "-metadata:s:v:0", "rotate=90",
                    str(rot)], check=True)
    info = probe_media(rot)
    assert (info.width, info.height, info.rotation) == (400, 512, 90)
    seek = read_frames_at(rot, [0.0])[0]
    piped = next(iter(iter_frames(rot, width=info.width, height=info.height)))
    assert seek.shape == piped.shape == (512, 400, 3)
    assert np.abs(seek.astype(int) - piped).mean() < 1.0  # PyAV seek and ffmpeg pipe agree
    rep = probe_video(rot, ProbeConfig(sample_frames=2))
    assert rep["resolution"] == [400, 512] and rep["rotation"] == 90
    for f in rep["faces"]:
        x, y, w, h, _ = f["boxes"][0]
        assert x + w <= 401 and y + h <= 513 and h > 150
