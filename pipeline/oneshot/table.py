"""The one-shot table (preset ``one_shot``) and the internal-differences table.

``results/tables/one_shot.md`` / ``.csv`` / ``.tex`` (booktabs, as the other tables): one row per
method (the one-shot backend, labelled classical for ``meshwarp``, and the two bounds), the mean
over references (photos as given) and driving clips, after the output's resolution; n/a cells
carry their reason as footnotes; the best value among the methods is bold (the bounds are never
ranked); the reported tables of the preset (LiveNeRF Tables II/III, NeRFFaceSpeech Tables 1/2,
from ``resources/reported_numbers.csv`` when present) follow, each with its paper's own columns.

``results/tables/one_shot_internal_differences.csv`` (and a section of the Markdown): after
NeRFFaceSpeech Table 2, every one-shot method on the reference as given ("input") and on the
mirrored reference ("flipped"), and their difference Δ = input - flipped (the sign of
NeRFFaceSpeech Table 2), per metric.

Usage::

    python -m pipeline.oneshot.table --metrics results/metrics/one_shot/*/*/*.json \
        --reported resources/reported_numbers.csv --out-md results/tables/one_shot.md \
        --out-csv results/tables/one_shot.csv --out-internal results/tables/one_shot_internal_differences.csv \
        --out-tex results/tables/one_shot.tex
"""
from __future__ import annotations

import argparse
import csv
import math
import sys
from pathlib import Path

import pandas as pd

from pipeline.common.errors import InputError
from pipeline.common.io import atomic_write, read_json
from pipeline.common.log import run_main, setup_logging
from pipeline.oneshot import BOUND_METHODS, FLIPPED_SUFFIX, PROTOCOL
from pipeline.report.presets import COLUMNS, ONE_SHOT_COLUMNS, get_preset
from pipeline.report.tables import (NA, Table, _cell, _info, _mark_backends, _mark_best, build_reported_tables, fmt,
                                    method_order, missing_reported, read_reported, to_csv_rows, to_latex,
                                    to_markdown)

#: metrics of the internal-differences table
INTERNAL = ("csim", "cpbd", "expr_l1", "pose_err_deg", "mouth_corr")

#: row label suffixes (the classical backend is labelled as such in every table)
LABELS = {"oneshot_meshwarp": "oneshot_meshwarp (classical)", "still_photo": "still_photo (bound: no motion)",
          "driving_video": "driving_video (bound: driver's identity)"}


def tidy(paths: list[str | Path]) -> pd.DataFrame:
    """One row per (method, reference, test, metric) of one-shot metric JSONs: columns ``method,
    identity`` (the reference name without the flip suffix), ``test, flipped, metric, value,
    na_reason, backend, note`` and ``resolution`` (``WxH`` of the output, the reference's working
    size, None when the JSON does not say).

    Raises:
        InputError: a JSON that is not of protocol one_shot.
    """
    rows = []
    for p in paths:
        d = read_json(p)
        if d.get("protocol") != PROTOCOL:
            raise InputError(p, f"protocol {d.get('protocol')!r} is not {PROTOCOL}")
        ref = str(d["identity"])
        size = (d.get("reference") or {}).get("size")
        res = f"{int(size[0])}x{int(size[1])}" if size else None
        for name, m in d["metrics"].items():
            v = m.get("value")
            v = float(v) if v is not None else math.nan
            rows.append({"method": d["method"], "identity": ref.removesuffix(FLIPPED_SUFFIX), "test": d["test"],
                         "flipped": bool(d.get("flipped")), "protocol": PROTOCOL, "metric": name,
                         "value": None if math.isnan(v) else v, "na_reason": m.get("na_reason"),
                         "backend": m.get("backend"), "note": m.get("note"), "resolution": res})
    return pd.DataFrame(rows, columns=["method", "identity", "test", "flipped", "protocol", "metric", "value",
                                       "na_reason", "backend", "note", "resolution"])


def build_oneshot_table(df: pd.DataFrame, methods: list[str], columns: tuple[str, ...] = ONE_SHOT_COLUMNS) -> Table:
    """The measured one-shot table (references as given; flipped runs are in the internal table).

    The first column is the output's resolution (:func:`tidy`); bold marks the best value among the
    methods over the same references with the same backend and resolution (``_mark_best``); the
    bounds (:data:`BOUND_METHODS`) are shown for reference and never ranked.
    """
    sub = df[~df["flipped"]]
    cols = [COLUMNS[k] for k in columns]
    tab = Table(PROTOCOL, "One-shot face replacement - mean over references and driving clips",
                ["resolution", *(c.key for c in cols)], ["Resolution", *(f"{c.label}{c.arrow}" for c in cols)])
    values = []
    for m in method_order(sub, methods):
        msub = sub[sub["method"] == m]
        cells, vals = [_info(msub, "resolution")], [(None, ())]
        for c in cols:
            text, v, group = _cell(tab, msub, c, msub["identity"].nunique())
            cells.append(text)
            vals.append((None, ()) if m in BOUND_METHODS else (v, group))
        tab.rows.append({"kind": "measured", "method": LABELS.get(m, m), "source": "measured here", "table": "",
                         "identity": f"mean of {msub['identity'].nunique()}", "cells": cells,
                         "bold": [False] * len(cells)})
        values.append(vals)
    _mark_best(tab, [None, *cols], values)
    _mark_backends(tab, [(None, c) for c in cols], values, off=1)
    if any(m in BOUND_METHODS for m in sub["method"]):
        tab.note("bounds: still_photo repeats the photo (perfect identity, no motion); driving_video is the "
                 "driver itself (perfect motion, another identity). A method should beat each on the "
                 "other's weakness; the bounds are not ranked (never bold).")
    if not tab.rows:
        tab.note("no one-shot metric files")
    return tab


