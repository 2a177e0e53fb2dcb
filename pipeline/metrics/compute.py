"""Compute every configured metric of one render (the render contract folder) and write the
metrics JSON and the per-frame CSV.

JSON (``results/metrics/{method}/{identity}/{test}.json``; read by the report)::

    {"method", "identity", "test", "protocol", "n_frames", "compositing", "resolution",
     "training" (:func:`training_setup`), "metrics": {NAME: {"value": float | null, "backend": str | null,
                        "weights_sha256": str | null, "na_reason": str | null, "n_frames": int}}}

with NAME in :data:`pipeline.metrics.METRIC_NAMES`. A PSNR of identical frames is infinite: its
value is written as the string ``"inf"`` (standard JSON has no infinity; ``float("inf")`` reads it).
"""
from __future__ import annotations

import logging
import math
import subprocess
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from pipeline.common.errors import InputError
from pipeline.common.io import atomic_write, atomic_write_json, read_json
from pipeline.metrics import (BODY_FLOW_TORSO, BODY_FRAME_TORSO, BODY_POSE_TORSO, GROUPS, HEAD_RAYS_HEAD, HEAD_UP_HEAD,
                             METRIC_NAMES,
                              NEEDS_GT, RETRIEVAL_TORSO, MetricValue)
from pipeline.weights import WeightsMissing

log = logging.getLogger(__name__)


@dataclass
class MetricsConfig:
    """What to compute and with which resources."""

    self_driven: list[str] = field(default_factory=lambda: list(GROUPS))
    """metric groups for the self-driven protocol (config ``metrics.self_driven``)"""
    cross_driven: list[str] = field(default_factory=lambda: ["lse", "csim", "cpbd"])
    """metric groups for cross-driven tests (config ``metrics.cross_driven``)"""
    weights_dir: Path = Path("weights_cache")
    """the pretrained-weights folder"""
    openface_bin: str | None = None
    """OpenFace 2 ``FeatureExtraction`` for AUE; None: blendshape estimate"""
    verify_weights: bool | None = None
    """check weights hashes before use (None: on, unless $TALKING_NERF_VERIFY_WEIGHTS=0)"""
    lse_min_frames: int = 100
    """LSE accepts clips of more frames than this (the reference pipeline's --min_track)"""
    lse_short_clips: bool = False
    """score LSE on clips shorter than ``lse_min_frames`` too (down to SyncNet's 6-frame window),
    with a note saying so (config ``metrics.lse_short_clips``)"""
    threads: int = 1
    """worker threads for the per-frame image metrics (PSNR, SSIM, LMD, CPBD)"""
    device: str = "cpu"
    """torch device of the network metrics"""


def read_rgb(path: Path) -> np.ndarray:
    """[H, W, 3] uint8 RGB of an image file; InputError when unreadable."""
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise InputError(path, "image missing or not readable")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def _f(a: np.ndarray) -> np.ndarray:
    return a.astype(np.float32) / 255.0


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if values else math.nan


def training_seconds(model_dir: Path | None) -> MetricValue:
    """Training time (seconds, all training stages, validation excluded) from the model folder's
    ``train_manifest.json`` (``seconds.total``, written by pipeline.train)."""
    if model_dir is None:
        return MetricValue.na("no model folder (external or baseline render)")
    path = Path(model_dir) / "train_manifest.json"
    if not path.is_file():
        return MetricValue.na(f"{path} not found")
    m = read_json(path)
    secs = m.get("seconds")
    if isinstance(secs, dict) and isinstance(secs.get("total"), (int, float)):
        stages = "+".join(k for k in secs if k not in ("total", "validation"))
        return MetricValue(float(secs["total"]), f"train_manifest.json seconds.total ({stages} stages, "
                                                 f"{m.get('device_name') or m.get('device') or 'device ?'})")
    for key in ("training_seconds", "seconds"):
        if isinstance(m.get(key), (int, float)):
            return MetricValue(float(m[key]), f"train_manifest.json {key}")
    return MetricValue.na(f"{path} has no seconds.total")


