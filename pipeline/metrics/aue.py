"""AUE: action-unit intensity error (the facial-action metric of ER-NeRF-era tables).

The 17 OpenFace 2 intensity AUs are extracted on the generated and the ground-truth frames; per AU
the mean squared error over frames is taken, and the errors are summed over AUs (``aue``), over
the lower-face AUs (``aue_lower``) and the upper-face AUs (``aue_upper``). The groups are those of
the reference script, TalkingGaussian's ``auerror.py`` (Fictionarry/TalkingGaussian): upper =
AU01, 02, 04, 05, 06, 07, 09, 45; lower = AU10, 12, 14, 15, 17, 20, 23, 25, 26 (AU09, the nose
wrinkler, counts as upper face there).

Extractor: OpenFace 2 ``FeatureExtraction`` when config ``preprocess.aus.openface_bin`` is set, else
pyfaceau (OpenFace 2.2's AU models in Python) when it and its model files are installed in
``{weights_dir}/OpenFaceModels``,
else an estimate from MediaPipe FaceLandmarker blendshapes
(``pipeline.preprocess.aus.estimate_aus_from_blendshapes``), labelled as such.
"""
from __future__ import annotations

import numpy as np

#: OpenFace 2 intensity AUs (``AUxx_r`` columns), in OpenFace's order
AUS = ("AU01", "AU02", "AU04", "AU05", "AU06", "AU07", "AU09", "AU10", "AU12", "AU14", "AU15",
       "AU17", "AU20", "AU23", "AU25", "AU26", "AU45")
#: brows, lids, cheeks, nose wrinkler and blinks (TalkingGaussian auerror.py ``AUitems_upper``)
UPPER = ("AU01", "AU02", "AU04", "AU05", "AU06", "AU07", "AU09", "AU45")
#: lips, chin and jaw (TalkingGaussian auerror.py ``AUitems_lower``)
LOWER = ("AU10", "AU12", "AU14", "AU15", "AU17", "AU20", "AU23", "AU25", "AU26")


def aue_per_au(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """Per-AU mean squared error over frames.

    Args:
        pred, gt: [N, 17] AU intensities (OpenFace units 0..5), columns in :data:`AUS` order.
    Returns:
        [17] float64.
    """
    p, g = np.asarray(pred, np.float64), np.asarray(gt, np.float64)
    if p.shape != g.shape or p.ndim != 2 or p.shape[1] != len(AUS):
        raise ValueError(f"AU arrays must both be [N, {len(AUS)}], got {p.shape} and {g.shape}")
    return ((p - g) ** 2).mean(axis=0)


def aue(pred: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    """AUE sums: ``{"aue": all 17, "aue_lower": LOWER, "aue_upper": UPPER}`` of
    :func:`aue_per_au`."""
    per = dict(zip(AUS, aue_per_au(pred, gt)))
    return {"aue": float(sum(per.values())),
            "aue_lower": float(sum(per[a] for a in LOWER)),
            "aue_upper": float(sum(per[a] for a in UPPER))}


def au_matrix(table) -> np.ndarray:
    """[N, 17] in :data:`AUS` order from an AU table: a mapping or DataFrame with ``AUxx_r`` or
    ``AUxx`` keys, or an [N, 17] array.

    Raises:
        KeyError: an AU is missing.
    """
    if isinstance(table, np.ndarray):
        if table.ndim != 2 or table.shape[1] != len(AUS):
            raise ValueError(f"AU array must be [N, {len(AUS)}], got {table.shape}")
        return table.astype(np.float64)
    cols = []
    for au in AUS:
        key = f"{au}_r" if f"{au}_r" in table else au
        cols.append(np.asarray(table[key], np.float64))
    return np.stack(cols, axis=1)


def read_openface_aus(csv_path) -> np.ndarray:
    """[N, 17] intensities from an OpenFace 2 CSV (column names may carry leading spaces)."""
    import pandas as pd

    df = pd.read_csv(csv_path, skipinitialspace=True)
    df.columns = [c.strip() for c in df.columns]
    return au_matrix(df)


#: the lip AUs of NeRF-3DTalker's AU accuracy (its code's AU list: upper lip raiser, dimpler, lip
#: stretcher, lips part, jaw drop)
LIP_AUS = ("AU10", "AU14", "AU20", "AU25", "AU26")


def au_presence(intensity: np.ndarray, threshold: float = 1.0) -> np.ndarray:
    """Presence [N, 17] bool of AU intensities [N, 17] (OpenFace units 0..5): ``AU_r >= threshold``
    (1.0: the presence rule of :mod:`pipeline.preprocess.aus`)."""
    return np.asarray(intensity, np.float64) >= threshold


def au_accuracy(pred_presence: np.ndarray, gt_presence: np.ndarray, aus: tuple[str, ...] = LIP_AUS) -> float:
    """AU Acc (NeRF-3DTalker Table I): the share of (frame, AU) pairs over ``aus`` whose presence
    agrees between the generated and the ground-truth frame.

    Args:
        pred_presence, gt_presence: [N, 17] bool presence in :data:`AUS` order.
        aus: the AUs scored (default :data:`LIP_AUS`).
    Returns:
        fraction in [0, 1] (the paper prints it in %).
    Raises:
        ValueError: shapes differ or are not [N, 17] with N >= 1.
    """
    p, g = np.asarray(pred_presence, bool), np.asarray(gt_presence, bool)
    if p.shape != g.shape or p.ndim != 2 or p.shape[1] != len(AUS) or len(p) == 0:
        raise ValueError(f"presence arrays must both be [N >= 1, {len(AUS)}], got {p.shape} and {g.shape}")
    cols = [AUS.index(a) for a in aus]
    return float((p[:, cols] == g[:, cols]).mean())