def internal_differences(df: pd.DataFrame, methods: list[str], metrics: tuple[str, ...] = INTERNAL) -> Table:
    """Input / flipped / difference Δ = input - flipped (the sign of NeRFFaceSpeech Table 2's Δ, e.g.
    PC-AVS FID 50.223 - 58.850 = -8.627) per metric and one-shot method (bounds excluded), means over
    the (reference, driver) pairs that were run on both the photo and its mirror image."""
    heads, keys = [], []
    for k in metrics:
        c = COLUMNS[k]
        keys += [f"{k}:input", f"{k}:flipped", f"{k}:diff"]
        heads += [f"{c.label}{c.arrow} input", f"{c.label} flipped", f"{c.label} Δ (input - flipped)"]
    tab = Table(PROTOCOL, "Internal differences (NeRFFaceSpeech Table 2): reference as given vs mirrored",
                keys, heads)
    for m in method_order(df, methods):
        if m in BOUND_METHODS:
            continue
        msub = df[df["method"] == m]
        # only (reference, driver) pairs run both ways are compared
        pairs = set(map(tuple, msub.loc[msub["flipped"], ["identity", "test"]].values)) & \
            set(map(tuple, msub.loc[~msub["flipped"], ["identity", "test"]].values))
        if not pairs:
            continue
        keep = msub[[(i, t) in pairs for i, t in zip(msub["identity"], msub["test"])]]
        cells = []
        for k in metrics:
            c = COLUMNS[k]
            a, ta = _mean(keep[~keep["flipped"]], k)
            b, tb = _mean(keep[keep["flipped"]], k)
            cells += [ta if a is None else fmt(a, c.digits), tb if b is None else fmt(b, c.digits),
                      NA if a is None or b is None else fmt(a - b, c.digits)]
        tab.rows.append({"kind": "measured", "method": LABELS.get(m, m), "source": "measured here", "table": "",
                         "identity": f"{len(pairs)} reference x driver pairs", "cells": cells,
                         "bold": [False] * len(cells)})
    if not tab.rows:
        tab.note("no run on a flipped reference (config oneshot.flipped)")
    return tab


def _mean(sub: pd.DataFrame, metric: str) -> tuple[float | None, str]:
    s = sub[sub["metric"] == metric]
    vals = s["value"].dropna()
    if vals.empty:
        why = "; ".join(sorted({str(r) for r in s["na_reason"].dropna()})) or "missing"
        return None, f"{NA} ({why})"
    return float(vals.mean()), ""


def write_oneshot_tables(paths: list[str | Path], reported_path: str | Path | None, methods: list[str],
                         out_md: str | Path, out_csv: str | Path, out_internal: str | Path,
                         out_tex: str | Path) -> tuple[Table, Table]:
    """Build and write the one-shot table, the preset's reported tables and the internal differences.

    Writes (atomically) ``out_md`` (all tables), ``out_csv`` (the one-shot table's cells),
    ``out_internal`` (the internal differences' cells) and ``out_tex`` (all tables as booktabs
    LaTeX, :func:`pipeline.report.tables.to_latex`). Returns (one-shot table, internal differences).

    Raises:
        InputError: a JSON that is not of protocol one_shot (:func:`tidy`), or a reported-numbers
            file that is missing (:func:`pipeline.report.tables.read_reported`).
    """
    preset = get_preset("one_shot")
    df = tidy(paths)
    main_tab = build_oneshot_table(df, methods, preset.one_shot or ONE_SHOT_COLUMNS)
    internal = internal_differences(df, methods)
    reported = (build_reported_tables(preset, read_reported(reported_path), PROTOCOL, every_table=True)
                if reported_path else [])
    md = ["# One-shot face replacement (protocol one_shot)", "",
          f"Columns: preset `{preset.name}` ({preset.title}). Photos are driven by the listed driving clips; "
          "no training on the photographed person.", "", to_markdown(main_tab), to_markdown(internal)]
    md += [to_markdown(t) for t in reported]
    shown = {(t.rows[0]["source"], t.rows[0]["table"]) for t in reported}
    md += [missing_reported(s, t) + ".\n" for s, t in preset.reported.get(PROTOCOL, ()) if (s, t) not in shown]
    with atomic_write(out_md, "w") as fh:
        fh.write("\n".join(md))
    with atomic_write(out_csv, "w") as fh:
        csv.writer(fh, lineterminator="\n").writerows(to_csv_rows(main_tab))
    with atomic_write(out_internal, "w") as fh:
        csv.writer(fh, lineterminator="\n").writerows(to_csv_rows(internal))
    with atomic_write(out_tex, "w") as fh:
        fh.write("\n".join(to_latex(t) for t in [main_tab, internal, *reported]))
    return main_tab, internal


def main(argv=None) -> int:
    """CLI entry point (see module docstring)."""
    ap = argparse.ArgumentParser(prog="python -m pipeline.oneshot.table", description=__doc__.splitlines()[0])
    ap.add_argument("--metrics", nargs="+", required=True, help="one-shot metric JSONs")
    ap.add_argument("--reported", default=None, help="reported_numbers.csv")
    ap.add_argument("--methods", nargs="*", default=[], help="preferred row order")
    ap.add_argument("--out-md", required=True)
    ap.add_argument("--out-csv", required=True)
    ap.add_argument("--out-internal", required=True)
    ap.add_argument("--out-tex", required=True)
    args = ap.parse_args(argv)
    log = setup_logging("pipeline.oneshot.table")
    tab, internal = write_oneshot_tables(args.metrics, args.reported, args.methods, args.out_md, args.out_csv,
                                         args.out_internal, args.out_tex)
    log.info("one-shot table: %d rows; internal differences: %d rows", len(tab.rows), len(internal.rows))
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
