"""Action units: blendshape -> AU mapping on constructed inputs, OpenFace CSV round trip, the OpenFace
path through a fake FeatureExtraction executable, and the default extractor on real MediaPipe output."""
from __future__ import annotations

import json
import os
import stat
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.common.errors import InputError
from pipeline.preprocess import aus as A
from tests.conftest import SAMPLE_VIDEO
from tests.test_tracking import N_SAMPLE, mp_sample  # noqa: F401  (module fixture)

#: MediaPipe FaceLandmarker blendshape names, in its output order
NAMES = ["_neutral", "browDownLeft", "browDownRight", "browInnerUp", "browOuterUpLeft", "browOuterUpRight",
         "cheekPuff", "cheekSquintLeft", "cheekSquintRight", "eyeBlinkLeft", "eyeBlinkRight", "eyeLookDownLeft",
         "eyeLookDownRight", "eyeLookInLeft", "eyeLookInRight", "eyeLookOutLeft", "eyeLookOutRight",
         "eyeLookUpLeft", "eyeLookUpRight", "eyeSquintLeft", "eyeSquintRight", "eyeWideLeft", "eyeWideRight",
         "jawForward", "jawLeft", "jawOpen", "jawRight", "mouthClose", "mouthDimpleLeft", "mouthDimpleRight",
         "mouthFrownLeft", "mouthFrownRight", "mouthFunnel", "mouthLeft", "mouthLowerDownLeft",
         "mouthLowerDownRight", "mouthPressLeft", "mouthPressRight", "mouthPucker", "mouthRight",
         "mouthRollLower", "mouthRollUpper", "mouthShrugLower", "mouthShrugUpper", "mouthSmileLeft",
         "mouthSmileRight", "mouthStretchLeft", "mouthStretchRight", "mouthUpperUpLeft", "mouthUpperUpRight",
         "noseSneerLeft", "noseSneerRight"]


def _bs(**scores) -> np.ndarray:
    row = np.zeros(52, np.float32)
    for k, v in scores.items():
        row[NAMES.index(k)] = v
    return row


def test_mapping_on_constructed_blendshapes():
    bs = np.stack([
        _bs(browInnerUp=0.6, jawOpen=0.5, mouthClose=0.1, eyeBlinkLeft=0.2, eyeBlinkRight=0.4),
        _bs(mouthSmileLeft=0.8, mouthSmileRight=0.6, browDownLeft=1.0, browDownRight=1.0, mouthClose=0.3),
        _bs(),
    ])
    r = A.estimate_aus_from_blendshapes(bs, NAMES)
    assert list(r.columns) == [f"{a}_r" for a in A.AU_R] and r.shape == (3, 17)
    expect0 = {"AU01_r": 3.0, "AU25_r": 2.0, "AU26_r": 2.5, "AU45_r": 1.5}
    for col in r.columns:
        assert r.loc[0, col] == pytest.approx(expect0.get(col, 0.0), abs=1e-6), col
    assert r.loc[1, "AU12_r"] == pytest.approx(3.5) and r.loc[1, "AU04_r"] == pytest.approx(5.0)
    assert r.loc[1, "AU25_r"] == 0.0  # lips closed: jawOpen - mouthClose clipped at 0
    assert (r.loc[2] == 0).all()
    c = A.estimate_au_presence(bs, NAMES)
    assert c.shape == (3, 18) and list(c.columns) == [f"{a}_c" for a in A.AU_C]
    assert c.loc[0, ["AU01_c", "AU25_c", "AU26_c", "AU45_c"]].tolist() == [1, 1, 1, 1]
    assert c.loc[0, "AU02_c"] == 0 and c.loc[1, "AU12_c"] == 1 and c.loc[2].sum() == 0
    with pytest.raises(ValueError, match="lack"):
        A.estimate_aus_from_blendshapes(bs[:, :50], NAMES[:50])


def test_openface_csv_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    bs = rng.uniform(0, 0.8, (7, 52)).astype(np.float32)
    df = A.aus_table(bs, NAMES, fps=25.0, failed={3})
    path = tmp_path / "au.csv"
    A.write_openface_csv(df, path)
    header = path.read_text().splitlines()[0]
    assert header.startswith("frame, face_id, timestamp, confidence, success, AU01_r, AU02_r")
    assert header.endswith("AU26_c, AU28_c, AU45_c")
    raw = pd.read_csv(path)  # as ER-NeRF reads it: names keep OpenFace's leading space
    assert " AU45_r" in raw.columns and len(raw) == 7
    back = A.read_openface_csv(path)
    assert list(back.columns) == A.COLUMNS
    assert back["frame"].tolist() == list(range(1, 8))
    assert back["timestamp"].tolist() == pytest.approx([i / 25 for i in range(7)])
    assert back.loc[3, "success"] == 0 and back.loc[2, "success"] == 1
    np.testing.assert_allclose(back[[f"{a}_r" for a in A.AU_R]].to_numpy(),
                               df[[f"{a}_r" for a in A.AU_R]].to_numpy(), atol=0.005 + 1e-9)


