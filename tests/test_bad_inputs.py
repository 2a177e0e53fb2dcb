"""Bad raw videos are refused by the probe stage with one clear line naming the file; in a
snakemake run a bad identity fails alone and leaves nothing that looks complete."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import PROJECT_ROOT, SAMPLE_VIDEO, make_workdir, run_snakemake


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-y", *args], check=True)


@pytest.fixture(scope="module")
def bad_dir(tmp_path_factory) -> Path:
    """Bad inputs cut from the sample (6 s pieces, so they are cheap)."""
    d = tmp_path_factory.mktemp("bad")
    s = str(SAMPLE_VIDEO)
    ffmpeg("-i", s, "-t", "2", "-c", "copy", str(d / "short.mp4"))
    ffmpeg("-i", s, "-t", "6", "-an", "-c", "copy", str(d / "noaudio.mp4"))
    ffmpeg("-i", s, "-t", "6", "-vn", "-c", "copy", str(d / "audioonly.m4a"))
    data = SAMPLE_VIDEO.read_bytes()
    (d / "truncated.mp4").write_bytes(data[: len(data) // 2])  # moov atom at the end: lost
    ffmpeg("-i", s, "-c", "copy", "-movflags", "+faststart", str(d / "faststart.mp4"))
    fs = (d / "faststart.mp4").read_bytes()
    (d / "truncated_faststart.mp4").write_bytes(fs[: len(fs) // 2])  # header intact, frames lost
    # background only: the top-left 150x150 corner of the studio, scaled up
    ffmpeg("-i", s, "-t", "6", "-vf", "crop=150:150:0:0,scale=512:512", "-c:a", "copy", "-preset",
           "ultrafast", str(d / "noface.mp4"))
    ffmpeg("-i", s, "-t", "6", "-filter_complex", "[0:v][0:v]hstack=2[v]", "-map", "[v]", "-map", "0:a",
           "-c:a", "copy", "-preset", "ultrafast", str(d / "twofaces.mp4"))
    return d


def run_probe(video: Path, out: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline.preprocess.probe", "--video", str(video),
                           "--out", str(out), "--cfg", '{"min_duration_s": 4.0, "sample_frames": 6}'],
                          cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("name, reason", [
    ("short.mp4", "too short: 2.0"),  # 2.08 s: stream copy cuts at a frame
    ("noaudio.mp4", "no audio stream (the dataset needs the speech track)"),
    ("audioonly.m4a", "no video stream (audio-only file?)"),
    ("truncated.mp4", "unreadable or corrupt media file (Invalid data found when processing input)"),
    ("truncated_faststart.mp4", "unreadable or corrupt video: no frame decoded at"),
    ("noface.mp4", "no face found in any of the 6 sampled frames"),
    ("twofaces.mp4", "more than one face (2 faces in 6 of the 6 sampled frames) and single_face is true"),
])
def test_probe_refuses(bad_dir, tmp_path, name, reason):
    video = bad_dir / name
    proc = run_probe(video, tmp_path / "probe.json")
    assert proc.returncode == 1, proc.stderr[-2000:]
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("ERROR: ")]
    assert len(errors) == 1, proc.stderr[-2000:]
    assert errors[0].startswith(f"ERROR: {video}: {reason}"), errors[0]
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "probe.json").exists()
    assert not list(tmp_path.iterdir())  # no temporary leftovers either


def test_two_faces_allowed_when_single_face_false(bad_dir, tmp_path):
    from pipeline.preprocess.probe import ProbeConfig, probe_video

    rep = probe_video(bad_dir / "twofaces.mp4", ProbeConfig(sample_frames=2, single_face=False))
    assert [len(f["boxes"]) for f in rep["faces"]] == [2, 2]


@pytest.mark.slow
def test_snakemake_bad_identity_fails_alone(bad_dir, tmp_path):
    """--keep-going: the good identity reaches ori_imgs, the bad one fails at probe with its
    message in the log and leaves no probe.json / crop outputs / ori_imgs."""
    wd = make_workdir(tmp_path / "wd", identities=[("German", str(SAMPLE_VIDEO)),
                                                    ("Silent", str(bad_dir / "noaudio.mp4"))])
    proc = run_snakemake(wd, "results/data/German/ori_imgs", "results/data/German/aud_mel.npy",
                         "results/data/Silent/ori_imgs", args=("--keep-going",), check=False, timeout=900)
    assert proc.returncode != 0
    good = wd / "results" / "data" / "German"
    assert len(list((good / "ori_imgs").glob("*.jpg"))) == 300
    assert (good / "German.mp4").is_file() and (good / "aud.wav").is_file() and (good / "crop.json").is_file()
    import numpy as np

    assert np.load(good / "aud_mel.npy").shape == (300, 16, 80)
    log = (wd / "results" / "logs" / "probe" / "Silent.log").read_text()
    assert f"ERROR: {bad_dir / 'noaudio.mp4'}: no audio stream" in log
    bad = wd / "results" / "data" / "Silent"
    leftovers = [p.name for p in bad.iterdir()] if bad.exists() else []
    assert leftovers == [], leftovers
