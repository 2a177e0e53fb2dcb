"""End to end through Snakemake: the sample identity's dataset (built once per session), the
static_frame baseline and an external video cut from the sample, the metrics rule, then the
aggregate / tables / plots / report rules. No training (``train.methods: []``) keeps it cheap."""
from __future__ import annotations

import csv
import json
import re
import subprocess

import pytest
import yaml

from tests.conftest import SAMPLE_VIDEO, run_snakemake


@pytest.mark.slow
def test_baselines_reach_tables_and_report(sample_workdir, tmp_path):
    wd = sample_workdir
    clip = tmp_path / "other.mp4"  # the last 1.1 s of the sample: roughly its validation split
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-ss", "10.9", "-t", "1.1", "-i", str(SAMPLE_VIDEO),
                    "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", str(clip)], check=True)
    cfg = yaml.safe_load((wd / "config.yaml").read_text())
    cfg["train"]["methods"] = []
    cfg["baselines"] = {"static_frame": True,
                        "external": [{"method": "other_system", "identity": "German", "test": "self",
                                      "video": str(clip)}]}
    overlay = tmp_path / "config.yaml"
    overlay.write_text(yaml.safe_dump(cfg, sort_keys=False))
    run_snakemake(wd, "results/report/index.html", *(f"results/tables/{p}.{e}" for p in ("self_driven", "cross_driven")
                                                    for e in ("md", "csv", "tex")),
                  args=(f"--configfile={overlay}",))  # "=": the flag takes several values
    tables = wd / "results" / "tables"
    rows = list(csv.DictReader(open(tables / "self_driven.csv")))
    measured = {r["method"]: r for r in rows if r["kind"] == "measured"}
    assert set(measured) == {"static_frame", "other_system"}
    assert any(r["kind"] == "reported" for r in rows)
    for r in measured.values():  # PSNR needs no weights: a real number for both
        assert re.fullmatch(r"\*?\*?\d+\.\d\d\*?\*?", r["psnr"]), r
    # every measured row states how it was measured: resolution and compositing columns, and each
    # cell measured off the papers' backend names its backend in a footnote of the report too
    assert measured["static_frame"]["resolution"] == "512x512" and measured["static_frame"]["compositing"] == "full"
    assert measured["static_frame"]["training"] == "none (baseline)" and measured["other_system"]["training"] == "?"
    cross = list(csv.DictReader(open(tables / "cross_driven.csv")))
    assert {r["method"] for r in cross} == {"static_frame"}
    assert {c.split(":")[0] for c in cross[0] if ":" in c} == set(cfg["render"]["cross_driven"])
    page = wd / "results" / "report" / "index.html"
    text = page.read_text()
    assert "<th>Resolution</th><th>Compositing</th><th>Training</th>" in text
    lmd_backend = json.loads((wd / "results/metrics/static_frame/German/self.json").read_text())["metrics"]["lmd"]["backend"]
    if not lmd_backend.startswith("FAN"):  # no FAN weights (offline): the report says which detector
        assert f"LMD: measured with {lmd_backend.split(' (')[0]}, not FAN" in text
    assert "media/German/self/ground_truth.mp4" in text and "media/German/self/other_system.mp4" in text
    for src in re.findall(r"<source src='([^']+)'", text):
        assert (page.parent / src).is_file(), src