def profile_step_departures(manifest: dict) -> list[str]:
    """The training stages whose step count departs from the profile's, as the tables' ``Training``
    column names them: ``head steps 2100 (quick: 4200)`` for a model of the ``quick`` profile whose
    head stage trained 2100 steps (``train.overrides: {head_steps: 2100}``, as the default job).

    Args:
        manifest: a model folder's ``train_manifest.json`` (``method``, ``profile``, ``steps``
            {stage: steps run}, written by :func:`pipeline.train.trainer.train_stage`).

    Returns:
        One text per departing stage, in stage order (head, lips, torso); empty when the manifest
        lacks the method, profile or steps (external and older models) or names a method or
        profile that is not registered here.
    """
    from pipeline.train.profiles import resolve_config

    steps, method, profile = manifest.get("steps"), manifest.get("method"), manifest.get("profile")
    if not isinstance(steps, dict) or not method or not profile:
        return []
    try:
        cfg = resolve_config(str(method), {"profile": str(profile)})
    except InputError:
        return []
    return [f"{stage} steps {int(steps[stage])} ({profile}: {getattr(cfg, stage + '_steps')})"
            for stage in ("head", "lips", "torso")
            if isinstance(steps.get(stage), (int, float)) and int(steps[stage]) != getattr(cfg, stage + "_steps")]


def training_setup(model_dir: Path | None) -> str | None:
    """How the rendered model was trained, for the tables' ``Training`` column: the profile
    (``quick`` / ``paper`` / ``smoke``), the stages whose step count departs from the profile's
    (:func:`profile_step_departures`, e.g. the default job's ``head steps 2100 (quick: 4200)``)
    and, when the torso also saw the body pose (config ``torso_body_pose``, not part of RAD-NeRF /
    ER-NeRF), :data:`BODY_POSE_TORSO`, and when it also saw the body flow (config
    ``torso_body_flow``, likewise), :data:`BODY_FLOW_TORSO`, and when the head also saw the
    camera's up axis (config ``head_up``, likewise), :data:`HEAD_UP_HEAD`, and when the head stage
    drew a step's rays from several frames or put a share on the mouth (config ``frames_per_step``
    > 1 or ``mouth_rays`` > 0; the papers take one frame a step), :data:`HEAD_RAYS_HEAD`, and when
    the torso drew the body in its frame (config ``torso_body_frame``, on for this identity: the
    manifest's ``body_frame``), :data:`BODY_FRAME_TORSO`, and when the torso also read the mean of
    the nearest training bodies (config ``torso_body_pose`` and ``torso_retrieval`` > 0),
    :data:`RETRIEVAL_TORSO`; from the model
    folder's ``train_manifest.json``. None for renders without a model folder or manifest
    (the metric JSON then says ``none (baseline)`` for this project's baselines, whose render
    manifest has a ``baseline`` record, and nothing for external renders: unknown, '?' in the
    tables)."""
    if model_dir is None or not (Path(model_dir) / "train_manifest.json").is_file():
        return None
    m = read_json(Path(model_dir) / "train_manifest.json")
    cfg = m.get("config") if isinstance(m.get("config"), dict) else {}
    parts = [str(m.get("profile") or cfg.get("profile") or "?")]
    parts += profile_step_departures(m)
    if cfg.get("head_up"):
        parts.append(HEAD_UP_HEAD)
    if int(cfg.get("frames_per_step") or 1) > 1 or float(cfg.get("mouth_rays") or 0) > 0:
        parts.append(HEAD_RAYS_HEAD)
    if cfg.get("torso_body_pose"):
        parts.append(BODY_POSE_TORSO)
    if cfg.get("torso_body_pose") and cfg.get("torso_body_flow"):
        parts.append(BODY_FLOW_TORSO)
    if (m.get("body_frame") or {}).get("on"):
        parts.append(BODY_FRAME_TORSO)
    if cfg.get("torso_body_pose") and int(cfg.get("torso_retrieval") or 0) > 0:
        parts.append(RETRIEVAL_TORSO)
    return ", ".join(parts)


