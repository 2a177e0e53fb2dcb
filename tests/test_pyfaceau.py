"""The pyfaceau AU backend (OpenFace 2.2's AU models in Python), through a stand-in package that
the test writes: pyfaceau, pyclnf and pymtcnn modules with the real packages' entry points
(``<pkg>.models.models_ready(cache_dir)``, ``pyfaceau.models.ensure_models / model_paths``,
``pyfaceau.FullPythonAUPipeline(...).process_video``) whose "AU intensity" is the frame's mean
grey level / 51 and whose "face" is any frame brighter than black. It checks the code path: when
the backend is chosen, what it is fed (the exact pixels), how its output becomes ``au.csv`` and
AUE, and how the backend is named in the metric JSON and the tables. The stand-in's numbers
never reach a real table: the table test below writes its own hand values."""
from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
import pytest

from pipeline.preprocess import aus as A

FAKE_MODELS = '''
from pathlib import Path

def _ready(cache_dir):
    return Path(cache_dir) / "2.2.0" / "derived" / "{pkg}" / "1"

def models_ready(cache_dir=None):
    return (_ready(cache_dir) / "{pkg}-models.json").is_file()

def ensure_models(accept_license=False, *, cache_dir=None):
    assert models_ready(cache_dir), "stand-in: models not installed"
    return _ready(cache_dir)

def model_paths(weights_dir):
    return {{k: str(Path(weights_dir) / k) for k in ("pdm_file", "au_models_dir", "triangulation_file",
                                                   "patch_expert_file")}}
'''

FAKE_PIPELINE = '''
import os
import cv2
import numpy as np
import pandas as pd

AUS = {aus!r}
SEEN = []          # (OPENFACE_MODELS_DIR, pdm_file, [frame pixel values]) per process_video call

class FullPythonAUPipeline:
    def __init__(self, pdm_file=None, au_models_dir=None, triangulation_file=None, patch_expert_file=None,
                 verbose=True, **kwargs):
        self.pdm_file = pdm_file

    def process_video(self, video_path, output_csv=None, max_frames=None, progress_callback=None):
        cap = cv2.VideoCapture(video_path)
        rows, values = [], []
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            values.append(sorted(set(frame.reshape(-1).tolist())))
            face = frame.mean() > 0
            row = {{"frame": len(rows), "timestamp": len(rows) / 25.0, "success": bool(face)}}
            row.update({{f"{{a}}_r": (frame.mean() / 51.0 if face else float("nan")) for a in AUS}})
            rows.append(row)
        SEEN.append((os.environ.get("OPENFACE_MODELS_DIR"), self.pdm_file, values))
        return pd.DataFrame(rows)
'''


def install_standin(root: Path, models_dir: Path | None, packages=A.PYFACEAU_PACKAGES) -> None:
    """Write the stand-in packages under ``root`` (put on sys.path by the caller) and, when
    ``models_dir`` is given, the "installed model" stamps of ``packages`` in it."""
    for pkg in A.PYFACEAU_PACKAGES:
        (root / pkg).mkdir(parents=True, exist_ok=True)
        (root / pkg / "models.py").write_text(textwrap.dedent(FAKE_MODELS.format(pkg=pkg)))
        init = FAKE_PIPELINE.format(aus=list(A.AU_R)) if pkg == "pyfaceau" else ""
        (root / pkg / "__init__.py").write_text(init)
    for pkg in packages if models_dir else ():
        stamp = models_dir / "2.2.0" / "derived" / pkg / "1" / f"{pkg}-models.json"
        stamp.parent.mkdir(parents=True, exist_ok=True)
        stamp.write_text("{}")


@pytest.fixture
def standin(tmp_path, monkeypatch):
    """(weights folder, imported stand-in pyfaceau module); the stand-in packages are importable."""
    root = tmp_path / "site"
    weights = tmp_path / "weights"
    install_standin(root, A.pyfaceau_models_dir(weights))
    monkeypatch.syspath_prepend(str(root))
    for pkg in A.PYFACEAU_PACKAGES:
        for name in (pkg, f"{pkg}.models"):
            monkeypatch.delitem(sys.modules, name, raising=False)
    monkeypatch.delenv("OPENFACE_MODELS_DIR", raising=False)
    import pyfaceau

    yield weights, pyfaceau
    for pkg in A.PYFACEAU_PACKAGES:
        for name in (pkg, f"{pkg}.models"):
            sys.modules.pop(name, None)


