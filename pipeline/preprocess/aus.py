"""Facial action units (AUs) per frame: ``au.csv`` in OpenFace 2's CSV format.

Three extractors, the first available one is used:

* **OpenFace 2** (config ``preprocess.aus.openface_bin`` = path of ``FeatureExtraction``): the binary
  runs on the cropped video (``-f VIDEO -out_dir DIR -aus``); its CSV is read, its columns checked
  and its frame count compared with the dataset's, then written back unchanged in layout.
* **pyfaceau** (automatic when the ``pyfaceau`` package and OpenFace 2.2's model files are installed:
  :func:`pyfaceau_unavailable`): a Python re-implementation of OpenFace 2.2's AU pipeline (MTCNN
  face detection, CLNF landmarks, HOG + geometry features, OpenFace's own SVR models with its
  running-median person normalisation); its authors report r = 0.97 against the C++ binary. The
  model files live in ``{weights_dir}/OpenFaceModels`` (:func:`pyfaceau_models_dir`, the folder
  pyfaceau calls ``OPENFACE_MODELS_DIR``; manifest entry ``openface_models_pyfaceau`` says how to
  fetch them after accepting OpenFace's licence). pyfaceau writes intensities only: the presence
  columns are ``AU_r >= 1`` (``AU28_c`` 0) and ``confidence`` is 1 on frames with a face, 0 without.
* **MediaPipe blendshapes** (otherwise): the 17 intensity AUs are estimated from the 52 blendshape
  scores with the linear mapping below, scaled to OpenFace's 0..5 range (``AU_r = clip(5 * s, 0, 5)``
  where ``s`` is the blendshape score or the mean of its left/right pair). It is an approximation,
  not calibrated against OpenFace: use it for relative comparisons (AUE between methods on the same
  identity), not as absolute OpenFace numbers. The 18 presence AUs (``_c``) are ``AU_r >= 1``
  (``AU28_c`` from the lip-roll blendshapes, which have no intensity column in OpenFace).

==========  =========================  ======================================================
AU          FACS name                  MediaPipe blendshape(s) (score s)
==========  =========================  ======================================================
AU01        inner brow raiser          browInnerUp
AU02        outer brow raiser          mean(browOuterUpLeft, browOuterUpRight)
AU04        brow lowerer               mean(browDownLeft, browDownRight)
AU05        upper lid raiser           mean(eyeWideLeft, eyeWideRight)
AU06        cheek raiser               mean(cheekSquintLeft, cheekSquintRight)
AU07        lid tightener              mean(eyeSquintLeft, eyeSquintRight)
AU09        nose wrinkler              mean(noseSneerLeft, noseSneerRight)
AU10        upper lip raiser           mean(mouthUpperUpLeft, mouthUpperUpRight)
AU12        lip corner puller          mean(mouthSmileLeft, mouthSmileRight)
AU14        dimpler                    mean(mouthDimpleLeft, mouthDimpleRight)
AU15        lip corner depressor       mean(mouthFrownLeft, mouthFrownRight)
AU17        chin raiser                mouthShrugLower
AU20        lip stretcher              mean(mouthStretchLeft, mouthStretchRight)
AU23        lip tightener              mean(mouthPressLeft, mouthPressRight)
AU25        lips part                  max(jawOpen - mouthClose, 0)
AU26        jaw drop                   jawOpen
AU45        blink                      mean(eyeBlinkLeft, eyeBlinkRight)
AU28 (_c)   lip suck                   mean(mouthRollLower, mouthRollUpper)
==========  =========================  ======================================================

CSV layout (OpenFace 2 ``FeatureExtraction -aus``): ``frame, face_id, timestamp, confidence,
success, AU01_r ... AU45_r, AU01_c ... AU45_c`` with ", " between fields (hence the leading spaces
in the column names that ER-NeRF's loader expects, e.g. ``' AU45_r'``), frames numbered from 1,
timestamps in seconds.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.common.config import parse_cfg_arg
from pipeline.common.errors import InputError
from pipeline.common.io import atomic_write, atomic_write_json, read_json
from pipeline.common.log import run_main, setup_logging

log = logging.getLogger("pipeline.preprocess.aus")

#: OpenFace 2 intensity AUs (17) and presence AUs (18), in OpenFace's column order
AU_R = ["AU01", "AU02", "AU04", "AU05", "AU06", "AU07", "AU09", "AU10", "AU12", "AU14", "AU15",
        "AU17", "AU20", "AU23", "AU25", "AU26", "AU45"]
AU_C = AU_R[:-1] + ["AU28", "AU45"]
META_COLUMNS = ["frame", "face_id", "timestamp", "confidence", "success"]
COLUMNS = META_COLUMNS + [f"{a}_r" for a in AU_R] + [f"{a}_c" for a in AU_C]

#: AU -> blendshape names whose mean is the score (see the module table); AU25 is special-cased
_PAIR = lambda stem: (f"{stem}Left", f"{stem}Right")  # noqa: E731
BLENDSHAPE_AU_MAP: dict[str, tuple[str, ...]] = {
    "AU01": ("browInnerUp",),
    "AU02": _PAIR("browOuterUp"),
    "AU04": _PAIR("browDown"),
    "AU05": _PAIR("eyeWide"),
    "AU06": _PAIR("cheekSquint"),
    "AU07": _PAIR("eyeSquint"),
    "AU09": _PAIR("noseSneer"),
    "AU10": _PAIR("mouthUpperUp"),
    "AU12": _PAIR("mouthSmile"),
    "AU14": _PAIR("mouthDimple"),
    "AU15": _PAIR("mouthFrown"),
    "AU17": ("mouthShrugLower",),
    "AU20": _PAIR("mouthStretch"),
    "AU23": _PAIR("mouthPress"),
    "AU26": ("jawOpen",),
    "AU45": _PAIR("eyeBlink"),
    "AU28": ("mouthRollLower", "mouthRollUpper"),
}
#: OpenFace's intensity scale
AU_MAX = 5.0
#: presence threshold on the estimated intensity (0..5)
PRESENCE_THRESHOLD = 1.0


def _scores(blendshapes: np.ndarray, names: list[str]) -> dict[str, np.ndarray]:
    bs = np.asarray(blendshapes, dtype=np.float64)
    if bs.ndim != 2 or bs.shape[1] != len(names):
        raise ValueError(f"blendshapes {list(bs.shape)} do not match {len(names)} names")
    col = {n: i for i, n in enumerate(names)}
    needed = {n for v in BLENDSHAPE_AU_MAP.values() for n in v} | {"mouthClose"}
    missing = sorted(needed - set(col))
    if missing:
        raise ValueError(f"blendshape names lack {missing}")
    out = {au: bs[:, [col[n] for n in srcs]].mean(1) for au, srcs in BLENDSHAPE_AU_MAP.items()}
    out["AU25"] = np.maximum(bs[:, col["jawOpen"]] - bs[:, col["mouthClose"]], 0.0)
    return out


def estimate_aus_from_blendshapes(blendshapes: np.ndarray, names: list[str]) -> pd.DataFrame:
    """Estimate OpenFace's 17 intensity AUs from MediaPipe blendshapes (module table).

    Args:
        blendshapes: [N, 52] MediaPipe blendshape scores in [0, 1].
        names: the 52 blendshape category names, in column order.
    Returns:
        DataFrame [N, 17], columns ``AU01_r ... AU45_r`` (no leading spaces), values in [0, 5].
    Raises:
        ValueError: shape/name mismatch or a blendshape the mapping needs is missing.
    """
    s = _scores(blendshapes, names)
    return pd.DataFrame({f"{au}_r": np.clip(AU_MAX * s[au], 0.0, AU_MAX) for au in AU_R})


def estimate_au_presence(blendshapes: np.ndarray, names: list[str]) -> pd.DataFrame:
    """The 18 presence AUs (``AU01_c ... AU45_c``, 0/1) by thresholding the estimated intensity at
    :data:`PRESENCE_THRESHOLD`. Returns DataFrame [N, 18]."""
    s = _scores(blendshapes, names)
    return pd.DataFrame({f"{au}_c": (AU_MAX * s[au] >= PRESENCE_THRESHOLD).astype(np.float64) for au in AU_C})


def read_openface_csv(path: str | Path) -> pd.DataFrame:
    """Read an OpenFace 2 CSV; column names are stripped of OpenFace's leading spaces.

    Raises:
        InputError: unreadable, or without ``frame`` and at least one ``AU.._r`` column.
    """
    path = Path(path)
    try:
        df = pd.read_csv(path, skipinitialspace=True)
    except FileNotFoundError:
        raise InputError(path, "OpenFace CSV not found") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise InputError(path, f"not a CSV file ({exc})") from None
    df.columns = [str(c).strip() for c in df.columns]
    if "frame" not in df.columns or not any(c.endswith("_r") and c.startswith("AU") for c in df.columns):
        raise InputError(path, "not an OpenFace CSV (no 'frame' or AU intensity columns)")
    return df


#: ER-NeRF / TalkingGaussian clip AU45_r to [0, AU45_EYE_MAX] and divide by it to get the eye input
AU45_EYE_MAX = 2.0


def eye_ratio_from_au(path: str | Path, n_frames: int) -> np.ndarray:
    """The anchors' eye (blink) input of every frame, from ``au.csv``: ``clip(AU45_r, 0, 2) / 2``.

    This is what ER-NeRF's training loader computes (``nerf_triplane/provider.py`` lines 425-426
    and 500-501) and TalkingGaussian's (``scene/dataset_readers.py`` lines 117-118 and 219); their
    test loaders (ER-NeRF / RAD-NeRF ``provider.py`` ``NeRFDataset_Test``, lines 158-163) read the
    same quantity from the transforms' ``eye_ratio`` key, so writing it there gives a test pose file
    the eyes the model was trained with.

    Args:
        path: ``au.csv`` (OpenFace 2 layout, frames in order).
        n_frames: frames of the dataset.
    Returns:
        float32 [n_frames] in [0, 1] (0 open, 1 closed).
    Raises:
        InputError: unreadable CSV, no ``AU45_r`` column, or a row count other than ``n_frames``.
    """
    df = read_openface_csv(path)
    if "AU45_r" not in df.columns:
        raise InputError(path, "no AU45_r column (needed for eye_ratio)")
    if len(df) != n_frames:
        raise InputError(path, f"{len(df)} rows but the dataset has {n_frames} frames")
    au45 = df.sort_values("frame")["AU45_r"].to_numpy(np.float64)
    return (np.clip(au45, 0.0, AU45_EYE_MAX) / AU45_EYE_MAX).astype(np.float32)


def validate_openface(df: pd.DataFrame, path: str | Path, n_frames: int) -> pd.DataFrame:
    """Check an OpenFace table has every column of :data:`COLUMNS` and ``n_frames`` rows.

    Returns:
        the table restricted to :data:`COLUMNS`, in that order.
    Raises:
        InputError: missing columns or a frame count mismatch.
    """
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise InputError(path, f"OpenFace CSV lacks columns {missing[:5]}{' ...' if len(missing) > 5 else ''}")
    if len(df) != n_frames:
        raise InputError(path, f"OpenFace CSV has {len(df)} rows but the dataset has {n_frames} frames")
    return df[COLUMNS].reset_index(drop=True)


def aus_table(blendshapes: np.ndarray, names: list[str], fps: float, failed: set[int] | None = None) -> pd.DataFrame:
    """The full ``au.csv`` table from blendshapes: meta columns, 17 ``_r``, 18 ``_c``.

    ``frame`` counts from 1, ``timestamp`` = (frame - 1) / fps seconds; frames in ``failed`` get
    ``confidence`` 0 and ``success`` 0 (their blendshapes were interpolated by the landmarks stage).
    """
    n = len(blendshapes)
    failed = failed or set()
    ok = np.array([0.0 if i in failed else 1.0 for i in range(n)])
    meta = pd.DataFrame({"frame": np.arange(1, n + 1), "face_id": np.zeros(n, dtype=int),
                         "timestamp": np.arange(n) / float(fps), "confidence": ok * 0.98,
                         "success": ok.astype(int)})
    return pd.concat([meta, estimate_aus_from_blendshapes(blendshapes, names),
                      estimate_au_presence(blendshapes, names)], axis=1)[COLUMNS]


def write_openface_csv(df: pd.DataFrame, path: str | Path) -> None:
    """Write a table in OpenFace 2's CSV layout (", " separators, OpenFace's number formats)."""
    fmt = {"frame": "{:d}", "face_id": "{:d}", "timestamp": "{:.3f}", "confidence": "{:.2f}", "success": "{:d}"}
    lines = [", ".join(COLUMNS)]
    for row in df[COLUMNS].itertuples(index=False):
        cells = []
        for col, val in zip(COLUMNS, row):
            f = fmt.get(col, "{:.2f}")
            cells.append(f.format(int(val)) if "d" in f else f.format(float(val)))
        lines.append(", ".join(cells))
    with atomic_write(path, "w") as fh:
        fh.write("\n".join(lines) + "\n")


def run_openface(binary: str | Path, video: Path, n_frames: int, timeout: float = 3600) -> pd.DataFrame:
    """Run OpenFace 2 ``FeatureExtraction -f VIDEO -out_dir DIR -aus`` and read its CSV.

    Raises:
        InputError: binary missing / not executable, non-zero exit, no CSV, bad columns or frame count.
    """
    exe = shutil.which(str(binary)) or str(binary)
    if not Path(exe).is_file():
        raise InputError(binary, "OpenFace FeatureExtraction not found (preprocess.aus.openface_bin)")
    with tempfile.TemporaryDirectory(prefix="openface_") as tmp:
        cmd = [exe, "-f", str(video), "-out_dir", tmp, "-aus"]
        log.info("running %s", " ".join(cmd))
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except PermissionError:
            raise InputError(binary, "OpenFace FeatureExtraction is not executable") from None
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [""]
            raise InputError(binary, f"FeatureExtraction failed with exit code {proc.returncode}: {tail[0]}")
        csv = Path(tmp) / f"{video.stem}.csv"
        if not csv.exists():
            found = sorted(Path(tmp).glob("*.csv"))
            if not found:
                raise InputError(binary, f"FeatureExtraction wrote no CSV into its -out_dir for {video.name}")
            csv = found[0]
        df = read_openface_csv(csv)
        return validate_openface(df, csv, n_frames)


#: backend name of pyfaceau's AUs (metric JSONs, ``aus.json``); the tables mark it as not OpenFace
PYFACEAU_BACKEND = "pyfaceau (OpenFace 2.2 AU models, Python re-implementation)"
#: the packages of pyfaceau's pipeline, each with its own OpenFace model files (``models_ready``)
PYFACEAU_PACKAGES = ("pyfaceau", "pyclnf", "pymtcnn")
#: folder inside the weights folder that holds OpenFace's model files for pyfaceau
OPENFACE_MODELS = "OpenFaceModels"
#: where the install steps are (the manifest entry's notes)
PYFACEAU_HOW = "`python -m pipeline.weights fetch openface_models_pyfaceau` says how to install them"


def pyfaceau_models_dir(weights_dir: str | Path) -> Path:
    """``{weights_dir}/OpenFaceModels``: the folder given to pyfaceau, pyclnf and pymtcnn as their
    model cache (their ``OPENFACE_MODELS_DIR``; they add ``2.2.0/`` below it)."""
    return Path(weights_dir) / OPENFACE_MODELS


def pyfaceau_unavailable(models_dir: str | Path) -> str | None:
    """Why pyfaceau cannot run, or None when it can: each of :data:`PYFACEAU_PACKAGES` imports
    (``<package>.models``) and reports its OpenFace model files complete in ``models_dir``
    (``models_ready(cache_dir)``, which checks the files pyfaceau's downloader verified against
    the sha256 list it ships)."""
    for pkg in PYFACEAU_PACKAGES:
        try:
            mod = importlib.import_module(f"{pkg}.models")
        except ImportError as exc:
            return f"pyfaceau not installed: {exc}; {PYFACEAU_HOW}"
        if not mod.models_ready(cache_dir=models_dir):
            return f"{pkg}'s OpenFace model files not in {models_dir}; {PYFACEAU_HOW}"
    return None


@contextlib.contextmanager
def _openface_models_env(models_dir: Path):
    """Point pyclnf and pymtcnn (which read ``$OPENFACE_MODELS_DIR``) at ``models_dir``."""
    old = os.environ.get("OPENFACE_MODELS_DIR")
    os.environ["OPENFACE_MODELS_DIR"] = str(models_dir)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("OPENFACE_MODELS_DIR", None)
        else:
            os.environ["OPENFACE_MODELS_DIR"] = old


def run_pyfaceau(video: str | Path, models_dir: str | Path, n_frames: int | None = None) -> pd.DataFrame:
    """The 17 OpenFace 2.2 AU intensities of every frame of ``video`` by pyfaceau
    (``FullPythonAUPipeline.process_video``: one pass with OpenFace's running-median person
    normalisation, then its post-processing).

    Args:
        video: a video file OpenCV reads.
        models_dir: :func:`pyfaceau_models_dir` (checked with :func:`pyfaceau_unavailable` first).
        n_frames: frames the video must have (None: any).
    Returns:
        DataFrame [N, 19]: ``frame`` (from 1), ``success`` (0/1), ``AU01_r ... AU45_r`` (0..5; 0 on
        frames without a face).
    Raises:
        InputError: pyfaceau or its model files missing, a missing AU column, or a frame count
            other than ``n_frames``.
    """
    video, models_dir = Path(video), Path(models_dir)
    reason = pyfaceau_unavailable(models_dir)
    if reason:
        raise InputError(models_dir, reason)
    with _openface_models_env(models_dir):
        from pyfaceau import FullPythonAUPipeline
        from pyfaceau.models import ensure_models, model_paths

        pipe = FullPythonAUPipeline(**model_paths(ensure_models(cache_dir=models_dir)), verbose=False)
        df = pipe.process_video(str(video))
    missing = [f"{a}_r" for a in AU_R if f"{a}_r" not in df.columns]
    if missing or "success" not in df.columns:
        raise InputError(video, f"pyfaceau output lacks {missing or ['success']}")
    if n_frames is not None and len(df) != n_frames:
        raise InputError(video, f"pyfaceau read {len(df)} frames but the dataset has {n_frames}")
    ok = df["success"].astype(bool).to_numpy()
    out = pd.DataFrame({"frame": np.arange(1, len(df) + 1), "success": ok.astype(int)})
    for a in AU_R:
        out[f"{a}_r"] = np.where(ok, pd.to_numeric(df[f"{a}_r"], errors="coerce").fillna(0.0), 0.0).clip(0.0, AU_MAX)
    return out


def pyfaceau_table(aus: pd.DataFrame, fps: float) -> pd.DataFrame:
    """The full ``au.csv`` table (:data:`COLUMNS`) from :func:`run_pyfaceau`'s output: timestamps
    (frame - 1) / fps s, ``confidence`` = ``success``, presence ``AU_c = AU_r >= 1`` (``AU28_c`` 0:
    pyfaceau has no AU28)."""
    n = len(aus)
    ok = aus["success"].to_numpy(int)
    table = pd.DataFrame({"frame": np.arange(1, n + 1), "face_id": np.zeros(n, dtype=int),
                          "timestamp": np.arange(n) / float(fps), "confidence": ok.astype(np.float64),
                          "success": ok})
    for a in AU_R:
        table[f"{a}_r"] = aus[f"{a}_r"].to_numpy(np.float64)
    for a in AU_C:
        table[f"{a}_c"] = ((table[f"{a}_r"] >= PRESENCE_THRESHOLD).astype(np.float64) if a in AU_R
                           else np.zeros(n))
    return table[COLUMNS]


def video_fps(path: Path) -> float:
    """Average frame rate of a video (frames/s); InputError when unreadable."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    fps = cap.get(cv2.CAP_PROP_FPS) if cap.isOpened() else 0.0
    cap.release()
    if not fps or not np.isfinite(fps):
        raise InputError(path, "cannot read the frame rate")
    return float(fps)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--video", required=True, type=Path, help="the cropped dataset video")
    ap.add_argument("--blendshapes", required=True, type=Path, help="blendshapes.npy [N, 52]")
    ap.add_argument("--landmarks", required=True, type=Path, help="landmarks.json (blendshape names, failed frames)")
    ap.add_argument("--out", required=True, type=Path, help="au.csv")
    ap.add_argument("--out-report", required=True, type=Path, help="aus.json")
    ap.add_argument("--cfg", default="{}", help="JSON of config preprocess.aus; the rule adds openface_models "
                                                "(pyfaceau's model folder) when those files are installed")
    args = ap.parse_args(argv)
    setup_logging("pipeline.preprocess.aus")
    cfg = parse_cfg_arg(args.cfg)
    from pipeline.preprocess.tracking import blendshape_names, failed_frames, load_array

    bs = load_array(args.blendshapes, (52,))
    report = read_json(args.landmarks)
    names = blendshape_names(report, args.landmarks, bs.shape[1])
    failed = failed_frames(report)
    pyfaceau_dir = cfg.get("openface_models")
    if cfg.get("openface_bin"):
        df = run_openface(cfg["openface_bin"], args.video, len(bs))
        extractor = {"extractor": "openface", "binary": str(cfg["openface_bin"])}
    elif pyfaceau_dir and not pyfaceau_unavailable(pyfaceau_dir):
        df = pyfaceau_table(run_pyfaceau(args.video, pyfaceau_dir, len(bs)), video_fps(args.video))
        extractor = {"extractor": "pyfaceau", "backend": PYFACEAU_BACKEND, "models": str(pyfaceau_dir),
                     "note": "presence columns AU_c = AU_r >= 1 (pyfaceau writes intensities only)"}
    else:
        try:
            df = aus_table(bs, names, video_fps(args.video), failed)
        except ValueError as exc:
            raise InputError(args.blendshapes, str(exc)) from None
        extractor = {"extractor": "mediapipe_blendshapes",
                     "mapping": {k: list(v) for k, v in BLENDSHAPE_AU_MAP.items()} | {"AU25": ["jawOpen", "-mouthClose"]},
                     "scale": f"AU_r = clip({AU_MAX:g} * score, 0, {AU_MAX:g}); AU_c = AU_r >= {PRESENCE_THRESHOLD:g}",
                     "note": "approximation of OpenFace 2 intensities, not calibrated against OpenFace"}
        if pyfaceau_dir:
            extractor["pyfaceau_unavailable"] = pyfaceau_unavailable(pyfaceau_dir)
    write_openface_csv(df, args.out)
    atomic_write_json(args.out_report, {**extractor, "frames": len(df),
                                        "mean_intensity": {f"{a}_r": float(df[f"{a}_r"].mean()) for a in AU_R}})
    log.info("au.csv: %d frames from %s", len(df), extractor["extractor"])
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
