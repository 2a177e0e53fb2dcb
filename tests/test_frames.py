"""Frames stage: exactly one JPEG per decoded frame, named from 0, pixel-faithful."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import PROJECT_ROOT, SAMPLE_VIDEO


def test_frames_one_jpeg_per_frame(tmp_path):
    import av
    import cv2

    out = tmp_path / "ori_imgs"
    proc = subprocess.run([sys.executable, "-m", "pipeline.preprocess.frames", "--video", str(SAMPLE_VIDEO),
                           "--out", str(out)], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(f"{i}.jpg" for i in range(300))  # ffprobe: nb_frames=300, nothing else
    # frame i of the JPEGs is decoded frame i (no shift, drop or duplicate): compare a few
    with av.open(str(SAMPLE_VIDEO)) as c:
        decoded = [f.to_ndarray(format="bgr24") for f in c.decode(video=0)]
    assert len(decoded) == 300
    for i in (0, 1, 150, 299):
        img = cv2.imread(str(out / f"{i}.jpg"))
        assert img.shape == (512, 512, 3)
        err = np.abs(img.astype(np.float32) - decoded[i]).mean()
        neighbour = np.abs(img.astype(np.float32) - decoded[i - 1 if i else 1]).mean()
        assert err < 2.0, (i, err)  # JPEG q95
        assert err < neighbour, (i, err, neighbour)


def test_frames_refuses_unreadable(tmp_path):
    from pipeline.common.errors import InputError
    from pipeline.preprocess.frames import extract_frames

    bad = tmp_path / "bad.mp4"
    bad.write_bytes(SAMPLE_VIDEO.read_bytes()[:5000])
    with pytest.raises(InputError, match="bad.mp4: unreadable or corrupt video"):
        extract_frames(bad, tmp_path / "ori_imgs")
    assert not (tmp_path / "ori_imgs").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["bad.mp4"]


def test_frames_refuses_missing_frames(tmp_path):
    """Header intact (faststart) but the second half of the data cut off: the decoded count falls
    short of the container's frame count, which is an error, not a shorter dataset."""
    from pipeline.common.errors import InputError
    from pipeline.preprocess.frames import extract_frames

    fs = tmp_path / "fs.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(SAMPLE_VIDEO), "-c", "copy", "-movflags", "+faststart",
                    str(fs)], check=True)
    cut = tmp_path / "cut.mp4"
    data = fs.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match=r"cut\.mp4: decoded \d+ frames but the container holds 300"):
        extract_frames(cut, tmp_path / "ori_imgs")
    assert not (tmp_path / "ori_imgs").exists()