def test_unavailable_reasons(tmp_path, monkeypatch):
    """Not installed -> the install command; installed without one package's model files -> that
    package and the folder named; everything there -> None."""
    models = tmp_path / "weights" / "OpenFaceModels"
    for name in [m for m in sys.modules if m.split(".")[0] in A.PYFACEAU_PACKAGES]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "pyfaceau.models", None)  # not importable, installed or not
    why = A.pyfaceau_unavailable(models)
    assert why.startswith("pyfaceau not installed: ")
    assert why.endswith("; `python -m pipeline.weights fetch openface_models_pyfaceau` says how to install them")
    monkeypatch.delitem(sys.modules, "pyfaceau.models")
    root = tmp_path / "site"
    install_standin(root, models, packages=("pyfaceau", "pymtcnn"))
    monkeypatch.syspath_prepend(str(root))
    why = A.pyfaceau_unavailable(models)
    assert why.startswith(f"pyclnf's OpenFace model files not in {models}; `python -m pipeline.weights fetch")
    install_standin(root, models)
    assert A.pyfaceau_unavailable(models) is None
    for name in [m for m in sys.modules if m.split(".")[0] in A.PYFACEAU_PACKAGES]:
        monkeypatch.delitem(sys.modules, name)


def _png_video(path: Path, values: list[int], size: int = 32) -> Path:
    """A lossless (FFV1) 25 fps video whose frame i is uniformly grey ``values[i]``."""
    frames = path.parent / f"{path.stem}_png"
    frames.mkdir()
    for i, v in enumerate(values):
        cv2.imwrite(str(frames / f"{i:06d}.png"), np.full((size, size, 3), v, np.uint8))
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-framerate", "25", "-i", str(frames / "%06d.png"),
                    "-c:v", "ffv1", str(path)], check=True)
    return path


def test_au_stage_writes_openface_layout_from_pyfaceau(standin, tmp_path):
    """preprocess.aus with the rule's ``openface_models``: au.csv from pyfaceau (frames from 1,
    AU = grey / 51 here, 0 and success 0 where no face, presence AU_r >= 1, AU28_c 0), aus.json
    names the backend; pyclnf/pymtcnn were pointed at the folder; a frame-count mismatch is an
    InputError."""
    weights, pyfaceau = standin
    models = A.pyfaceau_models_dir(weights)
    values = [102, 0, 51, 25]
    video = _png_video(tmp_path / "crop.mkv", values)
    np.save(tmp_path / "bs.npy", np.zeros((4, 52), np.float32))
    (tmp_path / "landmarks.json").write_text(json.dumps({"blendshape_names": [f"b{i}" for i in range(52)],
                                                         "failed_frames": []}))
    args = ["--video", str(video), "--blendshapes", str(tmp_path / "bs.npy"), "--landmarks",
            str(tmp_path / "landmarks.json"), "--out", str(tmp_path / "au.csv"), "--out-report",
            str(tmp_path / "aus.json"), "--cfg", json.dumps({"openface_bin": None, "openface_models": str(models)})]
    assert A.main(args) == 0
    df = A.read_openface_csv(tmp_path / "au.csv")
    assert list(df.columns) == A.COLUMNS and df["frame"].tolist() == [1, 2, 3, 4]
    assert df["AU45_r"].tolist() == [2.0, 0.0, 1.0, pytest.approx(0.49, abs=0.005)]
    assert df["success"].tolist() == [1, 0, 1, 1] and df["confidence"].tolist() == [1.0, 0.0, 1.0, 1.0]
    assert df["AU45_c"].tolist() == [1.0, 0.0, 1.0, 0.0] and df["AU28_c"].tolist() == [0.0] * 4
    rep = json.loads((tmp_path / "aus.json").read_text())
    assert rep["extractor"] == "pyfaceau" and rep["backend"] == A.PYFACEAU_BACKEND and rep["models"] == str(models)
    env, pdm, _ = pyfaceau.SEEN[-1]
    assert env == str(models) and pdm == str(models / "2.2.0/derived/pyfaceau/1/pdm_file")
    # the eye input the NeRFs are trained with comes from pyfaceau's AU45
    assert A.eye_ratio_from_au(tmp_path / "au.csv", 4).tolist() == [1.0, 0.0, 0.5, pytest.approx(0.245, abs=0.003)]
    np.save(tmp_path / "bs.npy", np.zeros((5, 52), np.float32))
    with pytest.raises(A.InputError, match="pyfaceau read 4 frames but the dataset has 5"):
        A.main(args)


