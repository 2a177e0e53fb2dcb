"""Real videos as users bring them, on clips the tests make with ffmpeg from the sample.

* A clip whose face leaves the picture for 1.6 s (40 of 125 frames blacked out) builds a dataset
  whose train/val splits leave those frames out (``landmarks.json`` / ``manifest.json``
  ``excluded_frames``, a log line), instead of refusing the identity.
"""
from __future__ import annotations

import json
import subprocess

import pytest

from tests.conftest import SAMPLE_VIDEO, make_workdir, run_snakemake

#: blacked-out stretch of the test clip (seconds) -> frames 45..84 at 25 fps
BLANK_S = (1.8, 3.4)


def _clip_with_faceless_stretch(path):
    """The first 5 s of the sample (picture and sound) with the picture black during BLANK_S."""
    a, b = BLANK_S
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-t", "5", "-i", str(SAMPLE_VIDEO), "-vf",
                    f"drawbox=x=0:y=0:w=iw:h=ih:color=black:t=fill:enable='between(t,{a},{b - 0.001})'",
                    "-c:v", "libx264", "-preset", "ultrafast", "-crf", "18", "-c:a", "aac", str(path)], check=True)
    return path


@pytest.mark.slow
def test_clip_with_faceless_stretch_builds_without_those_frames(tmp_path):
    clip = _clip_with_faceless_stretch(tmp_path / "away.mp4")
    wd = make_workdir(tmp_path / "wd", identities=[("Away", str(clip))])
    run_snakemake(wd, "results/data/Away/manifest.json")
    data = wd / "results" / "data" / "Away"
    man = json.loads((data / "manifest.json").read_text())
    n = man["frames"]
    assert n == 125
    blank = list(range(45, 85))
    # MediaPipe may also lose the face on a frame at the edge of the black stretch
    excluded = man["excluded_frames"]
    assert set(blank) <= set(excluded) and len(excluded) <= len(blank) + 2
    train = json.loads((data / "transforms_train.json").read_text())["frames"]
    val = json.loads((data / "transforms_val.json").read_text())["frames"]
    ids = [f["img_id"] for f in train + val]
    assert sorted(ids + excluded) == list(range(n)) and not set(ids) & set(excluded)
    assert man["train_val_frames"] == [len(train), len(val)] and len(val) == n - len(excluded) - int((n - len(excluded)) * 10 / 11)
    assert all(f["aud_id"] == f["img_id"] for f in train + val)
    # every per-frame artefact still has one entry per frame (rows = frame index)
    assert all(c == n for c in man["counts"].values()), man["counts"]
    log = (wd / "results" / "logs" / "tracking" / "Away.log").read_text()
    assert f"left out {len(excluded)} frames without a face (frames " in log and "from the train/val splits" in log