class AUCollector:
    """17 OpenFace AU intensities of generated and ground-truth frames, collected frame by frame,
    by the first available extractor (as ``pipeline.preprocess.aus``):

    1. OpenFace 2 ``FeatureExtraction`` on the frames (written to temporary folders) when a binary
       is configured;
    2. pyfaceau (OpenFace 2.2's AU models in Python) when it and its model files are installed in
       ``{weights_dir}/OpenFaceModels`` (``pipeline.preprocess.aus.pyfaceau_unavailable``): each
       frame sequence is encoded losslessly (FFV1, 25 fps) and run as one video, so OpenFace's
       running-median person normalisation sees the sequence as the binary would;
    3. MediaPipe blendshapes mapped by ``pipeline.preprocess.aus.estimate_aus_from_blendshapes``
       (labelled as an estimate, with the reason pyfaceau was not used).
    """

    def __init__(self, openface_bin: str | None, weights_dir: str | Path | None = None):
        from pipeline.preprocess.aus import PYFACEAU_BACKEND, pyfaceau_models_dir, pyfaceau_unavailable

        self.openface_bin = openface_bin
        self.error = None
        self.n = 0
        self.models_dir = pyfaceau_models_dir(weights_dir) if weights_dir is not None else None
        if openface_bin:
            if not Path(openface_bin).is_file():
                raise InputError(openface_bin, "OpenFace FeatureExtraction binary not found")
            self.mode, self.backend = "openface", "OpenFace 2 FeatureExtraction"
        else:
            why = pyfaceau_unavailable(self.models_dir) if self.models_dir else "no weights folder given"
            self.mode = "estimate" if why else "pyfaceau"
            self.backend = (PYFACEAU_BACKEND if not why else
                            f"AU estimate from MediaPipe blendshapes (not OpenFace); pyfaceau unavailable ({why})")
        if self.mode != "estimate":
            self._tmp = tempfile.TemporaryDirectory(prefix=self.mode)
            for sub in ("gen", "gt"):
                (Path(self._tmp.name) / sub).mkdir()
            return
        try:
            from pipeline.preprocess.aus import estimate_aus_from_blendshapes
            from pipeline.preprocess.backends.mediapipe_mesh import MeshDetector
        except ImportError as exc:
            self.error = f"AU extractor unavailable: {exc}"
            return
        self._estimate = estimate_aus_from_blendshapes
        self._det = MeshDetector(video_mode=False)
        self._bs = {"gen": [], "gt": []}
        self._ok = {"gen": [], "gt": []}

    def add(self, gen: np.ndarray, gt: np.ndarray) -> None:
        """One frame pair, [H, W, 3] uint8 RGB each."""
        if self.error:
            return
        for key, img in (("gen", gen), ("gt", gt)):
            if self.mode != "estimate":
                cv2.imwrite(str(Path(self._tmp.name) / key / f"{self.n:06d}.png"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
                continue
            r = self._det.detect(img, self.n)
            self._ok[key].append(r is not None)
            self._bs[key].append(r.blendshapes if r is not None else np.zeros(52, np.float32))
        self.n += 1

    def _aus(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        from pipeline.metrics.aue import au_matrix, read_openface_aus

        d = Path(self._tmp.name) if self.mode != "estimate" else None
        if self.mode == "openface":
            subprocess.run([self.openface_bin, "-fdir", str(d / key), "-out_dir", str(d / f"{key}_out"), "-aus", "-q"],
                           check=True, capture_output=True)
            df_path = next((d / f"{key}_out").glob("*.csv"))
            import pandas as pd

            ok = pd.read_csv(df_path, skipinitialspace=True)
            ok.columns = [c.strip() for c in ok.columns]
            success = ok["success"].to_numpy() > 0 if "success" in ok else np.ones(len(ok), bool)
            return read_openface_aus(df_path), success
        if self.mode == "pyfaceau":
            from pipeline.preprocess.aus import run_pyfaceau

            video = d / f"{key}.mkv"  # lossless: the AU models see the PNG frames' exact pixels
            subprocess.run(["ffmpeg", "-v", "error", "-y", "-framerate", "25", "-i", str(d / key / "%06d.png"),
                            "-c:v", "ffv1", str(video)], check=True, capture_output=True)
            df = run_pyfaceau(video, self.models_dir, self.n)
            return au_matrix(df), df["success"].to_numpy() > 0
        return (au_matrix(self._estimate(np.stack(self._bs[key]), self._det.blendshape_names)),
                np.array(self._ok[key]))

    def result(self, per_frame: dict) -> dict[str, MetricValue]:
        """``aue``, ``aue_lower``, ``aue_upper`` and ``au_acc`` (lip-AU presence agreement,
        :func:`pipeline.metrics.aue.au_accuracy`, presence = AU_r >= 1) over the frames where both
        faces were found; adds the per-frame summed squared AU error to ``per_frame``."""
        from pipeline.metrics.aue import au_accuracy, au_presence, aue

        names = ("aue", "aue_lower", "aue_upper", "au_acc")
        try:
            if self.error:
                return {k: MetricValue.na(self.error) for k in names}
            if self.n == 0:
                return {k: MetricValue.na("no frames", self.backend) for k in names}
            ag, okg = self._aus("gen")
            at, okt = self._aus("gt")
        finally:
            self.close()
        ok = okg & okt
        if not ok.any():
            return {k: MetricValue.na("no face found by the AU extractor", self.backend) for k in names}
        vals = aue(ag[ok], at[ok])
        sq = ((ag - at) ** 2).sum(1)
        per_frame["au_sq_err"] = [float(x) if o else math.nan for x, o in zip(sq, ok)]
        vals["au_acc"] = au_accuracy(au_presence(ag[ok]), au_presence(at[ok]))
        return {k: MetricValue(vals[k], self.backend + ("; AU10/14/20/25/26 presence (AU_r >= 1) agreement"
                                                        if k == "au_acc" else ""), None, None, int(ok.sum()))
                for k in names}

    def close(self) -> None:
        """Frees what the collector holds: the temporary folder of the OpenFace and pyfaceau modes, or the
        MediaPipe detector of the estimate mode."""
        if self.mode != "estimate":
            self._tmp.cleanup()
        elif not self.error:
            self._det.close()


class LipCollector:
    """MediaPipe Face Mesh of generated and ground-truth frames, frame by frame, for ``lmd_lips``
    (:mod:`pipeline.metrics.lips`)."""

    def __init__(self):
        from pipeline.metrics.lips import BACKEND
        from pipeline.preprocess.backends.mediapipe_mesh import MeshDetector

        self.backend = BACKEND
        self._det = MeshDetector(video_mode=False)
        self._dist: list[float] = []
        self._status: list[str] = []

    def add(self, gen: np.ndarray, gt: np.ndarray) -> None:
        """One frame pair, [H, W, 3] uint8 RGB each (same size)."""
        from pipeline.metrics.landmarks import GT_NO_FACE, OK, REFERENCE_HEIGHT, RENDER_NO_FACE
        from pipeline.metrics.lips import lip_lmd

        rg = self._det.detect(gt, 0)
        rq = self._det.detect(gen, 0) if rg is not None else None
        status = GT_NO_FACE if rg is None else RENDER_NO_FACE if rq is None else OK
        self._status.append(status)
        self._dist.append(float(lip_lmd(rq.mesh, rg.mesh)) * REFERENCE_HEIGHT / gen.shape[0]
                          if status == OK else math.nan)

    def result(self, per_frame: dict) -> MetricValue:
        """Mean over frames with both faces (pixels at 512 px height); per-frame values into ``per_frame``."""
        from pipeline.metrics.landmarks import lmd_note

        self._det.close()
        per_frame["lmd_lips"] = list(self._dist)
        ok = [x for x in self._dist if not math.isnan(x)]
        note = lmd_note(self._status)
        backend = self.backend + "; pixels at 512 px height"
        if not ok:
            return MetricValue(None, backend, None, f"no face pair found in any of {len(self._dist)} frames", 0, note)
        return MetricValue(_mean(ok), backend, None, None, len(ok), note)


def evaluate_render(render_dir: Path, data_dir: Path | None, model_dir: Path | None,
                    cfg: MetricsConfig) -> tuple[dict, dict[str, list]]:
    """All metrics of one render folder.

    Args:
        render_dir: ``results/renders/{method}/{identity}/{test}`` (render contract).
        data_dir: the identity's dataset ``results/data/{identity}`` (ground truth, reference image).
        model_dir: ``results/models/{method}/{identity}`` (training time), or None.
    Returns:
        (the metrics JSON dict, per-frame columns ``{name: [values]}``).
    Raises:
        InputError: a missing or malformed manifest / frame.
    """
    render_dir = Path(render_dir)
    man = read_json(render_dir / "manifest.json")
    for key in ("method", "identity", "test", "protocol", "n_frames"):
        if key not in man:
            raise InputError(render_dir / "manifest.json", f"render manifest lacks '{key}'")
    n = int(man["n_frames"])
    protocol = man["protocol"]
    groups = list(cfg.self_driven if protocol == "self_driven" else cfg.cross_driven)
    results: dict[str, MetricValue] = {}
    for g, names in GROUPS.items():
        if g not in groups:
            why = (f"needs ground truth: not computed for the {protocol} protocol"
                   if g in NEEDS_GT and protocol != "self_driven"
                   else f"not in config metrics.{protocol}")
            for name in names:
                results[name] = MetricValue.na(why)
    frames_dir = render_dir / "frames"
    gen = [frames_dir / f"{i}.png" for i in range(n)]
    per_frame: dict[str, list] = {"frame": list(range(n))}

    gt_paths = None
    if protocol == "self_driven" and any(g in groups for g in (*NEEDS_GT, "fid")):
        ref = man.get("gt_reference") or {}
        idx = ref.get("indices")
        if not idx or len(idx) != n:
            raise InputError(render_dir / "manifest.json", "self-driven manifest needs gt_reference.indices "
                             "(one dataset frame index per rendered frame)")
        gt_dir = Path(data_dir) / "gt_imgs" if data_dir else Path(ref.get("dir", ""))
        gt_paths = [gt_dir / f"{int(i)}.jpg" for i in idx]
        per_frame["gt_index"] = [int(i) for i in idx]

    def load_pair(i):
        p = read_rgb(gen[i])
        if gt_paths is None:
            return p, None
        g = read_rgb(gt_paths[i])
        if g.shape != p.shape:  # reduced-resolution renders: compare at the render's resolution
            g = cv2.resize(g, (p.shape[1], p.shape[0]), interpolation=cv2.INTER_AREA)
        return p, g

    want = {name for g in groups for name in GROUPS[g]}
    # ---- networks (a missing weight file makes its metrics n/a, never a stand-in)
    lp = inc = None
    if "lpips" in want:
        try:
            from pipeline.metrics.perceptual import LPIPS

            lp = LPIPS(cfg.weights_dir, cfg.verify_weights, cfg.device)
        except WeightsMissing as exc:
            results["lpips"] = MetricValue.na(exc.reason, LPIPS.backend, n)
    if "fid" in want:
        try:
            from pipeline.metrics.fid import InceptionFeatures

            inc = InceptionFeatures(cfg.weights_dir, cfg.verify_weights, cfg.device)
        except WeightsMissing as exc:
            results["fid"] = MetricValue.na(exc.reason, InceptionFeatures.backend, n)
    lmk = lmk_note = None
    if want & {"lmd", "csim"}:
        from pipeline.metrics.landmarks import make_landmarker

        lmk, lmk_note = make_landmarker(cfg.weights_dir)
    emb = ref_emb = None
    csim_ref = ""
    if "csim" in want:
        from pipeline.metrics.identity import ArcFaceEmbedder, DlibEmbedder

        try:
            emb = ArcFaceEmbedder(cfg.weights_dir, lmk, cfg.verify_weights, cfg.device)
        except WeightsMissing as exc:
            log.info("CSIM: dlib descriptor (%s)", exc.reason)
            emb = DlibEmbedder(lmk)
        from pipeline.metrics.identity import identity_reference, reference_images, reference_note

        ref_paths = reference_images(Path(data_dir)) if data_dir else []
        ref_emb, n_ref = identity_reference(emb, [read_rgb(q) for q in ref_paths])
        if ref_emb is None:
            why = (f"no face found in the {len(ref_paths)} identity reference frames" if ref_paths else
                   "no identity reference frames (transforms_train.json beyond its first frame) in the dataset")
            results["csim"] = MetricValue.na(why, emb.backend)
            emb = None
        csim_ref = reference_note(n_ref)

    from pipeline.metrics.image import psnr, ssim
    from pipeline.metrics.landmarks import REFERENCE_HEIGHT, frame_lmd, lmd_note, make_landmarker
    from pipeline.metrics.sharpness import cpbd

    cols = {k: [] for k in ("psnr", "ssim", "lpips", "lmd", "lmd_face", "lmd_status", "csim", "cpbd")}
    feats_gen, feats_gt = [], []
    local = threading.local()

    def image_metrics(i):
        """Load frame pair i and compute the per-frame image metrics (thread-safe: each worker
        thread has its own dlib landmarker)."""
        p, g = load_pair(i)
        pf = _f(p)
        gf = _f(g) if g is not None else None
        out = {}
        if "psnr" in want:
            out["psnr"] = psnr(pf, gf)
        if "ssim" in want:
            out["ssim"] = ssim(pf, gf)
        if "lmd" in want:
            if not hasattr(local, "lmk"):
                local.lmk = lmk if threading.current_thread() is threading.main_thread() \
                    else make_landmarker(cfg.weights_dir)[0]
            out["lmd"], out["lmd_face"], out["lmd_status"] = frame_lmd(local.lmk, p, g)
        if "cpbd" in want:
            out["cpbd"] = cpbd(p)
        return p, g, pf, gf, out

    au = AUCollector(cfg.openface_bin, cfg.weights_dir) if want & {"aue", "au_acc"} else None
    lips = LipCollector() if "lmd_lips" in want else None
    pool = ThreadPoolExecutor(cfg.threads) if cfg.threads > 1 else None
    chunk = 16
    try:
        with tqdm(total=n, desc=f"metrics {render_dir}", disable=n < 50) as bar:
            for start in range(0, n, chunk):
                idx = range(start, min(n, start + chunk))
                done = list(pool.map(image_metrics, idx)) if pool else [image_metrics(i) for i in idx]
                for p, g, pf, gf, out in done:
                    for k, v in out.items():
                        cols[k].append(v)
                    if lp is not None:
                        cols["lpips"].append(lp(pf, gf))
                    if emb is not None:
                        e = emb(p)
                        cols["csim"].append(math.nan if e is None else float(
                            np.dot(e, ref_emb) / (np.linalg.norm(e) * np.linalg.norm(ref_emb))))
                    if au is not None:
                        au.add(p, g)
                    if lips is not None:
                        lips.add(p, g)
                if inc is not None:
                    feats_gen.append(inc(np.stack([d[2] for d in done])))
                    if gt_paths is not None:
                        feats_gt.append(inc(np.stack([d[3] for d in done])))
                bar.update(len(done))
    finally:
        if pool:
            pool.shutdown()

    for name, vals in cols.items():
        if vals:
            per_frame[name] = vals
    if "psnr" in want:
        v = cols["psnr"]
        results["psnr"] = MetricValue(_mean(v), "numpy -10 log10(MSE) on [0,1] RGB (= skimage peak_signal_noise_ratio)"
                                      + ("; identical frames give inf" if any(math.isinf(x) for x in v) else ""),
                                      None, None, n)
    if "ssim" in want:
        results["ssim"] = MetricValue(_mean(cols["ssim"]), "skimage structural_similarity definition "
                                      "(channel_axis=-1, data_range=1; OpenCV box filters)", None, None, n)
    if lp is not None:
        results["lpips"] = MetricValue(_mean(cols["lpips"]), lp.backend, lp.weights_sha256, None, n)
    if inc is not None:
        from pipeline.metrics.fid import frechet_distance

        against = "ground-truth frames"
        if gt_paths is None:  # cross-driven: against the identity's training frames (LiveNeRF, NeRFFaceSpeech)
            feats_gt, against = _training_features(inc, data_dir, gen[0] if n else None)
        if n < 2 or len(feats_gt) == 0:
            results["fid"] = MetricValue.na("FID needs at least 2 frames" if n < 2 else
                                            "no training frames (transforms_train.json, gt_imgs) in the dataset",
                                            inc.backend, n)
        else:
            m = min(n, sum(len(f) for f in feats_gt))
            results["fid"] = MetricValue(frechet_distance(np.concatenate(feats_gen), np.concatenate(feats_gt)),
                                         inc.backend + f"; against {against}"
                                         + ("; rank-deficient covariance (fewer frames than 2048)" if m < 2048 else ""),
                                         inc.weights_sha256, None, n)
    if "lmd" in want:
        ok = [x for x in cols["lmd"] if not math.isnan(x)]
        height = int((man.get("resolution") or [0, 0])[1]) or None
        backend = (lmk.name + (f"; {lmk_note}" if lmk_note else "")
                   + f"; pixels at {REFERENCE_HEIGHT} px height" + (f" (scaled from {height} px)" if height and
                                                                     height != REFERENCE_HEIGHT else ""))
        from pipeline.weights import file_sha256

        lmk_sha = file_sha256(lmk.weights_file) if lmk.weights_file else None
        note = lmd_note(cols["lmd_status"])
        if not ok:
            for name in ("lmd", "lmd_face"):
                results[name] = MetricValue(None, backend, None, f"no face pair found in any of {n} frames ({note})",
                                            0, note)
        else:
            results["lmd"] = MetricValue(_mean(ok), backend, lmk_sha, None, len(ok), note)
            results["lmd_face"] = MetricValue(_mean([x for x in cols["lmd_face"] if not math.isnan(x)]),
                                              backend, lmk_sha, None, len(ok), note)
        if note:
            log.warning("LMD: %s", note)
    if emb is not None:
        ok = [x for x in cols["csim"] if not math.isnan(x)]
        results["csim"] = (MetricValue(_mean(ok), emb.backend + csim_ref, emb.weights_sha256, None, len(ok)) if ok
                           else MetricValue.na("no face found in any generated frame", emb.backend))
    if "cpbd" in want:
        from pipeline.metrics.sharpness import BACKEND

        results["cpbd"] = MetricValue(_mean(cols["cpbd"]), BACKEND, None, None, n)
    if au is not None:
        results.update({k: v for k, v in au.result(per_frame).items() if k in want})
    if lips is not None:
        results["lmd_lips"] = lips.result(per_frame)
    if "lse_c" in want:
        results.update(_lse(cfg, render_dir / "video.mp4"))

    fr = man.get("fps_render")
    res = "x".join(str(v) for v in man.get("resolution") or []) or "?"
    results["fps"] = (MetricValue(float(fr), f"render manifest fps_render at {res} on {man.get('device', '?')}",
                                  None, None, n)
                      if isinstance(fr, (int, float)) else
                      MetricValue.na("render manifest has no fps_render (external render or not timed)", n_frames=n))
    results["training_time_s"] = training_seconds(model_dir)
    out = {k: man.get(k) for k in ("method", "identity", "test", "protocol")}
    out["n_frames"] = n
    out["compositing"] = man.get("compositing")
    out["resolution"] = man.get("resolution")
    out["training"] = training_setup(model_dir)
    if out["training"] is None and isinstance(man.get("baseline"), dict):
        out["training"] = "none (baseline)"
    out["metrics"] = {name: results[name].to_json() for name in METRIC_NAMES}
    return out, per_frame


#: most training frames a cross-driven FID compares with (evenly spaced over the training split)
FID_TRAINING_FRAMES = 1000


def _training_features(inc, data_dir: Path | None, first_render: Path | None) -> tuple[list[np.ndarray], str]:
    """Inception features of up to :data:`FID_TRAINING_FRAMES` training frames (``gt_imgs``,
    what the models are trained to reproduce), resized to the render's size as the self-driven
    ground truth is; returns (feature batches, a description for the backend)."""
    from pipeline.metrics import training_frame_paths

    paths = training_frame_paths(data_dir, FID_TRAINING_FRAMES) if data_dir else []
    if not paths or first_render is None:
        return [], "training frames"
    h, w = read_rgb(first_render).shape[:2]
    feats = []
    for start in range(0, len(paths), 16):
        batch = []
        for q in paths[start:start + 16]:
            g = read_rgb(q)
            if g.shape[:2] != (h, w):
                g = cv2.resize(g, (w, h), interpolation=cv2.INTER_AREA)
            batch.append(_f(g))
        feats.append(inc(np.stack(batch)))
    return feats, f"{len(paths)} training frames of the identity"


def _lse(cfg: MetricsConfig, video: Path) -> dict[str, MetricValue]:
    """LSE-C / LSE-D of the render video; clips of ``cfg.lse_min_frames`` frames or fewer are n/a
    unless ``cfg.lse_short_clips``, then scored from SyncNet's minimum up with a note."""
    from pipeline.metrics.sync import LSE, WINDOW

    try:
        lse = LSE(cfg.weights_dir, cfg.verify_weights, cfg.device,
                  WINDOW if cfg.lse_short_clips else cfg.lse_min_frames)
    except WeightsMissing as exc:
        return {k: MetricValue.na(exc.reason, LSE.backend) for k in ("lse_c", "lse_d")}
    try:
        r = lse(video)
    except ValueError as exc:
        return {k: MetricValue.na(str(exc), LSE.backend) for k in ("lse_c", "lse_d")}
    note = None
    if r["n_frames"] <= cfg.lse_min_frames:
        note = (f"short clip: {r['n_frames']} frames, not over the reference pipeline's {cfg.lse_min_frames}-frame "
                "minimum (syncnet_python --min_track); scored because metrics.lse_short_clips is on, "
                "not comparable with published LSE")
    return {k: MetricValue(r[k], lse.backend + ("; short clip" if note else ""), lse.weights_sha256, None,
                           r["n_frames"], note) for k in ("lse_c", "lse_d")}


def write_outputs(result: dict, per_frame: dict[str, list], out_json: Path, out_csv: Path) -> None:
    """Write the metrics JSON and the per-frame CSV atomically."""
    import pandas as pd

    atomic_write_json(out_json, result)
    with atomic_write(out_csv, "w") as fh:
        pd.DataFrame(per_frame).to_csv(fh, index=False, float_format="%.6g")
