"""MEAD importer on a folder laid out like MEAD, built from the sample video (MEAD itself may not
be redistributed): identities row, segment labels and frame counts."""
from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest

from pipeline.common.errors import InputError
from tests.conftest import SAMPLE_VIDEO

#: (MEAD emotion folder, level, clip name, start s, duration s) cut from the sample video
CLIPS = [("neutral", 1, "001", 0.0, 1.0), ("neutral", 1, "002", 1.0, 0.8),
         ("happy", 3, "001", 4.0, 1.2), ("angry", 2, "001", 6.0, 0.6),
         ("contempt", 1, "001", 8.0, 0.5)]               # not an AED-NeRF category: skipped


def _mead_folder(root):
    actor = root / "M999"
    for emo, lvl, name, start, dur in CLIPS:
        v = actor / "video" / "front" / emo / f"level_{lvl}" / f"{name}.mp4"
        a = actor / "audio" / emo / f"level_{lvl}" / f"{name}.m4a"
        v.parent.mkdir(parents=True, exist_ok=True)
        a.parent.mkdir(parents=True, exist_ok=True)
        # MEAD-like: 30 fps front video with its own audio track beside it as AAC in .m4a
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-ss", str(start), "-t", str(dur), "-i", str(SAMPLE_VIDEO),
                        "-an", "-r", "30", "-vf", "scale=320:240", "-c:v", "libx264", "-preset", "ultrafast", str(v)],
                       check=True)
        subprocess.run(["ffmpeg", "-v", "error", "-y", "-ss", str(start), "-t", str(dur), "-i", str(SAMPLE_VIDEO),
                        "-vn", "-c:a", "aac", str(a)], check=True)
    return actor


def test_mead_importer_rows_segments_and_frames(tmp_path):
    from pipeline.common.config import load_identities
    from pipeline.common.emotion import parse_spec
    from pipeline.datasets.mead import main
    from pipeline.preprocess.emotion import build
    from pipeline.preprocess.media import count_frames

    actor = _mead_folder(tmp_path / "MEAD")
    table = tmp_path / "identities.tsv"
    table.write_text("id\tvideo\temotion\tnotes\n")
    assert main([str(actor), "--out", str(tmp_path / "out"), "--append", str(table)]) == 0
    rec = json.loads((tmp_path / "out" / "M999_segments.json").read_text())
    # groups in category order (neutral, angry, ..., happy), 25 fps: 1.0 + 0.8 s, 0.6 s, 1.2 s
    assert [s["label"] for s in rec["segments"]] == ["neutral:1", "angry:2", "happy:3"]
    frames = [s["end_frame"] - s["start_frame"] for s in rec["segments"]]
    assert frames == [45, 15, 30], frames
    assert count_frames(tmp_path / "out" / "M999.mp4") == sum(frames) == rec["frames"]
    assert rec["emotion"] == "0-1.8 neutral:1; 1.8-2.4 angry:2; 2.4-3.6 happy:3"
    # the row is a valid identities row; the emotion stage labels every frame of the video
    rows = load_identities(table)
    assert rows[0]["id"] == "M999" and rows[0]["emotion"] == rec["emotion"]
    assert load_identities(tmp_path / "out" / "M999.tsv")[0]["video"] == str(tmp_path / "out" / "M999.mp4")
    _, info = build(rec["frames"], rows[0]["emotion"], 25.0, table)
    counts = {lab: info["labels"].count(lab) for lab in set(info["labels"])}
    assert counts == {"neutral:1": 45, "angry:2": 15, "happy:3": 30}
    assert len(parse_spec(rec["emotion"])) == 3
    # the joined video has the clips' audio, as long as the video (within one AAC frame)
    proc = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "a:0", "-show_entries", "format=duration",
                           "-of", "csv=p=0", str(tmp_path / "out" / "M999.mp4")], capture_output=True, text=True)
    assert abs(float(proc.stdout.strip()) - sum(frames) / 25) < 0.1
    assert np.isfinite(float(proc.stdout.strip()))


def test_mead_importer_missing_audio_names_the_file(tmp_path):
    from pipeline.datasets.mead import find_groups

    actor = tmp_path / "M1"
    (actor / "video" / "front" / "happy" / "level_1").mkdir(parents=True)
    (actor / "video" / "front" / "happy" / "level_1" / "001.mp4").write_bytes(b"x")
    with pytest.raises(InputError, match=r"audio/happy/level_1/001.m4a: audio of .* not found"):
        find_groups(actor)
    with pytest.raises(InputError, match="video/front: not found"):
        find_groups(tmp_path / "nothing")
