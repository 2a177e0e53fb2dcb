"""Audio/video stream length check of the probe stage, on clips the test makes with ffmpeg.

A 5 s piece of the sample video is muxed with a generated tone of another length: an audio track
3 s longer than the video is refused above ``max_av_diff_s`` (one line naming the file and both
durations) and accepted with a warning below it; matching streams pass silently. Both durations
are recorded in ``probe.json`` (and from there in ``manifest.json``).
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import PROJECT_ROOT, SAMPLE_VIDEO


def _mux(tmp_path, video_s: float, audio_s: float):
    """The first ``video_s`` seconds of the sample's picture + a 440 Hz tone of ``audio_s`` seconds."""
    out = tmp_path / f"v{video_s:g}_a{audio_s:g}.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-t", str(video_s), "-i", str(SAMPLE_VIDEO),
                    "-f", "lavfi", "-t", str(audio_s), "-i", "sine=frequency=440:sample_rate=16000",
                    "-map", "0:v", "-map", "1:a", "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac",
                    str(out)], check=True)
    return out


def _probe_cli(video, tmp_path, **cfg):
    out = tmp_path / "probe.json"
    proc = subprocess.run([sys.executable, "-m", "pipeline.preprocess.probe", "--video", str(video),
                           "--out", str(out), "--cfg", json.dumps({"sample_frames": 2, **cfg})],
                          cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120)
    return proc, (json.loads(out.read_text()) if out.exists() else None)


def test_check_av_durations_hand_values():
    from pipeline.common.errors import InputError
    from pipeline.preprocess.probe import check_av_durations

    # 25 fps: one frame = 0.04 s
    assert check_av_durations("x.mp4", 8.0, 8.03, 25.0, 1.0)["status"] == "ok"
    rep = check_av_durations("x.mp4", 8.0, 8.5, 25.0, 1.0)
    assert rep == {"video_s": 8.0, "audio_s": 8.5, "difference_s": 0.5, "status": "warned"}
    assert check_av_durations("x.mp4", 8.0, 7.9, 25.0, 1.0)["difference_s"] == pytest.approx(-0.1)
    with pytest.raises(InputError) as exc:
        check_av_durations("x.mp4", 8.0, 14.5, 25.0, 1.0)
    msg = str(exc.value)
    assert msg.startswith("x.mp4: ") and "\n" not in msg
    assert "14.50 s" in msg and "8.00 s" in msg and "max_av_diff_s=1" in msg


def test_audio_longer_than_video_refused_or_warned(tmp_path):
    clip = _mux(tmp_path, 5.0, 8.0)
    proc, rep = _probe_cli(clip, tmp_path, max_av_diff_s=1.0)
    assert proc.returncode == 1 and rep is None
    err = [ln for ln in proc.stderr.splitlines() if ln.startswith("ERROR:")]
    assert len(err) == 1
    assert str(clip) in err[0] and "audio stream 8.0" in err[0] and "video stream 5.0" in err[0]

    proc, rep = _probe_cli(clip, tmp_path, max_av_diff_s=5.0)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert " WARNING probe: " in proc.stderr and "the audio is longer" in proc.stderr
    av = rep["av_durations"]
    assert av["status"] == "warned"
    assert av["video_s"] == pytest.approx(5.0, abs=0.05) and av["audio_s"] == pytest.approx(8.0, abs=0.05)


def test_matching_streams_pass_without_warning(tmp_path):
    proc, rep = _probe_cli(SAMPLE_VIDEO, tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert " WARNING probe: " not in proc.stderr
    assert rep["av_durations"] == {"video_s": 12.0, "audio_s": 12.0, "difference_s": 0.0, "status": "ok"}
