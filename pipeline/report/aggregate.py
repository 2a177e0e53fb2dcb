"""Collect every metric JSON into one tidy table (one row per method x identity x test x metric).

Input: ``results/metrics/{method}/{identity}/{test}.json`` as written by the metrics stage::

    {"method", "identity", "test", "protocol", "n_frames", "compositing", "resolution", "training",
     "metrics": {NAME: {"value": float | null, "backend", "weights_sha256", "na_reason", "n_frames",
                        "note"}}}

(``resolution`` ``[W, H]`` of the render, ``training`` (how the model was trained: profile and
departures from the paper, :func:`pipeline.metrics.compute.training_setup`) and a metric's
``note``, e.g. frames left out, are optional: files written before they existed read as unknown.)

Output: ``results/tables/metrics_long.csv`` and ``.parquet`` with the columns of :data:`COLUMNS`.

Usage::

    python -m pipeline.report.aggregate --metrics results/metrics/*/*/*.json \
        --out-csv results/tables/metrics_long.csv --out-parquet results/tables/metrics_long.parquet
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import pandas as pd

from pipeline.common.errors import InputError
from pipeline.common.io import atomic_path, read_json
from pipeline.common.log import run_main, setup_logging

#: columns of the tidy table, in order
COLUMNS = ["method", "identity", "protocol", "test", "metric", "value", "backend", "na_reason",
           "n_frames", "compositing", "resolution", "training", "note", "weights_sha256", "source_file"]
#: columns a table written before they existed may lack (read as empty)
OPTIONAL = ("resolution", "training", "note")
PROTOCOLS = ("self_driven", "cross_driven")


def _as_float(value, path: Path, name: str) -> float | None:
    """A metric value as float; None for null / "nan". JSON "inf" strings become floats."""
    if value is None:
        return None
    if isinstance(value, str):
        if value in ("inf", "-inf"):
            return float(value)
        if value == "nan":
            return None
        raise InputError(path, f"metric {name!r}: value {value!r} is not a number")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(path, f"metric {name!r}: value {value!r} is not a number")
    value = float(value)
    return None if math.isnan(value) else value


def rows_of(path: str | Path) -> list[dict]:
    """Tidy rows of one metric JSON.

    Returns:
        one dict per metric with the keys of :data:`COLUMNS` (``value`` None when n/a).
    Raises:
        InputError: unreadable JSON, missing top-level keys, unknown protocol, malformed metric.
    """
    path = Path(path)
    data = read_json(path)
    if not isinstance(data, dict):
        raise InputError(path, "metric file must hold a JSON object")
    missing = [k for k in ("method", "identity", "test", "protocol", "metrics") if k not in data]
    if missing:
        raise InputError(path, f"metric file lacks {', '.join(missing)}")
    if data["protocol"] not in PROTOCOLS:
        raise InputError(path, f"protocol {data['protocol']!r} is not one of {PROTOCOLS}")
    if not isinstance(data["metrics"], dict):
        raise InputError(path, "'metrics' must map metric names to objects")
    res = data.get("resolution")
    res = "x".join(str(int(v)) for v in res) if isinstance(res, list) and len(res) == 2 else None
    rows = []
    for name, m in data["metrics"].items():
        if not isinstance(m, dict) or "value" not in m:
            raise InputError(path, f"metric {name!r} must be an object with a 'value'")
        value = _as_float(m["value"], path, name)
        reason = m.get("na_reason")
        if value is None and not reason:
            reason = "no value reported (no reason given)"
        rows.append({
            "method": str(data["method"]), "identity": str(data["identity"]),
            "protocol": data["protocol"], "test": str(data["test"]), "metric": str(name),
            "value": value, "backend": m.get("backend"), "na_reason": reason if value is None else None,
            "n_frames": m.get("n_frames", data.get("n_frames")),
            "compositing": data.get("compositing"), "resolution": res, "training": data.get("training"),
            "note": m.get("note"),
            "weights_sha256": m.get("weights_sha256"),
            "source_file": str(path),
        })
    return rows


def aggregate(paths: list[str | Path]) -> pd.DataFrame:
    """Tidy table of all metric JSONs (sorted by protocol, test, method, identity, metric).

    Raises:
        InputError: a malformed file, or two files for the same method/identity/test.
    """
    rows: list[dict] = []
    seen: dict[tuple, Path] = {}
    for p in paths:
        file_rows = rows_of(p)
        for r in file_rows:
            key = (r["method"], r["identity"], r["test"], r["metric"])
            if key in seen and seen[key] != Path(p):
                raise InputError(p, f"duplicates {seen[key]} for {key[:3]}")
            seen[key] = Path(p)
        rows.extend(file_rows)
    df = pd.DataFrame(rows, columns=COLUMNS)
    df["value"] = pd.to_numeric(df["value"], errors="coerce").astype("float64")
    df["n_frames"] = pd.to_numeric(df["n_frames"], errors="coerce").astype("Int64")
    for col in ("backend", "na_reason", "compositing", "resolution", "training", "note", "weights_sha256"):
        df[col] = df[col].astype("string")
    return df.sort_values(["protocol", "test", "method", "identity", "metric"], ignore_index=True)


def read_long(path: str | Path) -> pd.DataFrame:
    """Read the tidy table (Parquet or CSV by suffix).

    Raises:
        InputError: missing file or missing columns.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "tidy metrics table not found (run the aggregate stage)")
    df = pd.read_parquet(path) if path.suffix == ".parquet" else pd.read_csv(path, keep_default_na=False,
                                                                             na_values=[""])
    for c in OPTIONAL:
        if c not in df.columns:
            df[c] = pd.Series([None] * len(df), dtype="string")
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise InputError(path, f"tidy metrics table lacks columns {missing}")
    return df


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--metrics", nargs="*", default=[], help="metric JSON files")
    ap.add_argument("--out-csv", required=True)
    ap.add_argument("--out-parquet", required=True)
    args = ap.parse_args(argv)
    log = setup_logging("report.aggregate")
    df = aggregate(args.metrics)
    with atomic_path(args.out_csv) as tmp:
        df.to_csv(tmp, index=False)
    with atomic_path(args.out_parquet) as tmp:
        df.to_parquet(tmp, index=False)
    log.info("%d metric files -> %d rows (%d methods, %d identities)", len(args.metrics), len(df),
             df["method"].nunique(), df["identity"].nunique())
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
