"""Multi-identity quality benchmark: train each method on every real identity with one fixed CPU
budget (a training profile) and measure the validation frames.

    python -m pipeline.train.benchmark --quality [--identities FILE.tsv] [--methods rad_nerf er_nerf]
        [--profile quick] [--overrides JSON] [--label NAME] [--workdir results/quality]
        [--doc docs/quality.md]

Per identity the dataset is built by the project's own Snakemake rules (``results/data/{id}/`` of
``--workdir``), then each method trains its three stages (head, lips, torso) in-process with the
chosen profile, exactly as the ``train_*`` rules do, and its validation frames (the torso stage's
``val/{img_id}.png`` panels, render | ground truth at the training resolution) are scored:

* ``psnr`` / ``ssim`` full frame (:func:`pipeline.metrics.image.psnr`, :func:`~pipeline.metrics.image.ssim`);
* ``psnr_head`` / ``ssim_head`` on the head box: the bounding box of the frame's parsed head
  (``parsing/{i}.png`` label 1) grown by 10% on each side;
* ``lmd`` (mouth) / ``lmd_face``: 68 landmarks found on the render and on the ground truth
  separately (dlib-68 on frames upsampled to 512 px, reported in 512-px units; frames where either
  has no face are counted in ``lmd_missing``, not scored);
* the mean-colour baseline PSNR (the train frames' mean colour everywhere) and seconds per stage;
* where the error lies (:func:`diagnose`): the share of the squared error per region of the
  ground truth's parsing (head, neck, torso, the background beside the person's outline, the rest
  of the background), and the body pixels' (neck + torso) error of the render against two
  references made of training frames only (their mean, and the frame of the nearest head pose)
  and an oracle that chooses training bodies with the ground truth, with the full-frame PSNR the
  render would have with the oracle's body (:func:`body_references`); the head pixels' error of
  the render against the training heads nearest the ground truth (:func:`head_references`), and the
  pooled full-frame PSNR with the sample's head error and the oracle body (:func:`reach`); how
  sharp the render is in units the clip's content does not change: the Gaussian blur of the
  ground truth that has the render's error (:func:`blur_equivalent`).

``--rescore`` scores the models of a label again without training (after a change of the scorer).

On a machine without the scoring libraries (the GPU machine of ``scripts/gpu_quality.sh``, which
has no package registry): ``--pack DIR`` writes the datasets as the trainer loads them at the
profile's resolution (:func:`pack_dataset`, a few MB per identity), ``--train-only`` there trains
and keeps the validation panels with records marked ``unscored``, and ``--rescore`` here scores
them against the full datasets.

Each run writes ``{workdir}/runs/{label}/{method}/{identity}.json``; the tables of every label
present (one row per identity x method, the ``before`` / ablation labels beside the current one)
and a montage of validation frames per identity and method (``docs/assets/quality/{label}/``) go
to ``--doc``. Identities default to the project's sample plus every video in
``../shared/data/identities/`` (:func:`default_identities`).
"""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
import textwrap
import time
from pathlib import Path

import numpy as np

from pipeline.common.config import PROJECT_ROOT
from pipeline.common.errors import InputError
from pipeline.common.io import atomic_path, atomic_write, atomic_write_json, read_json

log = logging.getLogger("pipeline.train.quality")

SAMPLE = ("German", PROJECT_ROOT / "resources" / "sample" / "German_12s.mp4")
SHARED_IDENTITIES = PROJECT_ROOT.parent / "shared" / "data" / "identities"
#: the shared clip the sample was trimmed from (same person and take): not benchmarked twice
SAMPLE_SOURCE = "German_20s.mp4"
#: landmark resolution of the LMD columns (pixels; the papers measure at 450-512 px)
LMD_RESOLUTION = 512


def identity_name(video: Path) -> str:
    """Identity id from a shared clip name: ``longhair_pt_14s.mp4`` -> ``longhair_pt`` (the
    duration suffix dropped)."""
    stem = video.stem
    parts = stem.split("_")
    if len(parts) > 1 and parts[-1].endswith("s") and parts[-1][:-1].isdigit():
        parts = parts[:-1]
    return "_".join(parts)


def default_identities() -> list[tuple[str, Path]]:
    """The sample identity plus every ``*.mp4`` of ``../shared/data/identities/`` (except the
    sample's own source clip), as (id, video) pairs."""
    rows = [SAMPLE]
    if SHARED_IDENTITIES.is_dir():
        for v in sorted(SHARED_IDENTITIES.glob("*.mp4")):
            if v.name != SAMPLE_SOURCE:
                rows.append((identity_name(v), v))
    return rows


def read_identities(path: Path) -> list[tuple[str, Path]]:
    """(id, video) rows of an identities TSV (the project's ``identities.tsv`` format)."""
    from pipeline.common.config import load_identities

    return [(r["id"], Path(r["video"])) for r in load_identities(path)]


def workdir_config(workdir: Path, identities: list[tuple[str, Path]]) -> dict:
    """The project's ``config.yaml`` for a benchmark work folder: its identities table
    (``workdir/identities.tsv``, written here) and every path of the project's config that is
    relative to the project (the weights folder, the SFM folder when set, the cross-driven audio,
    the reported numbers) made absolute, as Snakemake runs in ``workdir``. Returns the config."""
    import yaml

    from pipeline.common.config import resolve_path

    workdir.mkdir(parents=True, exist_ok=True)
    cfg = yaml.safe_load((PROJECT_ROOT / "config.yaml").read_text())
    tsv = workdir / "identities.tsv"
    tsv.write_text("id\tvideo\n" + "".join(f"{i}\t{resolve_path(v)}\n" for i, v in identities))
    cfg["identities"] = str(tsv)
    cfg["weights_dir"] = str(resolve_path(cfg["weights_dir"]))
    mm = cfg.get("preprocess", {}).get("threedmm", {})
    if mm.get("model_dir"):
        mm["model_dir"] = str(resolve_path(mm["model_dir"]))
    cfg["render"]["cross_driven"] = {k: str(resolve_path(v)) for k, v in cfg["render"]["cross_driven"].items()}
    if cfg.get("report", {}).get("reported_numbers"):
        cfg["report"]["reported_numbers"] = str(resolve_path(cfg["report"]["reported_numbers"]))
    return cfg


def build_datasets(workdir: Path, identities: list[tuple[str, Path]], cores: int = 2) -> dict[str, str]:
    """Build the datasets with the project's Snakemake rules in ``workdir`` (``--keep-going``: an
    identity that fails is reported and left out; config :func:`workdir_config`). Returns {id:
    error} for the failed ones."""
    import subprocess
    import sys

    import yaml

    cfg = workdir_config(workdir, identities)
    (workdir / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    targets = [f"results/data/{i}/manifest.json" for i, _ in identities]
    cmd = [sys.executable, "-m", "snakemake", "-s", str(PROJECT_ROOT / "Snakefile"), "-d", str(workdir),
           "--configfile", str(workdir / "config.yaml"), "--cores", str(cores), "--keep-going", *targets]
    proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True)
    failed = {}
    for i, _ in identities:
        if not (workdir / "results" / "data" / i / "manifest.json").is_file():
            logs = sorted((workdir / "results" / "logs").rglob(f"{i}.log"))
            tail = ""
            for lp in logs:
                text = lp.read_text().strip().splitlines()
                if text and ("Error" in text[-1] or "error" in text[-1]):
                    tail = text[-1]
            failed[i] = tail or f"dataset not built (snakemake exit {proc.returncode})"
    return failed


#: dataset folders of frame images that :func:`pack_dataset` writes at the training resolution
#: (folder, PIL mode, resample filter: the trainer's, :class:`pipeline.train.data.TalkingDataset`)
PACKED_IMAGES = (("gt_imgs", "RGB", "bilinear"), ("torso_imgs", "RGBA", "bilinear"), ("parsing", "RGB", "nearest"))


