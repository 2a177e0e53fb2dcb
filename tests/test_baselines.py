"""Baselines on a small dataset cut from the sample video: static_frame and external write a valid
render contract with the test's frame count and audio; an external baseline reaches the tables."""
from __future__ import annotations

import csv
import subprocess

import cv2
import numpy as np
import pytest

from pipeline.baselines import external, static_frame
from pipeline.common.errors import InputError
from pipeline.common.io import read_json
from pipeline.render.contract import probe_av, validate_contract
from pipeline.report import aggregate, tables
from tests.conftest import PROJECT_ROOT, SAMPLE_VIDEO
from tests.test_report_data import make_tiny_dataset, write_metric_json

JFK = PROJECT_ROOT / "resources" / "audio" / "jfk_4.2s.flac"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_tiny_dataset(tmp_path_factory.mktemp("data"), seconds=2.2)  # 55 frames, 5 validation


@pytest.fixture(scope="module")
def other_video(tmp_path_factory):
    """1.5 s of the sample at 30 fps, 200x200, with its AAC audio: another system's output."""
    path = tmp_path_factory.mktemp("ext") / "other.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-ss", "2", "-t", "1.5", "-i", str(SAMPLE_VIDEO), "-vf",
                    "fps=30,crop=ih:ih:(iw-ih)/2:0,scale=200:200", "-c:v", "libx264", "-pix_fmt", "yuv420p",
                    "-c:a", "aac", str(path)], check=True)
    return path


def _rgb(path):
    return cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def test_static_frame_self_driven(data, tmp_path):
    out = tmp_path / "static_frame" / "German" / "self"
    assert static_frame.main(["--data", str(data.root), "--identity", "German", "--test", "self",
                              "--out", str(out)]) == 0
    assert validate_contract(out, check_all_frames=True) == []
    m = read_json(out / "manifest.json")
    assert m["n_frames"] == 5 and m["protocol"] == "self_driven"
    assert m["gt_reference"]["indices"] == [50, 51, 52, 53, 54]
    assert m["driving_audio"]["path"] == str(data.audio)
    first = _rgb(data.gt_img(0))
    for i in (0, 4):
        assert np.array_equal(_rgb(out / "frames" / f"{i}.png"), first)  # PNG is lossless
    av = probe_av(out / "video.mp4")
    assert av["n_frames"] == 5 and abs(av["audio_s"] - 0.2) < 0.04


def test_static_frame_cross_driven_length_follows_the_audio(data, tmp_path):
    out = tmp_path / "jfk"
    m = static_frame.render_static_frame(data.root, "German", "jfk", out, audio=JFK)
    import soundfile as sf

    assert m["n_frames"] == int(sf.info(str(JFK)).duration * 25) == 105
    assert m["protocol"] == "cross_driven" and m["gt_reference"] is None
    assert validate_contract(out) == []


def test_static_frame_needs_driving_audio_for_cross_driven(data, tmp_path):
    with pytest.raises(InputError, match="needs its driving audio"):
        static_frame.render_static_frame(data.root, "German", "jfk", tmp_path / "x")


def test_external_pads_a_short_video_and_resizes(data, other_video, tmp_path):
    out = tmp_path / "other" / "German" / "jfk"
    m = external.ingest(other_video, "other", "German", "jfk", data.root, out, audio=JFK)
    assert validate_contract(out, check_all_frames=True) == []
    # 1.5 s at 25 fps = 38 frames (ffmpeg fps filter rounds), padded to the 105 of the 4.2 s driving audio
    assert m["n_frames"] == 105 and m["external"]["padded_frames"] == 67 and not m["external"]["trimmed"]
    assert m["resolution"] == [128, 128] and m["external"]["source_size"] == [200, 200]
    assert m["external"]["audio_from"] == "video" and m["device"] == "external"
    assert np.array_equal(_rgb(out / "frames" / "104.png"), _rgb(out / "frames" / "37.png"))
    assert not np.array_equal(_rgb(out / "frames" / "0.png"), _rgb(out / "frames" / "37.png"))


def test_external_trims_to_the_validation_split(data, other_video, tmp_path):
    out = tmp_path / "self"
    m = external.ingest(other_video, "other", "German", "self", data.root, out, audio_from="test")
    assert m["n_frames"] == 5 and m["external"]["trimmed"] and m["external"]["audio_from"] == "test"
    assert m["gt_reference"]["indices"] == [50, 51, 52, 53, 54]
    assert validate_contract(out) == []


def test_external_refuses_a_file_without_video(data, tmp_path):
    with pytest.raises(InputError, match="jfk_4.2s.flac: no video stream"):
        external.ingest(JFK, "other", "German", "self", data.root, tmp_path / "o")


def _psnr(render_dir, data) -> float:
    """Mean PSNR of the render against its ground-truth frames (scikit-image, the reference)."""
    from skimage.metrics import peak_signal_noise_ratio

    m = read_json(render_dir / "manifest.json")
    vals = [peak_signal_noise_ratio(_rgb(data.gt_img(j)), _rgb(render_dir / "frames" / f"{k}.png"), data_range=255)
            for k, j in enumerate(m["gt_reference"]["indices"])]
    return float(np.mean(vals))


def test_external_baseline_appears_in_the_tables(data, other_video, tmp_path):
    """Ingest an external video, score it (PSNR against the ground truth) in the metric-file shape,
    run the report stages: the external method is a row of the self-driven table."""
    renders, metrics = tmp_path / "renders", tmp_path / "metrics"
    ext_dir = renders / "wav2lip_ext" / "German" / "self"
    external.ingest(other_video, "wav2lip_ext", "German", "self", data.root, ext_dir)
    sf_dir = renders / "static_frame" / "German" / "self"
    static_frame.render_static_frame(data.root, "German", "self", sf_dir)
    expected = {}
    for method, d in (("wav2lip_ext", ext_dir), ("static_frame", sf_dir)):
        expected[method] = _psnr(d, data)
        write_metric_json(metrics, method, "German", "self", {"psnr": expected[method]}, n_frames=5)
    out = tmp_path / "tables"
    assert aggregate.main(["--metrics", *map(str, sorted(metrics.rglob("*.json"))),
                           "--out-csv", str(out / "long.csv"), "--out-parquet", str(out / "long.parquet")]) == 0
    assert tables.main(["--long", str(out / "long.parquet"), "--preset", "all", "--out-dir", str(out)]) == 0
    rows = {r["method"]: r for r in csv.DictReader(open(out / "self_driven.csv"))}
    assert set(rows) == {"wav2lip_ext", "static_frame"}
    for method, value in expected.items():
        assert rows[method]["psnr"] == f"{value:.2f}"
    assert "wav2lip_ext" in (out / "self_driven.md").read_text()
