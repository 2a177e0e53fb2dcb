"""Small real inputs for the report / baselines / browser tests (helpers, and a check of them).

- :func:`make_tiny_dataset`: the first seconds of the sample video (resources/sample/German_12s.mp4)
  as an ER-NeRF-shaped dataset: ``gt_imgs/{i}.jpg`` (centre crop, scaled down), ``aud.wav`` (16 kHz
  mono), ``transforms_train.json`` / ``transforms_val.json`` (last 1/11 of the frames; identity
  poses: the baselines do not use them). Built with ffmpeg in well under a second.
- :func:`write_metric_json`: a metric file in the metrics stage's documented shape.
"""
from __future__ import annotations

import json
import subprocess
from pathlib import Path

from pipeline.common.layout import DatasetLayout
from tests.conftest import SAMPLE_VIDEO

EYE = [[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]]


def make_tiny_dataset(root: Path, identity: str = "German", seconds: float = 2.2, size: int = 128) -> DatasetLayout:
    """Cut ``seconds`` of the sample video into ``root/{identity}`` (see module doc)."""
    data = DatasetLayout(root / identity, identity)
    data.gt_imgs.mkdir(parents=True, exist_ok=True)
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-t", str(seconds), "-i", str(SAMPLE_VIDEO), "-vf",
                    f"fps=25,crop=ih:ih:(iw-ih)/2:0,scale={size}:{size}", "-start_number", "0",
                    str(data.gt_imgs / "%d.jpg")], check=True)
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-t", str(seconds), "-i", str(SAMPLE_VIDEO), "-vn", "-ac", "1",
                    "-ar", "16000", str(data.audio)], check=True)
    n = len(list(data.gt_imgs.glob("*.jpg")))
    n_val = round(n / 11)
    for path, ids in ((data.transforms_train, range(0, n - n_val)), (data.transforms_val, range(n - n_val, n))):
        path.write_text(json.dumps({"focal_len": 500.0, "cx": size / 2, "cy": size / 2, "frames": [
            {"img_id": i, "aud_id": i, "transform_matrix": EYE} for i in ids]}))
    return data


def write_metric_json(root: Path, method: str, identity: str, test: str, values: dict[str, float | None],
                      reasons: dict[str, str] | None = None, n_frames: int = 10,
                      backends: dict[str, str] | None = None, resolution: list[int] | None = None,
                      compositing: str = "full") -> Path:
    """Write ``root/{method}/{identity}/{test}.json`` (protocol from the test name; every metric's
    backend ``"test"`` unless ``backends`` names it; ``resolution`` [W, H], default 512x512)."""
    reasons = reasons or {}
    backends = backends or {}
    path = root / method / identity / f"{test}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({
        "method": method, "identity": identity, "test": test,
        "protocol": "self_driven" if test == "self" else "cross_driven", "n_frames": n_frames,
        "compositing": compositing, "resolution": resolution or [512, 512],
        "metrics": {k: {"value": v, "backend": backends.get(k, "test"), "weights_sha256": None,
                        "na_reason": reasons.get(k) if v is None else None, "n_frames": n_frames}
                    for k, v in values.items()}}))
    return path


def test_tiny_dataset_matches_the_sample(tmp_path):
    data = make_tiny_dataset(tmp_path, seconds=1.0)
    frames = sorted(data.gt_imgs.glob("*.jpg"))
    assert len(frames) == 25
    val = json.loads(data.transforms_val.read_text())["frames"]
    assert [f["img_id"] for f in val] == [23, 24]  # round(25 / 11) = 2 validation frames
    import soundfile as sf

    info = sf.info(str(data.audio))
    assert info.samplerate == 16000 and info.channels == 1 and abs(info.duration - 1.0) < 0.05