def pack_dataset(data_root: Path, dst: Path, resolution: int) -> dict:
    """A compact copy of a built dataset that the trainer loads to the same tensors at
    ``resolution``: every top-level file but the video, the ``.lms`` landmark files of
    ``ori_imgs/`` (not its frames, which training does not read), and the frames of
    :data:`PACKED_IMAGES` resized by the trainer's own :func:`pipeline.train.data.load_image` (bilinear,
    antialiased, for the images; nearest for the parsing colours, as for its labels) and written
    losslessly (PNG data under the dataset's own file names; PIL and OpenCV read by content), so
    that no pixel changes. ``bc.jpg`` keeps its size: the trainer's intrinsics scale by it. For a
    machine the 512-px dataset does not fit onto (``scripts/gpu_quality.sh``; 72 MB against 14 MB
    for the sample at 128 px). Written into a temporary folder and renamed into place.

    Returns:
        ``{"files": n, "bytes": total}`` of ``dst``.
    Raises:
        InputError: ``data_root`` has no ``bc.jpg`` or ``manifest.json`` (not a built dataset).
    """
    from PIL import Image

    from pipeline.train.data import load_image

    for name in ("bc.jpg", "manifest.json"):
        if not (data_root / name).is_file():
            raise InputError(data_root / name, "file not found (not a built dataset; build it first)")
    with Image.open(data_root / "bc.jpg") as im:
        w0, h0 = im.size
    s = resolution / max(h0, w0)
    size = (int(round(h0 * s)), int(round(w0 * s)))               # (H, W), as the trainer's
    filters = {"bilinear": Image.BILINEAR, "nearest": Image.NEAREST}
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for f in data_root.iterdir():
        if f.is_file() and f.suffix != ".mp4":
            shutil.copy2(f, tmp / f.name)
    (tmp / "ori_imgs").mkdir()
    for f in (data_root / "ori_imgs").glob("*.lms"):
        shutil.copy2(f, tmp / "ori_imgs" / f.name)
    for folder, mode, resample in PACKED_IMAGES:
        (tmp / folder).mkdir()
        for f in sorted(p for p in (data_root / folder).iterdir() if p.suffix in (".jpg", ".png")):
            Image.fromarray(load_image(f, size, mode, filters[resample])).save(tmp / folder / f.name, format="PNG")
    shutil.rmtree(dst, ignore_errors=True)
    tmp.rename(dst)
    files = [f for f in dst.rglob("*") if f.is_file()]
    return {"files": len(files), "bytes": sum(f.stat().st_size for f in files)}


def head_box(labels: np.ndarray, margin: float = 0.1) -> tuple[int, int, int, int] | None:
    """Bounding box (row0, row1, col0, col1; end-exclusive) of the head label (1) of a parsing map,
    grown by ``margin`` of its size on each side and clipped to the image; None without head."""
    rows, cols = np.nonzero(labels == 1)
    if rows.size == 0:
        return None
    h, w = labels.shape
    mr = int(margin * (rows.max() - rows.min() + 1))
    mc = int(margin * (cols.max() - cols.min() + 1))
    return (max(0, rows.min() - mr), min(h, rows.max() + mr + 1), max(0, cols.min() - mc), min(w, cols.max() + mc + 1))


def read_panels(model_dir: Path, data_root: Path) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """The validation panels ``model_dir/val/{img_id}.png`` (render | ground truth, written by
    :func:`pipeline.train.trainer.evaluate`) with the parsing of their frames.

    Returns:
        ``(img_ids, pred, gt, labels)``: img_id strings in frame order, ``pred`` / ``gt``
        [N, H, W, 3] uint8, ``labels`` [N, H, W] uint8 parsing of ``data_root/parsing/{img_id}.png``
        resized to the panel (nearest neighbour; :func:`pipeline.preprocess.parsing.read_parsing`).
    Raises:
        InputError: no panels in ``model_dir/val``, or a parsing map missing (named).
    """
    import cv2
    from PIL import Image

    from pipeline.preprocess.parsing import read_parsing

    panels = sorted((model_dir / "val").glob("*.png"), key=lambda p: int(p.stem))
    if not panels:
        raise InputError(model_dir / "val", "no validation panels (train the torso stage first)")
    imgs = [np.asarray(Image.open(p).convert("RGB")) for p in panels]
    H, W = imgs[0].shape[0], imgs[0].shape[1] // 2
    labels = np.stack([cv2.resize(read_parsing(data_root / "parsing" / f"{p.stem}.png"), (W, H),
                                  interpolation=cv2.INTER_NEAREST) for p in panels])
    return ([p.stem for p in panels], np.stack([i[:, :W] for i in imgs]), np.stack([i[:, W:] for i in imgs]),
            labels)


def score_panels(model_dir: Path, data_root: Path,
                 panels: tuple[list[str], np.ndarray, np.ndarray, np.ndarray] | None = None) -> dict:
    """Metrics of the validation panels ``model_dir/val/{img_id}.png`` (render | ground truth).

    Returns means over frames: ``psnr``, ``ssim``, ``psnr_head``, ``ssim_head`` (dB / [0, 1]),
    ``lmd``, ``lmd_face`` (pixels at :data:`LMD_RESOLUTION`), ``lmd_frames`` / ``lmd_missing``
    (frames scored / left out because a face was not found), ``frames``.

    ``panels``: the :func:`read_panels` result when the caller already has it.

    Raises:
        InputError: no panels in ``model_dir/val``, or a parsing map missing.
    """
    import cv2

    from pipeline.metrics.image import psnr, ssim
    from pipeline.metrics.landmarks import FACE, MOUTH, lmd, make_landmarker

    ids, preds, gts, labels = panels if panels is not None else read_panels(model_dir, data_root)
    lm, _ = make_landmarker(None)
    rows = {k: [] for k in ("psnr", "ssim", "psnr_head", "ssim_head", "lmd", "lmd_face")}
    missing = 0
    for pred, gt, par in zip(preds, gts, labels):
        pf, gf = pred.astype(np.float64) / 255, gt.astype(np.float64) / 255
        rows["psnr"].append(psnr(pf, gf))
        rows["ssim"].append(ssim(pf, gf))
        box = head_box(par)
        if box is not None:
            r0, r1, c0, c1 = box
            rows["psnr_head"].append(psnr(pf[r0:r1, c0:c1], gf[r0:r1, c0:c1]))
            if min(r1 - r0, c1 - c0) >= 7:
                rows["ssim_head"].append(ssim(pf[r0:r1, c0:c1], gf[r0:r1, c0:c1]))
        s = LMD_RESOLUTION / pred.shape[0]
        up = [cv2.resize(x, None, fx=s, fy=s, interpolation=cv2.INTER_CUBIC) for x in (pred, gt)]
        la, lb = lm.landmarks(up[0]), lm.landmarks(up[1])
        if la is None or lb is None:
            missing += 1
            continue
        rows["lmd"].append(float(lmd(la, lb, MOUTH)))
        rows["lmd_face"].append(float(lmd(la, lb, FACE)))
    out = {k: (float(np.mean(v)) if v else None) for k, v in rows.items()}
    out.update(frames=len(ids), lmd_frames=len(rows["lmd"]), lmd_missing=missing,
               lmd_backend=f"{lm.name} at {LMD_RESOLUTION} px")
    return out


#: regions of :func:`error_budget`, in table order
REGIONS = ("head", "neck", "torso", "outline", "background")
#: parsing labels (:func:`pipeline.preprocess.parsing.read_parsing`) of the body: neck and torso
BODY_LABELS = (2, 3)


def error_budget(pred: np.ndarray, gt: np.ndarray, labels: np.ndarray, outline_px: int = 3) -> dict:
    """Where the squared error of rendered frames lies, by region of the ground truth's parsing.

    Args:
        pred, gt: [N, H, W, 3] float in [0, 1], rendered and ground-truth frames.
        labels: [N, H, W] uint8 parsing of the ground truth (0 background, 1 head, 2 neck, 3 torso;
            :func:`pipeline.preprocess.parsing.read_parsing`).
        outline_px: background pixels within this many pixels (chessboard distance) of the person
            (any label > 0) form the ``outline`` region; the rest is ``background``.
    Returns:
        ``{"share": {region: fraction of the summed squared error}, "mse": {region: mean squared
        error per pixel (channel mean) or None when the region is empty}, "area": {region: fraction
        of the pixels}}`` over :data:`REGIONS`; shares sum to 1 (all 0 for a perfect render)
        unless some pixels carry another label (255, a colour outside the parsing code), which
        belong to no region.
    Raises:
        ValueError: shapes that do not match.
    """
    import cv2

    if pred.shape != gt.shape or pred.shape[:3] != labels.shape or pred.ndim != 4:
        raise ValueError(f"error_budget: pred {pred.shape}, gt {gt.shape}, labels {labels.shape}")
    se = ((pred.astype(np.float64) - gt.astype(np.float64)) ** 2).mean(-1)
    k = np.ones((2 * outline_px + 1, 2 * outline_px + 1), np.uint8)
    near = np.stack([cv2.dilate((lab > 0).astype(np.uint8), k) > 0 for lab in labels]) & (labels == 0)
    masks = {"head": labels == 1, "neck": labels == 2, "torso": labels == 3, "outline": near,
             "background": (labels == 0) & ~near}
    total = float(se.sum())
    out = {"share": {}, "mse": {}, "area": {}}
    for name in REGIONS:
        m = masks[name]
        out["share"][name] = float(se[m].sum() / total) if total > 0 else 0.0
        out["mse"][name] = float(se[m].mean()) if m.any() else None
        out["area"][name] = float(m.mean())
    return out