def test_aue_uses_pyfaceau_when_installed_and_names_it(standin):
    """AUE picks pyfaceau when it and its model files are in {weights}/OpenFaceModels: the frames
    reach it losslessly, in order, as one sequence per side; frames without a face on either side
    are left out; AUE = sum over the 17 AUs of the per-AU MSE (hand-computed)."""
    from pipeline.metrics.compute import AUCollector

    weights, pyfaceau = standin
    au = AUCollector(None, weights)
    assert au.mode == "pyfaceau" and au.backend == A.PYFACEAU_BACKEND
    pairs = [(102, 153), (0, 153), (51, 51)]   # gen grey, gt grey; the 2nd render has no face
    for g, t in pairs:
        au.add(np.full((24, 24, 3), g, np.uint8), np.full((24, 24, 3), t, np.uint8))
    per_frame: dict = {}
    res = au.result(per_frame)
    gen_seen, gt_seen = [s[2] for s in pyfaceau.SEEN[-2:]]
    assert gen_seen == [[102], [0], [51]] and gt_seen == [[153], [153], [51]]  # exact pixels, in order
    # frames 1 and 3: AU errors (2-3)^2 = 1 and 0 on each of the 17 AUs -> per-AU MSE 0.5
    assert res["aue"].value == pytest.approx(17 * 0.5) and res["aue"].n_frames == 2
    assert res["aue_upper"].value == pytest.approx(8 * 0.5) and res["aue_lower"].value == pytest.approx(9 * 0.5)
    assert {res[k].backend for k in ("aue", "aue_upper", "aue_lower")} == {A.PYFACEAU_BACKEND}
    # the lip-AU presence accuracy (NeRF-3DTalker Table I) rides on the same AUs and names the detector
    assert all(m.backend.startswith(A.PYFACEAU_BACKEND.split(" (")[0]) for m in res.values())
    assert per_frame["au_sq_err"][0] == pytest.approx(17.0) and math.isnan(per_frame["au_sq_err"][1])


def test_aue_without_pyfaceau_models_says_why(standin, tmp_path):
    """Installed package but no model files in this weights folder: the blendshape estimate, whose
    backend names the reason (and still reads as the estimate in the tables)."""
    from pipeline.metrics.compute import AUCollector
    from pipeline.report.presets import short_backend

    au = AUCollector(None, tmp_path / "empty_weights")
    try:
        assert au.mode == "estimate"
        assert au.backend.startswith("AU estimate from MediaPipe blendshapes (not OpenFace); pyfaceau unavailable "
                                     "(pyfaceau's OpenFace model files not in ")
        assert short_backend(au.backend) == "AU estimate from MediaPipe blendshapes"
    finally:
        au.close()


def test_tables_mark_pyfaceau_cells(tmp_path):
    """A metric JSON whose AUE came from pyfaceau (hand values, not the stand-in's): the AUE header
    names pyfaceau and the cell's footnote says it is not the papers' OpenFace binary."""
    from pipeline.report import aggregate, tables
    from pipeline.report.presets import get_preset
    from tests.conftest import PROJECT_ROOT
    from tests.test_report_data import write_metric_json

    root = tmp_path / "metrics"
    for ident in ("German", "May"):
        write_metric_json(root, "rad_nerf", ident, "self", {"aue": 2.5, "psnr": 28.0},
                          backends={"aue": A.PYFACEAU_BACKEND})
    df = aggregate.aggregate(sorted(root.rglob("*.json")))
    tab = tables.build_table(df, get_preset("all"), "self_driven", ["rad_nerf"],
                             tables.read_reported(PROJECT_ROOT / "resources" / "reported_numbers.csv"))
    col = tab.columns.index("aue")
    assert tab.headers[col] == "AUE↓ [pyfaceau]"
    cell = next(r for r in tab.rows if r["method"] == "rad_nerf")["cells"][col]
    assert cell.startswith("2.500 (")
    note = tab.footnotes[int(cell.split("(")[1].rstrip(")")) - 1]
    assert note.startswith("AUE: measured with pyfaceau, not OpenFace as in the papers")


def test_metrics_json_records_pyfaceau(standin, tmp_path):
    """``python -m pipeline.metrics`` with pyfaceau installed in the weights folder: the AUE
    entries of the metric JSON carry pyfaceau's backend name, computed from the exact render and
    ground-truth pixels (stand-in AU = mean grey / 51, so AUE = 17 x mean over frames of the
    squared difference of the frame means / 51)."""
    from pipeline.metrics.__main__ import main
    from tests.test_metrics_pipeline import N, _dataset, _render

    weights, _ = standin
    data, frames = _dataset(tmp_path)
    render = _render(tmp_path, "rad_nerf", "self", [f // 2 for f in frames], gt_dir=data / "gt_imgs")
    out = tmp_path / "m.json"
    assert main(["--render", str(render), "--data", str(data), "--out", str(out), "--out-frames",
                 str(tmp_path / "m.csv"), "--weights-dir", str(weights), "--cfg", json.dumps({"self_driven": ["aue"]})]) == 0
    m = json.loads(out.read_text())["metrics"]
    d = [(cv2.imread(str(render / "frames" / f"{i}.png")).mean() - cv2.imread(str(data / "gt_imgs" / f"{i}.jpg")).mean()) / 51
         for i in range(N)]
    assert m["aue"]["value"] == pytest.approx(17 * np.mean(np.square(d)), rel=1e-9) and m["aue"]["n_frames"] == N
    assert {m[k]["backend"] for k in ("aue", "aue_lower", "aue_upper")} == {A.PYFACEAU_BACKEND}