def _fake_openface(tmp_path: Path, rows: int, drop: str | None = None, rc: int = 0) -> Path:
    cols = [c for c in A.COLUMNS if c != drop]
    script = tmp_path / "FeatureExtraction"
    script.write_text(textwrap.dedent(f"""\
        #!{sys.executable}
        import sys, os
        args = sys.argv[1:]
        video, out = args[args.index("-f") + 1], args[args.index("-out_dir") + 1]
        assert "-aus" in args
        if {rc}:
            print("could not open video", file=sys.stderr); sys.exit({rc})
        cols = {cols!r}
        stem = os.path.splitext(os.path.basename(video))[0]
        with open(os.path.join(out, stem + ".csv"), "w") as f:
            f.write(", ".join(cols) + "\\n")
            for i in range({rows}):
                vals = [str(i + 1), "0", f"{{i * 0.04:.3f}}", "0.98", "1"]
                vals += [f"{{(i % 5) * 0.5:.2f}}" for c in cols[5:]]
                f.write(", ".join(vals) + "\\n")
        """))
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


def _inputs(tmp_path: Path, n: int) -> list[str]:
    np.save(tmp_path / "bs.npy", np.full((n, 52), 0.1, np.float32))
    (tmp_path / "landmarks.json").write_text(json.dumps({"blendshape_names": NAMES, "failed_frames": []}))
    return ["--video", str(SAMPLE_VIDEO), "--blendshapes", str(tmp_path / "bs.npy"),
            "--landmarks", str(tmp_path / "landmarks.json"), "--out", str(tmp_path / "au.csv"),
            "--out-report", str(tmp_path / "aus.json")]


def test_openface_binary_path(tmp_path):
    args = _inputs(tmp_path, 12)
    exe = _fake_openface(tmp_path, 12)
    assert A.main([*args, "--cfg", json.dumps({"openface_bin": str(exe)})]) == 0
    df = A.read_openface_csv(tmp_path / "au.csv")
    assert len(df) == 12 and df["AU45_r"].tolist() == [(i % 5) * 0.5 for i in range(12)]
    assert json.loads((tmp_path / "aus.json").read_text())["extractor"] == "openface"
    with pytest.raises(InputError, match="has 11 rows but the dataset has 12 frames"):
        A.main([*args, "--cfg", json.dumps({"openface_bin": str(_fake_openface(tmp_path, 11))})])
    with pytest.raises(InputError, match=r"lacks columns \['AU45_r'\]"):
        A.main([*args, "--cfg", json.dumps({"openface_bin": str(_fake_openface(tmp_path, 12, drop="AU45_r"))})])
    with pytest.raises(InputError, match="exit code 3: could not open video"):
        A.main([*args, "--cfg", json.dumps({"openface_bin": str(_fake_openface(tmp_path, 12, rc=3))})])
    with pytest.raises(InputError, match="FeatureExtraction not found"):
        A.main([*args, "--cfg", json.dumps({"openface_bin": str(tmp_path / "nope")})])


def test_blendshape_extractor_on_real_sample(mp_sample, tmp_path):  # noqa: F811
    out = tmp_path / "au.csv"
    args = ["--video", str(SAMPLE_VIDEO), "--blendshapes", str(mp_sample / "blendshapes.npy"),
            "--landmarks", str(mp_sample / "landmarks.json"), "--out", str(out),
            "--out-report", str(tmp_path / "aus.json")]
    assert A.main(args) == 0
    df = A.read_openface_csv(out)
    assert len(df) == N_SAMPLE and list(df.columns) == A.COLUMNS
    r = df[[f"{a}_r" for a in A.AU_R]]
    assert ((r >= 0) & (r <= 5)).all().all()
    # a speaking face: the mouth AUs move over the clip
    assert df["AU26_r"].std() > 0.02 and df["AU25_r"].max() > 0
    rep = json.loads((tmp_path / "aus.json").read_text())
    assert rep["extractor"] == "mediapipe_blendshapes" and rep["frames"] == N_SAMPLE
    (tmp_path / "bad.json").write_text(json.dumps({"blendshape_names": NAMES[:10]}))
    with pytest.raises(InputError, match="no list of 52 blendshape names"):
        A.main([*args[:4], "--landmarks", str(tmp_path / "bad.json"), *args[6:]])
    assert os.path.exists(out)