def _nearest_by_truth(train_gt: np.ndarray, truth: np.ndarray, mask: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` training frames ``train_gt`` [M, H, W, 3] whose pixels under ``mask``
    [H, W] bool are nearest ``truth`` [P, 3] (the ground truth's pixels there; MSE, ties by the
    lower index), nearest first: the oracles of :func:`body_references` and :func:`head_references`."""
    dist = ((train_gt[:, mask] - truth.astype(train_gt.dtype)[None]) ** 2).mean((1, 2))   # [M]
    return np.argsort(dist, kind="stable")[:k]


def body_references(pred: np.ndarray, gt: np.ndarray, labels: np.ndarray, pose6: np.ndarray,
                    train_gt: np.ndarray, train_pose6: np.ndarray, oracle_k: int = 5) -> dict:
    """How predictable the body (neck + torso) of the validation frames is: the mean squared error
    over their body pixels of the render and of references that use only training frames.

    * ``mean_train_frame``: the per-pixel mean of the training frames (a torso that ignores the
      head pose);
    * ``nearest_pose_frame``: the training frame whose head pose is nearest (Euclidean distance of
      the 6-vectors standardised by the training frames' standard deviation per component);
    * ``nearest_body_frames`` (an oracle: it uses the ground truth to choose): the mean of the
      ``oracle_k`` training frames whose body pixels are nearest the ground truth's (MSE over this
      validation frame's body pixels). No input of the self-driven protocol selects them; it says
      how near the training frames come to a held-out body, i.e. what a torso that draws (blends of)
      training bodies could reach at best.

    A pose-conditioned torso (RAD-NeRF, ER-NeRF) that predicts the body from the head pose should
    beat the first two; where the nearest-pose frame does worse than the mean frame, the body moves
    in ways the head pose does not tell. ``psnr_oracle_body`` turns the oracle into a full-frame
    bound: the mean per-frame PSNR of the render with its body pixels replaced by the oracle's
    (head, outline and background as rendered). This project's diagnostic (docs/quality.md), not a
    paper's metric.

    Args:
        pred, gt: [N, H, W, 3] float in [0, 1] (validation renders and ground truth).
        labels: [N, H, W] parsing of ``gt``.
        pose6: [N, 6] head pose of the validation frames (RAD-NeRF's 6-vector: XYZ Euler angles in
            radians and translation, :meth:`pipeline.models.torso.TorsoField.pose_vector`).
        train_gt: [M, H, W, 3] float in [0, 1]; train_pose6: [M, 6].
        oracle_k: training frames averaged by the oracle (1 <= oracle_k; at most M are used).
    Returns:
        ``{"model", "mean_train_frame", "nearest_pose_frame", "nearest_body_frames"}`` (MSE,
        channel mean; None without body pixels), ``"psnr_oracle_body"`` (dB; None without body
        pixels), ``"oracle_k"`` and ``"pixels"`` (body pixels counted).
    Raises:
        ValueError: ``oracle_k`` < 1.
    """
    from pipeline.metrics.image import psnr

    if oracle_k < 1:
        raise ValueError(f"body_references: oracle_k must be >= 1, got {oracle_k}")
    names = ("model", "mean_train_frame", "nearest_pose_frame", "nearest_body_frames")
    body = np.isin(labels, BODY_LABELS)
    if not body.any():
        return {**{k: None for k in names}, "psnr_oracle_body": None, "oracle_k": oracle_k, "pixels": 0}
    mean_frame = train_gt.mean(0, dtype=np.float64)
    sd = train_pose6.std(0)
    sd = np.where(sd > 1e-12, sd, 1.0)
    sums = dict.fromkeys(names, 0.0)
    oracle_psnr = []
    for k in range(len(gt)):
        m = body[k]
        nearest = int(np.argmin(np.linalg.norm((train_pose6 - pose6[k]) / sd, axis=1)))
        if m.any():
            pick = _nearest_by_truth(train_gt, gt[k][m], m, oracle_k)
            oracle = train_gt[pick][:, m].mean(0)                              # [P, 3]
        else:
            oracle = np.zeros((0, 3))
        for name, img in (("model", pred[k][m]), ("mean_train_frame", mean_frame[m]),
                          ("nearest_pose_frame", train_gt[nearest][m]), ("nearest_body_frames", oracle)):
            sums[name] += float(((img - gt[k][m]) ** 2).mean(-1).sum())
        sub = pred[k].copy()
        sub[m] = oracle
        oracle_psnr.append(psnr(sub, gt[k]))
    n = int(body.sum())
    return {**{k: v / n for k, v in sums.items()}, "psnr_oracle_body": float(np.mean(oracle_psnr)),
            "oracle_k": oracle_k, "pixels": n}


def head_references(pred: np.ndarray, gt: np.ndarray, labels: np.ndarray, train_gt: np.ndarray,
                    oracle_k: int = 5) -> dict:
    """How new the validation frames' heads are to the training frames: the mean squared error over
    their head pixels (parsing label 1, hair included) of the render and of two oracles that choose
    training frames with the ground truth (no input of the self-driven protocol selects them):

    * ``nearest_head_frame``: the training frame whose pixels at this validation frame's head
      pixels are nearest the ground truth's (MSE over those pixels);
    * ``nearest_head_frames``: the mean of the ``oracle_k`` nearest such frames.

    Where the render beats both, its head already draws held-out heads better than any copy or
    blend of training heads at the same pixels would: the remaining head error is what the held-out
    frames show that no training frame holds (expression, hair), not a failure to retrieve, and an
    image-based head (a retrieval input as cause 17's torso, docs/quality.md) cannot close it. The
    image-space counterpart of :func:`body_references`; this project's diagnostic, not a paper's
    metric.

    Args:
        pred, gt: [N, H, W, 3] float in [0, 1] (validation renders and ground truth).
        labels: [N, H, W] parsing of ``gt``.
        train_gt: [M, H, W, 3] float in [0, 1], the training frames at the same resolution.
        oracle_k: training frames averaged by the second oracle (1 <= oracle_k; at most M are used).
    Returns:
        ``{"model", "nearest_head_frame", "nearest_head_frames"}`` (MSE, channel mean; None without
        head pixels), ``"oracle_k"`` and ``"pixels"`` (head pixels counted).
    Raises:
        ValueError: ``oracle_k`` < 1.
    """
    from pipeline.preprocess.backends.selfie import HEAD

    if oracle_k < 1:
        raise ValueError(f"head_references: oracle_k must be >= 1, got {oracle_k}")
    names = ("model", "nearest_head_frame", "nearest_head_frames")
    head = labels == HEAD
    if not head.any():
        return {**{k: None for k in names}, "oracle_k": oracle_k, "pixels": 0}
    sums = dict.fromkeys(names, 0.0)
    for k in range(len(gt)):
        m = head[k]
        if not m.any():
            continue
        pick = _nearest_by_truth(train_gt, gt[k][m], m, oracle_k)
        for name, img in (("model", pred[k][m]), ("nearest_head_frame", train_gt[pick[0]][m]),
                          ("nearest_head_frames", train_gt[pick][:, m].mean(0))):
            sums[name] += float(((img - gt[k][m]) ** 2).mean(-1).sum())
    n = int(head.sum())
    return {**{k: v / n for k, v in sums.items()}, "oracle_k": oracle_k, "pixels": n}


def reach(rec: dict, sample_rec: dict | None) -> dict | None:
    """What the issue's targets ask of the head and the body of one run (docs/quality.md): the
    full-frame PSNR of its validation frames as pooled over all their pixels (the MSE of every
    region of :func:`error_budget` weighted by its area), as rendered, with the head's MSE replaced
    by the sample's head MSE (``sample_rec``: the sample's run of the same method and label), and
    with the body (neck + torso) also replaced by its oracle (:func:`body_references`
    ``nearest_body_frames``). Outline and background stay as rendered. Pooled, so it differs from
    the table's val PSNR (the mean of per-frame PSNRs) by the spread of the frames' errors; compare
    it with the sample's pooled PSNR. Arithmetic on the records' numbers only.

    Returns:
        ``{"rendered", "sample_head", "sample_head_oracle_body"}`` in dB (the last None without a
        body oracle; the middle two None without ``sample_rec``'s head MSE), or None when ``rec``
        has no area-weighted error budget (records scored before the ``area`` field).
    """
    import math

    eb = rec.get("error_budget") or {}
    area, mse = eb.get("area"), eb.get("mse")
    if not area or not mse:
        return None
    parts = {k: (mse[k] or 0.0) * area[k] for k in area}

    def db(total: float) -> float:
        return -10 * math.log10(total) if total > 0 else math.inf

    out = {"rendered": db(sum(parts.values())), "sample_head": None, "sample_head_oracle_body": None}
    s_mse = ((sample_rec or {}).get("error_budget") or {}).get("mse") or {}
    if s_mse.get("head") is None:
        return out
    parts["head"] = s_mse["head"] * area["head"]
    out["sample_head"] = db(sum(parts.values()))
    oracle = (rec.get("body_references") or {}).get("nearest_body_frames")
    if oracle is not None:
        parts["neck"] = 0.0
        parts["torso"] = oracle * (area["neck"] + area["torso"])
        out["sample_head_oracle_body"] = db(sum(parts.values()))
    return out


#: Gaussian blurs (standard deviation in pixels of the measured resolution) at which
#: :func:`blur_equivalent` blurs the ground truth; the table shows the first three
BLUR_SIGMAS = (0.5, 1.0, 2.0) + tuple(np.round(np.arange(0.1, 4.01, 0.1), 2))


def blur_equivalent(pred: np.ndarray, gt: np.ndarray, sigmas: tuple[float, ...] = BLUR_SIGMAS) -> dict:
    """How sharp a render is, in units that do not depend on the clip's content: the standard
    deviation (pixels at the measured resolution) of the Gaussian blur that, applied to the ground
    truth, gives the same pooled squared error as the render. PSNR punishes a blurred or slightly
    misplaced edge by the contrast it crosses, so the same blur costs a clip of curly hair against
    a bookshelf far more dB than an anchor in a suit against a plain wall; comparing the clips'
    ``sigma`` compares the models, comparing their ``psnr_blurred`` compares the clips. A render's
    error is not only blur (a wrong expression, a missing hand), so ``sigma`` is a summary, not a
    model of the error. This project's diagnostic (docs/quality.md), not a paper's metric.

    The blur is scikit-image's ``filters.gaussian`` (``mode="nearest"``, truncated at 4 standard
    deviations) per frame and channel. The ground truth's squared error grows with the blur; the
    render's ``sigma`` is interpolated linearly in squared error between the two blurs that
    bracket it (blur 0 has error 0).

    Args:
        pred, gt: [N, H, W, 3] float in [0, 1] (validation renders and their ground truth).
        sigmas: blurs to measure (> 0, pixels); the render's ``sigma`` is searched over all of them.
    Returns:
        ``{"psnr_rendered"}`` (pooled over all pixels, dB), ``{"psnr_blurred": {str(sigma): dB}}``
        for every blur, ``"sigma"`` (pixels; None when the render's error exceeds that of the
        largest blur, ``"beyond"`` then True).
    Raises:
        ValueError: shapes differ, or a sigma is not positive.
    """
    from skimage.filters import gaussian

    if pred.shape != gt.shape:
        raise ValueError(f"blur_equivalent: render {pred.shape} and ground truth {gt.shape} differ")
    if not sigmas or min(sigmas) <= 0:
        raise ValueError(f"blur_equivalent: blurs must be positive pixels, got {sigmas}")

    def db(mse: float) -> float:
        return float(-10 * np.log10(mse)) if mse > 0 else float("inf")

    grid = sorted(set(float(s) for s in sigmas))
    curve = {}
    for s in grid:
        blurred = np.stack([gaussian(g, sigma=s, channel_axis=-1, mode="nearest", truncate=4.0,
                                     preserve_range=True) for g in gt])
        curve[s] = float(((blurred - gt) ** 2).mean())
    target = float(((pred - gt) ** 2).mean())
    sigma, lo = (0.0 if target == 0 else None), (0.0, 0.0)
    for s in grid if target > 0 else ():
        if curve[s] >= target:
            (s0, e0), (s1, e1) = lo, (s, curve[s])
            sigma = s0 + (s1 - s0) * (target - e0) / (e1 - e0) if e1 > e0 else s1
            break
        lo = (s, curve[s])
    return {"psnr_rendered": db(target), "psnr_blurred": {f"{s:g}": db(curve[s]) for s in grid},
            "sigma": None if sigma is None else float(sigma), "beyond": sigma is None}


def diagnose(model_dir: Path, data_root: Path,
             panels: tuple[list[str], np.ndarray, np.ndarray, np.ndarray] | None = None) -> dict:
    """:func:`error_budget`, :func:`body_references`, :func:`head_references` and
    :func:`blur_equivalent` of the validation
    panels of ``model_dir`` (render | ground truth at the training resolution; ``panels``: the :func:`read_panels` result
    when the caller already has it), against the training frames of ``data_root`` loaded at the
    same resolution as the trainer loads them (:func:`pipeline.train.data.load_image`), with the
    head poses of ``transforms_train.json`` / ``transforms_val.json``. This project's diagnostic,
    not a metric of the papers.

    Returns:
        ``{"error_budget": ..., "body_references": ..., "head_references": ...,
        "blur_equivalent": ...}`` (see those functions).
    Raises:
        InputError: no panels, or a dataset file missing (named).
    """
    import torch

    from pipeline.models.torso import TorsoField
    from pipeline.train.data import load_image

    ids, pred8, gt8, labels = panels if panels is not None else read_panels(model_dir, data_root)
    H, W = pred8.shape[1:3]
    pred, gt = pred8.astype(np.float64) / 255, gt8.astype(np.float64) / 255

    def poses(split: str) -> dict[int, np.ndarray]:
        frames = read_json(data_root / f"transforms_{split}.json")["frames"]
        mats = torch.tensor([f["transform_matrix"] for f in frames], dtype=torch.float64)
        vec = torch.stack([TorsoField.pose_vector(m[:3, :4].reshape(-1)) for m in mats]).numpy()
        return {int(f["img_id"]): v for f, v in zip(frames, vec)}

    train, val = poses("train"), poses("val")
    train_ids = sorted(train)
    # float32: a 1000-frame clip at 512 px is 3 GB so (6 GB in float64)
    train_gt = np.stack([load_image(data_root / "gt_imgs" / f"{i}.jpg", (H, W), "RGB") for i in train_ids]
                        ).astype(np.float32) / np.float32(255)
    pose6 = np.stack([val[int(i)] for i in ids])
    refs = body_references(pred, gt, labels, pose6, train_gt, np.stack([train[i] for i in train_ids]))
    return {"error_budget": error_budget(pred, gt, labels), "body_references": refs,
            "head_references": head_references(pred, gt, labels, train_gt),
            "blur_equivalent": blur_equivalent(pred, gt)}


def train_and_score(method: str, data_root: Path, model_dir: Path, train_cfg: dict,
                    reuse_dir: Path | None = None, score: bool = True) -> dict:
    """Train the three stages of ``method`` on ``data_root`` (as the ``train_*`` rules) into
    ``model_dir`` and score the validation frames (:func:`score_panels`). Returns the run record.

    With ``reuse_dir`` (the model folder of another run of the same method, identity and seed)
    its head and lips checkpoints and logs are copied and only the torso stage is trained: a
    torso-only ablation at a quarter of the cost, valid where the options changed are torso
    options only (the head and lips stages never read them; the torso stage starts from a fresh
    torso, :meth:`pipeline.train.trainer.Stage.fresh_torso_if_changed`). The record names it
    (``reused_heads``).

    With ``score`` False the record holds the training fields only and ``unscored: True`` (a
    machine without the scoring libraries; :func:`score_record` completes it where they are).

    Raises:
        InputError: ``reuse_dir`` lacks ``lips.pt``, or was trained with another seed."""
    from pipeline.train.profiles import resolve_config
    from pipeline.train.trainer import STAGES, train_stages

    cfg = resolve_config(method, train_cfg)
    model_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    if reuse_dir is not None:
        lips = reuse_dir / "lips.pt"
        if not lips.is_file():
            raise InputError(lips, "no lips checkpoint to reuse (train that run first)")
        man = read_json(reuse_dir / "train_manifest.json")
        if (man.get("config") or {}).get("seed") != cfg.seed:
            raise InputError(reuse_dir / "train_manifest.json", f"trained with seed {(man.get('config') or {}).get('seed')}, "
                                                                f"this run uses seed {cfg.seed}")
        for name in ("head.pt", "lips.pt", "train_log_head.csv", "train_log_lips.csv"):
            if (reuse_dir / name).is_file():
                shutil.copy2(reuse_dir / name, model_dir / name)
    info = train_stages(cfg, data_root, model_dir, ("torso",) if reuse_dir is not None else STAGES)
    wall = time.perf_counter() - t0
    man = read_json(data_root / "manifest.json")
    rec = {"method": method, "profile": cfg.profile, "overrides": train_cfg.get("overrides") or {},
           "resolution": info["resolution"], "steps": info["steps"], "train_seconds": info["seconds"],
           "wall_seconds": round(wall, 1), "val_psnr_trainer": info["val_psnr_db"],
           "baseline_psnr": info["baseline_mean_colour_psnr_db"], "device": device_name(cfg.device),
           **({"reused_heads": str(reuse_dir)} if reuse_dir is not None else {}),
           "dataset": {k: man.get(k) for k in ("n_frames", "focal_len", "reproj_error_px") if k in man}}
    return score_record(rec, model_dir, data_root) if score else {**rec, "unscored": True}


def device_name(device: str) -> str:
    """``cpu`` or the CUDA device's name (e.g. ``NVIDIA H200``) of a config's ``device`` (``auto``
    resolved as the trainer resolves it, :func:`pipeline.models.registry.resolve_device`)."""
    import torch

    from pipeline.models.registry import resolve_device

    dev = resolve_device(device)
    return torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"


def score_record(rec: dict, model_dir: Path, data_root: Path) -> dict:
    """``rec`` with the scores of the validation panels of ``model_dir`` (:func:`score_panels`,
    :func:`diagnose`) against the dataset ``data_root``; ``unscored`` removed.

    Raises:
        InputError: no panels in ``model_dir/val``, or a dataset file missing (named)."""
    panels = read_panels(model_dir, data_root)
    out = {k: v for k, v in rec.items() if k != "unscored"}
    out.update(score_panels(model_dir, data_root, panels), **diagnose(model_dir, data_root, panels))
    return out


#: JPEG quality of the montages and parsing overlays written to the docs: photographs that a PNG
#: stores at 5x the size (the docs' 511 images took 72 MB as PNG, 14 MB as JPEG at 90); the
#: scores are taken from the trainer's PNG panels, never from these pictures.
PICTURE_QUALITY = 90


def montage(model_dir: Path, out: Path, n: int = 3, title: str = "") -> None:
    """Write ``n`` validation panels (render | ground truth) of ``model_dir/val`` stacked as one
    JPEG (:data:`PICTURE_QUALITY`) at ``out``; nothing when the model has no panels."""
    from PIL import Image

    panels = sorted((model_dir / "val").glob("*.png"), key=lambda p: int(p.stem))
    if not panels:
        return
    pick = [panels[i] for i in np.linspace(0, len(panels) - 1, min(n, len(panels))).round().astype(int)]
    imgs = [np.asarray(Image.open(p).convert("RGB")) for p in pick]
    grid = np.concatenate(imgs, 0)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        Image.fromarray(grid).save(tmp, format="JPEG", quality=PICTURE_QUALITY)


def parsing_overlay(data_root: Path, out: Path, n: int = 3, side: int = 256) -> None:
    """Write ``n`` frames of an identity's dataset with its parsing map blended in (head red, neck
    green, torso blue, background untouched), side by side, each ``side`` px, as one JPEG
    (:data:`PICTURE_QUALITY`) at ``out``; nothing when the dataset has no frames."""
    import cv2

    from pipeline.preprocess.parsing import read_parsing

    frames = sorted((data_root / "ori_imgs").glob("*.jpg"), key=lambda p: int(p.stem))
    if not frames:
        return
    colours = np.array([[0, 0, 0], [0, 0, 255], [0, 255, 0], [255, 0, 0]], np.float32)   # BGR
    tiles = []
    for i in np.linspace(0, len(frames) - 1, n).round().astype(int):
        img = cv2.imread(str(frames[i])).astype(np.float32)
        lab = np.minimum(read_parsing(data_root / "parsing" / f"{frames[i].stem}.png"), 3)
        a = np.where(lab > 0, 0.45, 0.0)[..., None]
        tiles.append(cv2.resize((img * (1 - a) + colours[lab] * a).astype(np.uint8), (side, side),
                                interpolation=cv2.INTER_AREA))
    ok, jpg = cv2.imencode(".jpg", np.concatenate(tiles, 1), [cv2.IMWRITE_JPEG_QUALITY, PICTURE_QUALITY])
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(out) as fh:
        fh.write(jpg.tobytes())


def _pictures(folder: Path) -> list[Path]:
    """The montages or overlays in ``folder`` (JPEG; PNG as written before :data:`PICTURE_QUALITY`,
    where no JPEG of the same name exists), sorted by name."""
    found = {p.stem: p for p in sorted(folder.glob("*.png"))}
    found.update({p.stem: p for p in sorted(folder.glob("*.jpg"))})   # a JPEG replaces its PNG
    return [found[k] for k in sorted(found)]


def _fmt(v, d=2):
    return "n/a" if v is None else f"{v:.{d}f}"


def doc_sections(text: str) -> dict[str, str]:
    """The ``### `label``` sections of the measured block of a quality page, in page order
    (label -> section text up to the next section or the end marker)."""
    if "<!-- quality:begin" not in text or "<!-- quality:end -->" not in text:
        return {}
    block = text.split("<!-- quality:begin", 1)[1].split("<!-- quality:end -->", 1)[0]
    parts = re.split(r"(?m)^(?=### `)", block)[1:]
    return {re.match(r"### `([^`]+)`", p).group(1): p.rstrip() + "\n" for p in parts}


