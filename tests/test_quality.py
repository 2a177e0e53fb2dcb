"""Model quality on a real identity other than the sample (docs/quality.md): a regression guard of
the fixes of the multi-identity quality benchmark, at smoke scale, plus the benchmark's own parts."""
from __future__ import annotations

import json

import numpy as np
import pytest

from tests.conftest import make_workdir, require_shared, run_snakemake

#: margin (dB) by which the val PSNR must beat the mean-colour baseline at smoke scale. Measured
#: 25.55 dB against 13.31 dB on May_5s (rad_nerf, smoke profile with 300 head and 400 torso steps,
#: 64 px); with the smoke profile's 10 torso steps it was 15.07 dB. A model that ghosts or loses
#: the head falls towards the baseline's level.
SMOKE_MARGIN_DB = 8.0


@pytest.mark.slow
def test_real_identity_beats_the_mean_colour_baseline(tmp_path):
    """May_5s (another speaker, a moving head): dataset by the rules, rad_nerf at smoke scale, the
    validation frames scored by the quality benchmark's own scorer."""
    from pipeline.train.quality import train_and_score

    video = require_shared("identities", "May_5s.mp4")
    wd = make_workdir(tmp_path / "may", identities=[("May", str(video))])
    run_snakemake(wd, "results/data/May/manifest.json", timeout=1200)
    rec = train_and_score("rad_nerf", wd / "results" / "data" / "May", tmp_path / "model",
                          {"profile": "smoke", "overrides": {"head_steps": 300, "torso_steps": 400, "val_frames": 4}})
    assert rec["frames"] == 4 and np.isfinite(rec["psnr"]) and np.isfinite(rec["baseline_psnr"])
    assert rec["psnr"] > rec["baseline_psnr"] + SMOKE_MARGIN_DB, json.dumps(rec, default=str)[:2000]
    assert rec["psnr_head"] is not None and rec["ssim"] > 0.5


def test_identity_names_and_head_box():
    from pathlib import Path

    from pipeline.train.quality import head_box, identity_name

    assert identity_name(Path("longhair_pt_14s.mp4")) == "longhair_pt"
    assert identity_name(Path("obama_dnc2020_64s.mp4")) == "obama_dnc2020"
    assert identity_name(Path("Macron.mp4")) == "Macron"
    lab = np.zeros((100, 80), np.uint8)
    lab[20:40, 30:50] = 1                              # head rows 20..39, cols 30..49 (20 x 20)
    assert head_box(lab) == (18, 42, 28, 52)           # grown by 10 % (2 px) on each side
    lab[:] = 0
    assert head_box(lab) is None


def test_quality_page_keeps_the_sections_of_runs_measured_elsewhere(tmp_path):
    """Regenerating docs/quality.md from a work folder that holds one run label rewrites that
    section and keeps every other label's section verbatim, in its place."""
    import json

    from pipeline.train.quality import write_doc

    doc = tmp_path / "quality.md"
    doc.write_text("# page\n\n<!-- quality:begin (generated) -->\n\n### `old`\n\n| a |\n\n"
                   "### `mine`\n\nstale\n\n### `later`\n\nkept\n<!-- quality:end -->\n\nafter\n")
    rec = {"method": "rad_nerf", "profile": "quick", "overrides": {}, "resolution": [128, 128], "steps": {"head": 1},
           "note": "fresh", "psnr": 27.5, "ssim": 0.9, "psnr_head": 26.0, "ssim_head": 0.8, "lmd": 2.0,
           "lmd_face": 2.5, "baseline_psnr": 12.0, "train_seconds": {"total": 61.0}, "finished": "x"}
    run = tmp_path / "work" / "runs" / "mine" / "rad_nerf" / "May.json"
    run.parent.mkdir(parents=True)
    run.write_text(json.dumps(rec))
    write_doc(tmp_path / "work", doc, tmp_path / "assets")
    text = doc.read_text()
    assert text.index("### `old`") < text.index("### `mine`") < text.index("### `later`")
    assert "stale" not in text and "| May | rad_nerf | 27.50 | 0.900 |" in text
    assert "| a |" in text and "kept" in text and text.endswith("<!-- quality:end -->\n\nafter\n")

    # the same label measured for another identity in another work folder: both rows stay
    (tmp_path / "other" / "runs" / "mine" / "er_nerf").mkdir(parents=True)
    (tmp_path / "other" / "runs" / "mine" / "er_nerf" / "Trump.json").write_text(json.dumps({**rec, "method": "er_nerf", "psnr": 30.0}))
    write_doc(tmp_path / "other", doc, tmp_path / "assets")
    text = doc.read_text()
    assert "| May | rad_nerf | 27.50 | 0.900 |" in text and "| Trump | er_nerf | 30.00 | 0.900 |" in text
    assert text.index("| May | rad_nerf |") < text.index("| Trump | er_nerf |") and text.count("### `mine`") == 1
    # a row measured again here replaces the page's row
    (tmp_path / "other" / "runs" / "mine" / "er_nerf" / "May.json").write_text(json.dumps({**rec, "method": "rad_nerf", "psnr": 28.0}))
    write_doc(tmp_path / "other", doc, tmp_path / "assets")
    text = doc.read_text()
    assert "| May | rad_nerf | 28.00 |" in text and "| May | rad_nerf | 27.50 |" not in text