def table_rows(section: str, n_cells: int = 10) -> dict[tuple[str, str], str]:
    """``(identity, method)`` -> the table row (one line) of a section written by
    :func:`_section_lines`: rows of ``n_cells`` cells (10: the scores table, 9 (8 before the oracle
    columns): the error-budget table of :func:`_budget_row`, 6: the head-references table of
    :func:`_reach_row`, 7: the sharpness table of :func:`_blur_row`)."""
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and len(cells) == n_cells and cells[0] != "identity":
            rows[(cells[0], cells[1])] = line
    return rows


#: markers of the targets block of the quality page (:func:`write_targets`)
TARGETS_BEGIN = "<!-- targets:begin (generated by python -m pipeline.train.benchmark --quality --targets) -->"
TARGETS_END = "<!-- targets:end -->"


def _without_seed(overrides: str) -> str:
    """A section's overrides text (JSON, or ``method: JSON; ...`` per method, a method's distinct
    JSONs joined by `` / ``, :func:`_per_method`) without the ``seed`` key, for the targets table's
    caption; sets that become equal once the seed is gone are written once. Text that does not
    parse is returned as it is."""
    def one(js: str) -> str:
        texts = []
        for part in js.split(" / "):
            try:
                d = json.loads(part)
            except ValueError:
                return js
            t = json.dumps({k: v for k, v in d.items() if k != "seed"}, sort_keys=True)
            if t not in texts:
                texts.append(t)
        return " / ".join(texts)

    if overrides.startswith("{"):
        return one(overrides)
    parts = [p.split(": ", 1) for p in overrides.split("; ")]
    if all(len(p) == 2 for p in parts):
        return "; ".join(f"{m}: {one(js)}" for m, js in parts)
    return overrides


def targets_table(text: str, labels: list[str], sample: str, min_db: float = 26.0,
                  max_below_db: float = 3.0) -> list[str]:
    """The issue's quality targets per (identity, method), from the tables of a quality page.

    Reads the scores tables (val PSNR, full frame) and the error-budget tables (the last cell: the
    full-frame PSNR with the oracle body, :func:`body_references`) of the sections ``labels`` (runs
    of the same code with different seeds, for example) and writes one row per (identity, method)
    of the first label: the val PSNR of each label, their mean, whether the mean reaches
    ``min_db``, how far (dB) it lies below the mean of ``sample`` with the same method (flagged
    above ``max_below_db``), the mean oracle-body PSNR and the mean blur-equivalent sigma of the
    sharpness tables (:func:`blur_equivalent`; n/a where no label's section has one). Pairs missing from a later label are
    averaged over the labels that hold them (the cell says how many). The labels must share the
    profile, resolution, steps and training device of their sections' setup lines
    (:func:`_section_lines`; seeds and other overrides may differ: the intro line names the first
    label's overrides besides the seed), which the intro line states: runs measured differently
    are never averaged or compared.

    Args:
        text: the page (markdown, written by :func:`write_doc`).
        labels: section labels, the first one decides the rows.
        sample: identity id of the project's sample (the reference of the "below the sample" column).
        min_db, max_below_db: the targets (dB).
    Returns:
        Markdown lines (an intro line, the table).
    Raises:
        ValueError: a label without a section on the page, or ``sample`` without a row in the first;
            labels whose sections differ in profile, resolution, steps or training device (or lack
            a setup line).
    """
    sections = doc_sections(text)
    missing = [lab for lab in labels if lab not in sections]
    if not labels or missing:
        raise ValueError(f"targets: no section for label(s) {missing or labels} in the quality page")
    setups, overrides = {}, {}
    for lab in labels:
        found = re.search(r"(?m)^profile `([^`]+)`, overrides `([^`]*)`, (\d+x\d+) px, steps (\{[^}]*\})"
                          r"(?:, trained on ([^;]+))?;", sections[lab])
        if not found:
            raise ValueError(f"targets: section {lab!r} has no setup line (profile, resolution, steps)")
        prof, over, res, stp, dev = found.groups()
        setups[lab] = (prof, res, stp, f"trained on {dev or 'cpu'}")
        overrides[lab] = _without_seed(over)
    if len(set(setups.values())) > 1:
        raise ValueError("targets: the labels were measured differently (profile, resolution, steps, device): "
                         + "; ".join(f"{lab}: {' '.join(v)}" for lab, v in setups.items()))
    profile, resolution, steps, device = setups[labels[0]]
    setup_more = (f", overrides besides the seed `{overrides[labels[0]]}`" if overrides[labels[0]] != "{}" else "") + (
        f", {device}" if device != "trained on cpu" else "")

    def num(cell: str) -> float | None:
        try:
            return float(cell.split()[0])
        except (ValueError, IndexError):
            return None

    def cells(line: str) -> list[str]:
        return [c.strip() for c in line.strip().strip("|").split("|")]

    psnr = {lab: {k: num(cells(v)[2]) for k, v in table_rows(sections[lab]).items()} for lab in labels}
    refused = {k for lab in labels for k, v in table_rows(sections[lab]).items() if "not trained" in cells(v)[2]}
    oracle = {lab: {k: num(cells(v)[-1]) for k, v in kept_budget_rows(sections[lab]).items()} for lab in labels}
    sigma = {lab: {k: num(cells(v)[-1]) for k, v in table_rows(sections[lab], BLUR_CELLS).items()} for lab in labels}
    pairs = sorted(psnr[labels[0]], key=lambda k: (k[0] != sample, k))
    if not any(k[0] == sample for k in pairs):
        raise ValueError(f"targets: the sample {sample!r} has no row in section {labels[0]!r}")

    def mean(d: dict, k) -> tuple[float | None, int]:
        vals = [d[lab][k] for lab in labels if d[lab].get(k) is not None]
        return (float(np.mean(vals)) if vals else None), len(vals)

    ref = {m: mean(psnr, (i, m))[0] for i, m in pairs if i == sample}
    lines = [f"Targets (val PSNR of the validation frames, head + torso rendered over `bc.jpg`, full frame at the "
             f"training resolution {resolution} px, profile `{profile}`, steps {steps}{setup_more}; "
             f"runs {', '.join(f'`{lab}`' for lab in labels)}; at "
             f"least {min_db:g} dB on every identity, none more than {max_below_db:g} dB below the sample "
             f"`{sample}` with the same method; PSNR, oracle body: the render with each held-out body replaced "
             "by the oracle's, the mean of the 5 training bodies nearest its ground truth; blur-equivalent σ: the "
             "Gaussian blur of the ground truth with the render's error, px, mean of the runs that have it, "
             "`blur_equivalent`, a summary of the model's sharpness that the clip's content does not change):", "",
             "| identity | method | " + " | ".join(f"`{lab}`" for lab in labels) +
             " | mean | at least %g dB | dB below the sample | PSNR, oracle body | blur-equivalent σ (px) |" % min_db,
             "|---|---|" + "---:|" * len(labels) + "---:|:---:|---:|---:|---:|"]
    for ident, method in pairs:
        k = (ident, method)
        m, n = mean(psnr, k)
        o, _ = mean(oracle, k)
        sg, _ = mean(sigma, k)
        each = " | ".join(_fmt(psnr[lab].get(k)) for lab in labels)
        runs = "" if n == len(labels) else f" ({n} runs)"
        if m is None and k in refused:
            runs, ok, below = " (not trained: the reason is under the run's table)", "n/a", "n/a"
        elif m is None:
            ok, below = "n/a", "n/a"
        else:
            ok = "yes" if m >= min_db else "**no**"
            if ident == sample:
                below = "(the sample)"
            elif ref.get(method) is None:
                below = "n/a"
            else:
                gap = ref[method] - m
                below = f"{gap:.2f}" + (f" **(more than {max_below_db:g})**" if gap > max_below_db else "")
        # a mean that rounds up to the target but misses it shows its third decimal
        shown = _fmt(m, 3) if m is not None and m < min_db <= round(m, 2) else _fmt(m)
        lines.append(f"| {ident} | {method} | {each} | {shown}{runs} | {ok} | {below} | {_fmt(o)} | {_fmt(sg)} |")
    return lines


def blur_plot(workdir: Path, labels: list[str], out: Path) -> Path | None:
    """What a blur costs each clip, and where the renders lie on it: per identity a line, the
    pooled PSNR of its validation frames' ground truth blurred by a Gaussian of sigma px
    (:func:`blur_equivalent`, every sigma of :data:`BLUR_SIGMAS`), and each run of ``labels``
    (records in ``workdir/runs/{label}/``) a point at its blur-equivalent sigma and pooled PSNR
    (circles ``rad_nerf``, squares ``er_nerf``, triangles other methods). A clip whose line lies
    lower loses more dB to the same blur; points at the same sigma are equally sharp renders.
    Records scored before ``blur_equivalent`` existed are skipped. Written atomically to ``out``
    (PNG, matplotlib's Agg backend).

    Returns: ``out``, or None when no record of ``labels`` has the field (nothing written).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves, points = {}, {}
    for label in labels:
        for path in sorted((workdir / "runs" / label).glob("*/*.json")):
            be = read_json(path).get("blur_equivalent")
            if not be:
                continue
            ident = path.stem
            # blurs too small to change a pixel have no error ("inf" in the JSON): not drawn
            curves[ident] = sorted((float(k), float(v)) for k, v in be["psnr_blurred"].items() if float(v) < 1e9)
            if be["sigma"] is not None:
                points.setdefault(ident, []).append((be["sigma"], float(be["psnr_rendered"]), path.parent.name))
    if not curves:
        return None
    marker = {"rad_nerf": "o", "er_nerf": "s"}
    fig, ax = plt.subplots(figsize=(8, 5), dpi=110)
    colours = plt.get_cmap("tab10")
    for i, ident in enumerate(sorted(curves)):
        sig, db = zip(*curves[ident])
        ax.plot(sig, db, color=colours(i % 10), lw=1.5, label=ident)
        for sigma, psnr, method in points.get(ident, []):
            ax.plot(sigma, psnr, marker.get(method, "^"), color=colours(i % 10), ms=6, mec="black", mew=0.6)
    ax.set_xlim(0.3, 3)
    ax.set_ylim(20, 46)
    ax.set_xlabel("Gaussian blur of the ground truth, sigma (px at the training resolution)")
    ax.set_ylabel("full-frame PSNR of the validation frames, pooled (dB)")
    ax.set_title(textwrap.fill("lines: the ground truth blurred; points: the renders (o rad_nerf, s er_nerf, "
                               f"^ other), runs {', '.join(labels)}", 130), fontsize=8)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return out


def write_targets(doc: Path, labels: list[str] | list[list[str]], sample: str = SAMPLE[0], min_db: float = 26.0,
                  max_below_db: float = 3.0, plot: Path | None = None) -> None:
    """Write :func:`targets_table` of ``doc`` into ``doc`` between :data:`TARGETS_BEGIN` and
    :data:`TARGETS_END` (appended before the measured block when the markers are absent), with
    the image ``plot`` (:func:`blur_plot` of the same labels) after the tables when given.

    Args:
        doc: the quality page (markdown, written by :func:`write_doc`).
        labels: one group of section labels (runs of the same code with different seeds), or a list
            of such groups, for example one per method with its own profile values: one table per
            group, in the order given (groups are never averaged or compared with each other).
        sample, min_db, max_below_db: as :func:`targets_table`.
        plot: a PNG to show under the tables, or None.
    Raises:
        InputError: ``doc`` missing. ValueError: an empty group; see :func:`targets_table`.
    """
    if not doc.is_file():
        raise InputError(doc, "no quality page to read the targets from (run the benchmark first)")
    groups = [list(labels)] if labels and isinstance(labels[0], str) else [list(g) for g in labels]
    if not groups or not all(groups):
        raise ValueError(f"targets: no labels in group(s) {groups}")
    text = doc.read_text()
    every = [lab for group in groups for lab in group]
    image = [] if plot is None else [
        "", f"![What a blur costs each clip (lines) and how sharp the renders are (points), runs "
            f"{', '.join(every)}]({os.path.relpath(plot, doc.parent)})"]
    tables: list[str] = []
    for group in groups:
        tables += ([""] if tables else []) + targets_table(text, group, sample, min_db, max_below_db)
    block = "\n".join([TARGETS_BEGIN, ""] + tables + image + ["", TARGETS_END])
    if TARGETS_BEGIN in text and TARGETS_END in text:
        head, rest = text.split(TARGETS_BEGIN, 1)
        text = head + block + rest.split(TARGETS_END, 1)[1]
    elif "<!-- quality:begin" in text:
        head, rest = text.split("<!-- quality:begin", 1)
        text = head + block + "\n\n<!-- quality:begin" + rest
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    with atomic_write(doc, "w") as fh:
        fh.write(text)


def write_doc(workdir: Path, doc: Path, assets: Path) -> None:
    """Regenerate the measured part of ``doc`` between the ``<!-- quality:begin -->`` and
    ``<!-- quality:end -->`` markers (created when absent) from every run record in
    ``workdir/runs/``. Sections of labels with no record in ``workdir`` (runs measured in another
    work folder, since deleted) are kept verbatim in their place; new labels come last. A label
    measured partly here and partly elsewhere keeps the page's table rows of the (identity,
    method) pairs that have no record here."""
    runs = sorted((workdir / "runs").glob("*/*/*.json"))
    by_label: dict[str, list[dict]] = {}
    for r in runs:
        rec = read_json(r)
        if rec.get("unscored"):
            log.warning("%s: trained but not scored yet (--rescore --label %s), left off the page", r,
                        r.parent.parent.name)
            continue
        rec["label"], rec["identity"] = r.parent.parent.name, r.stem
        by_label.setdefault(rec["label"], []).append(rec)
    text = doc.read_text() if doc.is_file() else "# Model quality on real identities\n\n"
    sections = doc_sections(text)
    for label, recs in sorted(by_label.items(), key=lambda kv: min(r.get("finished", "") for r in kv[1])):
        old = sections.get(label, "")                  # rows measured elsewhere; recs replace theirs
        sections[label] = "\n".join(_section_lines(label, recs, doc, assets, table_rows(old),
                                                     kept_budget_rows(old), table_rows(old, REACH_CELLS),
                                                     table_rows(old, BLUR_CELLS))) + "\n"
    lines = ["<!-- quality:begin (generated by python -m pipeline.train.benchmark --quality) -->", ""]
    lines += [sec for sec in sections.values()]
    lines.append("<!-- quality:end -->")
    block = "\n".join(lines)
    if "<!-- quality:begin" in text and "<!-- quality:end -->" in text:
        head, rest = text.split("<!-- quality:begin", 1)
        tail = rest.split("<!-- quality:end -->", 1)[1]
        text = head + block + tail
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    with atomic_write(doc, "w") as fh:
        fh.write(text)


#: cells of a row of the error-budget table (:func:`_budget_row`); pages written before the oracle
#: column had :data:`BUDGET_CELLS_OLD` (their rows are kept with ``n/a`` in it)
BUDGET_CELLS = 9
BUDGET_CELLS_OLD = 8
#: cells of a row of the head-references table (:func:`_reach_row`)
REACH_CELLS = 6
#: cells of a row of the sharpness table (:func:`_blur_row`)
BLUR_CELLS = 7


def _budget_row(rec: dict) -> str | None:
    """Row of the error-budget table of a run record (:func:`diagnose`), None without one."""
    eb, br = rec.get("error_budget"), rec.get("body_references")
    if not eb or not br:
        return None
    pct = " | ".join(f"{100 * eb['share'][r]:.0f}" for r in REGIONS)
    refs = " / ".join(_fmt(br.get(k), 4) for k in ("model", "mean_train_frame", "nearest_pose_frame",
                                                    "nearest_body_frames"))
    return f"| {rec['identity']} | {rec['method']} | {pct} | {refs} | {_fmt(br.get('psnr_oracle_body'))} |"


def _reach_row(rec: dict, sample_rec: dict | None) -> str | None:
    """Row of the head-references table of a run record (:func:`head_references`, :func:`reach`),
    None when the record has neither."""
    hr, rc = rec.get("head_references"), reach(rec, sample_rec)
    if not hr or rc is None:
        return None
    heads = " / ".join(_fmt(hr.get(k), 4) for k in ("model", "nearest_head_frame", "nearest_head_frames"))
    return (f"| {rec['identity']} | {rec['method']} | {heads} | {_fmt(rc['rendered'])} | "
            f"{_fmt(rc['sample_head'])} | {_fmt(rc['sample_head_oracle_body'])} |")


def _blur_row(rec: dict) -> str | None:
    """Row of the sharpness table of a run record (:func:`blur_equivalent`), None without one."""
    be = rec.get("blur_equivalent")
    if not be:
        return None
    curve = {k: float(v) for k, v in be["psnr_blurred"].items()}      # "inf" as JSON stores it: float("inf")
    blurred = " | ".join(_fmt(curve.get(f"{s:g}")) for s in BLUR_SIGMAS[:3])
    sigma = f"> {max(float(k) for k in curve):g}" if be["sigma"] is None else _fmt(be["sigma"])
    return f"| {rec['identity']} | {rec['method']} | {blurred} | {_fmt(float(be['psnr_rendered']))} | {sigma} |"


def kept_budget_rows(section: str) -> dict[tuple[str, str], str]:
    """The error-budget rows of a page section (:func:`table_rows`), rows of the older 8-cell
    layout (before the oracle columns) brought to the current one with ``n/a`` in the new cells."""
    rows = {k: v.rstrip().rstrip("|").rstrip() + " / n/a | n/a |"
            for k, v in table_rows(section, BUDGET_CELLS_OLD).items()}
    rows.update(table_rows(section, BUDGET_CELLS))
    return rows


def _merged_rows(kept: dict | None, recs: list[dict], row_of) -> dict[tuple[str, str], str]:
    """The rows of one table of a section: ``kept`` (rows of the page, :func:`table_rows`) with each
    record's row ``row_of(rec)`` in place of its pair's, or the pair's row dropped where the record
    has none (a record measured here replaces what the page held)."""
    rows = dict(kept or {})
    for rec in recs:
        row, key = row_of(rec), (rec["identity"], rec["method"])
        if row:
            rows[key] = row
        else:
            rows.pop(key, None)
    return rows


def _per_method(recs: list[dict], get) -> str:
    """``get(record)`` of the records of one section: the value when every record has the same,
    else ``"method: value; method: value"`` (distinct values of one method joined by " / "), so
    a section whose methods were run differently says so for each."""
    by_method: dict[str, list[str]] = {}
    for rec in recs:
        vals, v = by_method.setdefault(rec["method"], []), get(rec)
        if v not in vals:
            vals.append(v)
    distinct = {v for vals in by_method.values() for v in vals}
    if len(distinct) == 1:
        return distinct.pop()
    return "; ".join(f"{m}: {' / '.join(vals)}" for m, vals in sorted(by_method.items()))


def _section_lines(label: str, recs: list[dict], doc: Path, assets: Path,
                   kept_rows: dict[tuple[str, str], str] | None = None,
                   kept_budget: dict[tuple[str, str], str] | None = None,
                   kept_reach: dict[tuple[str, str], str] | None = None,
                   kept_blur: dict[tuple[str, str], str] | None = None) -> list[str]:
    """Markdown lines of one run label: its table (the rows of ``recs``, and the ``kept_rows``
    (:func:`table_rows`) of the pairs ``recs`` does not hold, sorted by identity and method), the
    error-budget table when records carry one (:func:`diagnose`; ``kept_budget`` likewise), the
    head-references table likewise (:func:`head_references`, :func:`reach`; ``kept_reach``), the
    sharpness table likewise (:func:`blur_equivalent`; ``kept_blur``), parsing overlays and montages."""
    lines: list[str] = []
    trained = [r for r in recs if not r.get("not_trained")]
    overrides = _per_method(recs, lambda r: json.dumps(r["overrides"], sort_keys=True))
    note = _per_method(recs, lambda r: r.get("note", ""))
    if trained:
        r0 = trained[0]
        devices = sorted({r.get("device") or "cpu" for r in trained})
        where = "" if devices == ["cpu"] else f", trained on {' and '.join(devices)}"
        setup = (f"profile `{r0['profile']}`, overrides `{overrides}`, "
                 f"{r0['resolution'][0]}x{r0['resolution'][1]} px, steps {r0['steps']}{where}; {note}")
    else:
        setup = f"overrides `{overrides}`, no run trained; {note}"
    lines += [f"### `{label}`", "", setup, "",
              "| identity | method | val PSNR | SSIM | PSNR head box | SSIM head box | LMD (mouth) | LMD (face) |"
              " mean-colour PSNR | train s |",
              "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    rows = dict(kept_rows or {})
    for rec in recs:
        if rec.get("not_trained"):
            rows[(rec["identity"], rec["method"])] = (f"| {rec['identity']} | {rec['method']} | n/a (not trained) |"
                                                      + " n/a |" * 7)
            continue
        miss = f" ({rec['lmd_missing']} no face)" if rec.get("lmd_missing") else ""
        rows[(rec["identity"], rec["method"])] = (
            f"| {rec['identity']} | {rec['method']} | {_fmt(rec['psnr'])} | {_fmt(rec['ssim'], 3)} | "
            f"{_fmt(rec['psnr_head'])} | {_fmt(rec['ssim_head'], 3)} | {_fmt(rec['lmd'])}{miss} | "
            f"{_fmt(rec['lmd_face'])} | {_fmt(rec['baseline_psnr'])} | {rec['train_seconds']['total']:.0f} |")
    lines += [rows[k] for k in sorted(rows)]
    lines.append("")
    refused = [r for r in recs if r.get("not_trained")]
    if refused:
        lines += ["Not trained (the method refused the dataset; the reason as it said it):", ""]
        lines += [f"* {r['method']} on {r['identity']}: {r['not_trained']}"
                  for r in sorted(refused, key=lambda r: (r["identity"], r["method"]))]
        lines.append("")
    budget = _merged_rows(kept_budget, recs, _budget_row)
    if budget:
        lines += ["Where the validation error lies (`diagnose`): share of the summed squared error (%) by region of "
                  "the ground truth's parsing (outline: background within 3 px of the person), and the mean squared "
                  "error of the body pixels (neck + torso) for the render, the mean training frame, the "
                  "training frame of the nearest head pose and (an oracle that chooses with the ground truth) "
                  "the mean of the 5 training frames whose bodies are nearest the ground truth's; last, the "
                  "full-frame val PSNR of the render with its body pixels replaced by that oracle's (what a "
                  "torso that draws training bodies could reach at best, head as rendered):", "",
                  "| identity | method | head | neck | torso | outline | background | body MSE: render / mean "
                  "frame / nearest pose / oracle | PSNR, oracle body |",
                  "|---|---|---:|---:|---:|---:|---:|---|---:|"]
        lines += [budget[k] for k in sorted(budget)]
        lines.append("")
    samples = {r["method"]: r for r in recs if r["identity"] == SAMPLE[0]}
    reach_rows = _merged_rows(kept_reach, recs, lambda rec: _reach_row(rec, samples.get(rec["method"])))
    if reach_rows:
        lines += [f"How new the held-out heads are (`head_references`): the mean squared error of the head pixels "
                  f"(hair included) of the render and of two oracles that choose training frames with the ground "
                  f"truth: the training frame whose pixels there are nearest, and the mean of the 5 nearest (where "
                  f"the render beats both, no copy or blend of training heads draws the held-out heads better); "
                  f"then what the targets ask (`reach`): the full-frame PSNR pooled over all validation pixels as "
                  f"rendered, with the head's MSE replaced by the sample's (`{SAMPLE[0]}`, same method and run), "
                  f"and with the body also replaced by its oracle (outline and background as rendered; pooled, so "
                  f"compare with the sample's pooled value, not with the val PSNR column):", "",
                  "| identity | method | head MSE: render / nearest training head / mean of 5 nearest | "
                  "PSNR pooled, rendered | with the sample's head MSE | and the oracle body |",
                  "|---|---|---|---:|---:|---:|"]
        lines += [reach_rows[k] for k in sorted(reach_rows)]
        lines.append("")
    blur_rows = _merged_rows(kept_blur, recs, _blur_row)
    if blur_rows:
        lines += ["How sharp the renders are (`blur_equivalent`): the full-frame PSNR, pooled over the validation "
                  "pixels, of the ground truth blurred by a Gaussian of 0.5, 1 and 2 px (scikit-image's "
                  "`filters.gaussian`, edges repeated, at the measured resolution: what a blur costs this clip's "
                  "content), of the render (head + torso over `bc.jpg`, as the val PSNR column), and the blur of the "
                  "ground truth that has the render's error (px; compare it between clips: the model's sharpness "
                  "without the content's contrast):", "",
                  "| identity | method | ground truth blurred 0.5 px | 1 px | 2 px | PSNR pooled, rendered | "
                  "blur-equivalent σ (px) |",
                  "|---|---|---:|---:|---:|---:|---:|"]
        lines += [blur_rows[k] for k in sorted(blur_rows)]
        lines.append("")
    over = _pictures(assets / label / "parsing")
    if over:
        lines += ["Parsing maps of the datasets (head red, neck green, torso blue), three frames per identity:", ""]
        lines += [f"![{label} parsing {m.stem}]({os.path.relpath(m, doc.parent)})" for m in over]
        lines.append("")
    mont = _pictures(assets / label)
    if mont:
        lines += ["Validation frames (render | ground truth), three per run:", ""]
        for m in mont:
            rel = os.path.relpath(m, doc.parent)
            lines.append(f"![{label} {m.stem}]({rel})")
        lines.append("")
    return lines


def rescore(workdir: Path, label: str, identities: list[str] | None = None) -> list[dict]:
    """Score the existing models of run ``label`` in ``workdir`` again (:func:`score_panels`,
    :func:`diagnose`) without training: the records keep their training fields and note, the scores
    are replaced (records of ``--train-only`` runs, ``unscored``, get their scores). ``identities``:
    only these ids (None: all). A record whose model folder is gone is left as it is, with a
    warning. Returns the updated records (also written back).

    Raises:
        InputError: a model's panels or its dataset's files missing (named).
    """
    out = []
    for path in sorted((workdir / "runs" / label).glob("*/*.json")):
        method, ident = path.parent.name, path.stem
        if identities and ident not in identities:
            continue
        model_dir = workdir / "models" / label / method / ident
        data_root = workdir / "results" / "data" / ident
        if not (model_dir / "val").is_dir():
            log.warning("%s/%s/%s: no model folder %s, not rescored", label, method, ident, model_dir)
            continue
        rec = score_record(read_json(path), model_dir, data_root)
        atomic_write_json(path, rec)
        log.info("%s/%s/%s: rescored (val PSNR %.2f dB)", label, method, ident, rec["psnr"])
        out.append(rec)
    return out


def run_quality(identities: list[tuple[str, Path]], methods: list[str], train_cfg: dict, label: str,
                workdir: Path, doc: Path | None, assets: Path, note: str = "", build: bool = True,
                reuse_heads: str | None = None, score: bool = True) -> list[dict]:
    """Build datasets (unless ``build`` is False: use those already in ``workdir``), train and
    score every (identity, method); one failure leaves the others. A method that refuses a
    dataset (:class:`InputError`: AED-NeRF without emotion labels, NeRF-3DTalker without a 3DMM
    fit) gets a record ``{"method", "not_trained": reason, ...}`` that the page shows as a row of
    n/a with the reason under the table, and is tried again by the next run of the label. With ``reuse_heads`` (a label)
    each run trains only its torso on that label's head and lips (:func:`train_and_score`). With
    ``score`` False (``--train-only``) the runs are trained and recorded ``unscored``, without
    parsing overlays or a page; a later run with ``score`` (or :func:`rescore`) scores them.
    Returns the run records (also written as JSON per run)."""
    from datetime import datetime, timezone

    failed = build_datasets(workdir, identities) if build else {
        i: "dataset not built" for i, _ in identities if not (workdir / "results" / "data" / i / "manifest.json").is_file()}
    for i, why in failed.items():
        log.error("%s: dataset not built: %s", i, why)
    records = []
    for ident, _ in identities:
        if ident in failed:
            continue
        data_root = workdir / "results" / "data" / ident
        if score:
            parsing_overlay(data_root, assets / label / "parsing" / f"{ident}.jpg")
        for method in methods:
            out = workdir / "runs" / label / method / f"{ident}.json"
            done = read_json(out) if out.is_file() else None
            model_dir = workdir / "models" / label / method / ident
            if done and not done.get("not_trained"):
                if done.get("unscored") and score:
                    done = score_record(done, model_dir, data_root)
                    atomic_write_json(out, done)
                    log.info("%s/%s/%s: trained elsewhere, scored now (val PSNR %.2f dB)", label, method, ident,
                             done["psnr"])
                else:
                    log.info("%s/%s/%s: already %s (%s)", label, method, ident,
                             "trained" if done.get("unscored") else "measured", out)
                records.append(done)
                continue
            log.info("%s/%s/%s: training", label, method, ident)
            try:
                rec = train_and_score(method, data_root, model_dir, train_cfg,
                                      workdir / "models" / reuse_heads / method / ident if reuse_heads else None,
                                      score=score)
            except InputError as exc:
                # the method cannot train on this dataset (AED-NeRF without emotion labels, a missing
                # 3DMM fit): the table says so with the reason; a later run tries again
                log.error("%s/%s: %s", method, ident, exc)
                rec = {"method": method, "not_trained": str(exc), "note": note,
                       "overrides": train_cfg.get("overrides") or {},
                       "finished": datetime.now(timezone.utc).isoformat(timespec="seconds")}
                atomic_write_json(out, rec)
                records.append(rec)
                continue
            rec["note"] = note
            rec["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
            atomic_write_json(out, rec)
            montage(model_dir, assets / label / f"{ident}__{method}.jpg")
            if score:
                log.info("%s/%s/%s: val PSNR %.2f dB (head box %.2f), baseline %.2f", label, method, ident,
                         rec["psnr"], rec["psnr_head"] or float("nan"), rec["baseline_psnr"])
            else:
                log.info("%s/%s/%s: trained, unscored (the trainer's val PSNR %.2f dB)", label, method, ident,
                         rec["val_psnr_trainer"])
            records.append(rec)
    if doc is not None:
        write_doc(workdir, doc, assets)
    return records
