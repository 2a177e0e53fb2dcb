"""Model quality on a real identity other than the sample (docs/quality.md): a regression guard of
the fixes of the multi-identity quality benchmark, at smoke scale, plus the benchmark's own parts."""
from __future__ import annotations

import json
import re

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
    # the error budget of the same panels: every region's share, summing to the whole error
    shares = rec["error_budget"]["share"]
    assert set(shares) == {"head", "neck", "torso", "outline", "background"}
    assert abs(sum(shares.values()) - 1) < 1e-9 and shares["head"] > 0.05
    refs = rec["body_references"]
    assert refs["pixels"] > 0 and all(np.isfinite(refs[k]) for k in ("model", "mean_train_frame", "nearest_pose_frame"))
    heads = rec["head_references"]
    assert heads["pixels"] > 0 and all(np.isfinite(heads[k]) for k in ("model", "nearest_head_frame",
                                                                       "nearest_head_frames"))
    # how sharp, at the smoke profile's 64 px: a blur of the ground truth between none and the largest
    blur = rec["blur_equivalent"]
    assert blur["sigma"] is not None and 0.3 < blur["sigma"] < 4.0, blur
    curve = blur["psnr_blurred"]
    assert curve["0.5"] > curve["1"] > curve["2"]
    # its pooled PSNR is the error budget's, region by region weighted by area
    eb = rec["error_budget"]
    pooled = sum(eb["area"][k] * (eb["mse"][k] or 0.0) for k in eb["area"])
    assert abs(blur["psnr_rendered"] + 10 * np.log10(pooled)) < 1e-6

    # --rescore: the same model scored again in a benchmark work folder gives the same scores and
    # keeps the record's own fields
    from pipeline.train.quality import rescore

    bench = tmp_path / "bench"
    (bench / "results" / "data").mkdir(parents=True)
    (bench / "results" / "data" / "May").symlink_to(wd / "results" / "data" / "May")
    (bench / "models" / "lab" / "rad_nerf").mkdir(parents=True)
    (bench / "models" / "lab" / "rad_nerf" / "May").symlink_to(tmp_path / "model")
    stale = {**rec, "psnr": 0.0, "error_budget": None, "note": "kept"}
    (bench / "runs" / "lab" / "rad_nerf").mkdir(parents=True)
    (bench / "runs" / "lab" / "rad_nerf" / "May.json").write_text(json.dumps(stale, default=str))
    (again,) = rescore(bench, "lab")
    assert again["psnr"] == rec["psnr"] and again["error_budget"] == rec["error_budget"] and again["note"] == "kept"
    assert json.loads((bench / "runs" / "lab" / "rad_nerf" / "May.json").read_text())["psnr"] == rec["psnr"]


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
    assert "overrides `{}`" in text and "; fresh\n" in text          # one setup: stated once

    # methods of one label run differently: the setup line states each method's overrides and note
    (tmp_path / "other" / "runs" / "mine" / "er_nerf" / "Trump.json").write_text(
        json.dumps({**rec, "method": "er_nerf", "overrides": {"seed": 1}, "note": "copied"}))
    write_doc(tmp_path / "other", doc, tmp_path / "assets")
    line = next(x for x in doc.read_text().splitlines() if x.startswith("profile `quick`"))
    assert 'overrides `er_nerf: {"seed": 1}; rad_nerf: {}`' in line and line.endswith("; er_nerf: copied; rad_nerf: fresh")


def test_error_budget_by_parsing_region_hand_computed():
    """One 8x8 frame: a squared error of 0.25 on a head pixel, 0.04 on a torso pixel, 0.09 on a
    background pixel beside the person (outline) and 0.01 on a far background pixel."""
    from pipeline.train.quality import error_budget

    lab = np.zeros((1, 8, 8), np.uint8)
    lab[0, 0:3, 0:3] = 1                                    # head, 9 px
    lab[0, 3, 0:3] = 2                                      # neck, 3 px
    lab[0, 4:6, 0:3] = 3                                    # torso, 6 px
    gt = np.full((1, 8, 8, 3), 0.5)
    pred = gt.copy()
    pred[0, 1, 1] += 0.5                                    # head: 0.25
    pred[0, 5, 2] -= 0.2                                    # torso: 0.04
    pred[0, 2, 3] += 0.3                                    # background next to the head: outline, 0.09
    pred[0, 7, 7] -= 0.1                                    # far background: 0.01
    eb = error_budget(pred, gt, lab, outline_px=1)
    total = 0.25 + 0.04 + 0.09 + 0.01
    want = {"head": 0.25, "neck": 0.0, "torso": 0.04, "outline": 0.09, "background": 0.01}
    for k, v in want.items():
        assert abs(eb["share"][k] - v / total) < 1e-9, k
    outline_area = 7 * 4 - 18            # the person (rows 0-5, cols 0-2) grown by 1 px: rows 0-6, cols 0-3, less itself
    assert abs(eb["area"]["outline"] - outline_area / 64) < 1e-9
    assert abs(eb["mse"]["head"] - 0.25 / 9) < 1e-12 and eb["mse"]["neck"] == 0.0
    assert abs(eb["mse"]["background"] - 0.01 / (64 - 18 - outline_area)) < 1e-12
    assert error_budget(gt, gt, lab)["share"]["head"] == 0.0        # a perfect render: no error to share
    with pytest.raises(ValueError):
        error_budget(pred, gt, lab[:, :4])


def test_body_references_hand_computed():
    """Two 1x2 training frames; the validation frame's pose is nearest the second one."""
    from pipeline.train.quality import body_references

    lab = np.array([[[3, 0]]], np.uint8)                   # one torso pixel, one background pixel
    gt = np.array([[[[0.6, 0.6, 0.6], [0.0, 0.0, 0.0]]]])
    pred = np.array([[[[0.5, 0.5, 0.5], [1.0, 1.0, 1.0]]]])  # the background error does not count
    train = np.array([[[[0.2, 0.2, 0.2], [0.0] * 3]], [[[0.8, 0.8, 0.8], [0.0] * 3]]])
    poses = np.array([[0, 0, 0, 0, 0, 0], [1, 0, 0, 2, 0, 0]], float)
    refs = body_references(pred, gt, lab, np.array([[0.9, 0, 0, 1.5, 0, 0]]), train, poses)
    assert refs["pixels"] == 1
    assert abs(refs["model"] - 0.01) < 1e-12                # (0.5 - 0.6)^2
    assert abs(refs["mean_train_frame"] - 0.01) < 1e-12     # mean 0.5
    assert abs(refs["nearest_pose_frame"] - 0.04) < 1e-12   # the second frame, 0.8
    # the oracle: both training frames averaged (0.5), or the one nearest the truth (0.8)
    assert abs(refs["nearest_body_frames"] - 0.01) < 1e-12 and refs["oracle_k"] == 5
    one = body_references(pred, gt, lab, np.zeros((1, 6)), train, poses, oracle_k=1)
    assert abs(one["nearest_body_frames"] - 0.04) < 1e-12
    # full frame with the body replaced: ((0.8-0.6)^2 + (1-0)^2) / 2 per channel
    assert abs(one["psnr_oracle_body"] - (-10 * np.log10(0.52))) < 1e-9
    assert abs(refs["psnr_oracle_body"] - (-10 * np.log10((0.01 + 1) / 2))) < 1e-9
    none = body_references(pred, gt, np.zeros_like(lab), np.zeros((1, 6)), train, poses)
    assert none["model"] is None and none["psnr_oracle_body"] is None and none["pixels"] == 0
    with pytest.raises(ValueError, match="oracle_k"):
        body_references(pred, gt, lab, np.zeros((1, 6)), train, poses, oracle_k=0)


def test_head_references_hand_computed():
    """Three 1x3 training frames; the head pixels' nearest one chosen with the ground truth."""
    from pipeline.train.quality import head_references

    lab = np.array([[[1, 1, 3]]], np.uint8)                 # two head pixels; the torso pixel does not count
    gt = np.array([[[[0.6] * 3, [0.4] * 3, [0.0] * 3]]])
    pred = np.array([[[[0.5] * 3, [0.4] * 3, [1.0] * 3]]])
    train = np.array([[[[0.2] * 3, [0.2] * 3, [0.6] * 3]],      # head MSE (0.16 + 0.04) / 2 = 0.10
                      [[[0.7] * 3, [0.4] * 3, [0.0] * 3]],      # (0.01 + 0) / 2 = 0.005: the nearest
                      [[[0.9] * 3, [0.9] * 3, [0.6] * 3]]])     # (0.09 + 0.25) / 2 = 0.17
    refs = head_references(pred, gt, lab, train, oracle_k=2)
    assert refs["pixels"] == 2 and refs["oracle_k"] == 2
    assert abs(refs["model"] - 0.005) < 1e-12                # ((0.5 - 0.6)^2 + 0) / 2
    assert abs(refs["nearest_head_frame"] - 0.005) < 1e-12
    # the mean of the two nearest (frames 1 and 0): 0.45 and 0.3 -> (0.0225 + 0.01) / 2
    assert abs(refs["nearest_head_frames"] - 0.01625) < 1e-12
    none = head_references(pred, gt, np.zeros_like(lab), train)
    assert none["model"] is None and none["pixels"] == 0
    with pytest.raises(ValueError, match="oracle_k"):
        head_references(pred, gt, lab, train, oracle_k=0)


def test_reach_hand_computed():
    """The pooled PSNR with the sample's head and the oracle body, from the records' numbers."""
    from pipeline.train.quality import reach

    area = {"head": 0.3, "neck": 0.05, "torso": 0.15, "outline": 0.1, "background": 0.4}
    rec = {"error_budget": {"area": area, "mse": {"head": 0.002, "neck": 0.005, "torso": 0.004,
                                                   "outline": 0.003, "background": 0.0}},
           "body_references": {"nearest_body_frames": 0.0015}}
    sample = {"error_budget": {"mse": {"head": 0.0008}}}
    out = reach(rec, sample)
    rendered = 0.3 * 0.002 + 0.05 * 0.005 + 0.15 * 0.004 + 0.1 * 0.003          # 0.00175
    assert abs(out["rendered"] + 10 * np.log10(rendered)) < 1e-9
    head = rendered - 0.3 * 0.002 + 0.3 * 0.0008                                   # 0.00139
    assert abs(out["sample_head"] + 10 * np.log10(head)) < 1e-9
    both = 0.3 * 0.0008 + 0.2 * 0.0015 + 0.1 * 0.003                               # 0.00084
    assert abs(out["sample_head_oracle_body"] + 10 * np.log10(both)) < 1e-9
    assert reach(rec, None) == {"rendered": out["rendered"], "sample_head": None, "sample_head_oracle_body": None}
    assert reach({"error_budget": {"share": {}}}, sample) is None          # a record from before the areas


def test_quality_page_error_budget_table_keeps_rows_measured_elsewhere(tmp_path):
    """The error-budget table of a label: a row per record that has one, rows of other work
    folders kept, and the scores table's rows untouched by it."""
    from pipeline.train.quality import write_doc

    doc = tmp_path / "quality.md"
    base = {"method": "rad_nerf", "profile": "quick", "overrides": {}, "resolution": [128, 128], "steps": {"head": 1},
            "note": "n", "psnr": 27.5, "ssim": 0.9, "psnr_head": 26.0, "ssim_head": 0.8, "lmd": 2.0,
            "lmd_face": 2.5, "baseline_psnr": 12.0, "train_seconds": {"total": 61.0}, "finished": "x",
            "error_budget": {"share": {"head": 0.25, "neck": 0.1, "torso": 0.5, "outline": 0.12, "background": 0.03}},
            "body_references": {"model": 0.0085, "mean_train_frame": 0.0064, "nearest_pose_frame": 0.0066,
                                "nearest_body_frames": 0.0015, "psnr_oracle_body": 28.314}}
    for wd, ident in (("a", "May"), ("b", "Trump")):
        run = tmp_path / wd / "runs" / "lab" / "rad_nerf" / f"{ident}.json"
        run.parent.mkdir(parents=True)
        run.write_text(json.dumps(base))
        write_doc(tmp_path / wd, doc, tmp_path / "assets")
    text = doc.read_text()
    assert "| May | rad_nerf | 25 | 10 | 50 | 12 | 3 | 0.0085 / 0.0064 / 0.0066 / 0.0015 | 28.31 |" in text
    assert "| Trump | rad_nerf | 25 | 10 | 50 | 12 | 3 | 0.0085 / 0.0064 / 0.0066 / 0.0015 | 28.31 |" in text
    assert "| May | rad_nerf | 27.50 |" in text and "| Trump | rad_nerf | 27.50 |" in text
    assert text.count("| identity | method | head | neck |") == 1
    # measured again without a budget (an older scorer): its page row goes, the other stays
    plain = {k: v for k, v in base.items() if k not in ("error_budget", "body_references")}
    (tmp_path / "a" / "runs" / "lab" / "rad_nerf" / "May.json").write_text(json.dumps(plain))
    write_doc(tmp_path / "a", doc, tmp_path / "assets")
    text = doc.read_text()
    assert "| May | rad_nerf | 25 |" not in text and "| Trump | rad_nerf | 25 | 10 | 50 |" in text
    # a page written before the oracle columns: its rows stay, with n/a in the new cells
    old = text.replace(" / 0.0015 | 28.31 |", " |")
    assert "| Trump | rad_nerf | 25 | 10 | 50 | 12 | 3 | 0.0085 / 0.0064 / 0.0066 |" in old
    doc.write_text(old)
    write_doc(tmp_path / "a", doc, tmp_path / "assets")
    assert "| Trump | rad_nerf | 25 | 10 | 50 | 12 | 3 | 0.0085 / 0.0064 / 0.0066 / n/a | n/a |" in doc.read_text()


def test_quality_page_head_references_table(tmp_path):
    """The head-references table: each run's head MSEs and its pooled PSNR with the head of the
    sample's run of the same method; a row measured in another work folder is kept."""
    from pipeline.train.quality import SAMPLE, write_doc

    doc = tmp_path / "quality.md"
    area = {"head": 0.3, "neck": 0.05, "torso": 0.15, "outline": 0.1, "background": 0.4}

    def record(head_mse):
        return {"method": "rad_nerf", "profile": "quick", "overrides": {}, "resolution": [128, 128],
                "steps": {"head": 1}, "note": "n", "psnr": 27.5, "ssim": 0.9, "psnr_head": 26.0, "ssim_head": 0.8,
                "lmd": 2.0, "lmd_face": 2.5, "baseline_psnr": 12.0, "train_seconds": {"total": 61.0}, "finished": "x",
                "error_budget": {"share": dict.fromkeys(area, 0.2), "area": area,
                                 "mse": {"head": head_mse, "neck": 0.005, "torso": 0.004, "outline": 0.003,
                                         "background": 0.0}},
                "body_references": {"model": 0.0042, "mean_train_frame": 0.006, "nearest_pose_frame": 0.0066,
                                    "nearest_body_frames": 0.0015, "psnr_oracle_body": 29.3},
                "head_references": {"model": head_mse, "nearest_head_frame": 0.0026, "nearest_head_frames": 0.0021,
                                    "oracle_k": 5, "pixels": 100}}

    for wd, ident, head_mse in (("a", SAMPLE[0], 0.0008), ("a", "longhair_pt", 0.002), ("b", "May", 0.001)):
        run = tmp_path / wd / "runs" / "lab" / "rad_nerf" / f"{ident}.json"
        run.parent.mkdir(parents=True, exist_ok=True)
        run.write_text(json.dumps(record(head_mse)))
    write_doc(tmp_path / "b", doc, tmp_path / "assets")   # May alone (0.00145 pooled): no sample in its folder
    assert "| May | rad_nerf | 0.0010 / 0.0026 / 0.0021 | 28.39 | n/a | n/a |" in doc.read_text()
    write_doc(tmp_path / "a", doc, tmp_path / "assets")
    text = doc.read_text()
    # 0.00175 as rendered (test_reach_hand_computed), 0.00139 with the sample's head, 0.00084 with the oracle body too
    assert "| longhair_pt | rad_nerf | 0.0020 / 0.0026 / 0.0021 | 27.57 | 28.57 | 30.76 |" in text
    assert f"| {SAMPLE[0]} | rad_nerf | 0.0008 / 0.0026 / 0.0021 |" in text
    assert "| May | rad_nerf | 0.0010 / 0.0026 / 0.0021 | 28.39 | n/a | n/a |" in text   # kept from "b"
    assert text.count("| identity | method | head MSE: render /") == 1


def test_targets_table_from_the_page(tmp_path):
    """The targets block: per (identity, method) the val PSNR of each label, the mean, the 26 dB
    check, the gap to the sample of the same method (hand-computed) and the oracle column; written
    between its markers, rewritten in place, and refused for a label the page lacks."""
    from pipeline.train.quality import TARGETS_BEGIN, write_doc, write_targets

    doc = tmp_path / "quality.md"
    body = {"error_budget": {"share": {"head": 0.25, "neck": 0.1, "torso": 0.5, "outline": 0.12, "background": 0.03}}}
    base = {"profile": "quick", "overrides": {}, "resolution": [128, 128], "steps": {"head": 1}, "note": "n",
            "ssim": 0.9, "psnr_head": 26.0, "ssim_head": 0.8, "lmd": 2.0, "lmd_face": 2.5, "baseline_psnr": 12.0,
            "train_seconds": {"total": 61.0}, "finished": "x"}
    psnrs = {"s0": {("German", "rad_nerf"): 30.0, ("longhair_pt", "rad_nerf"): 25.9, ("May", "rad_nerf"): 28.0},
             "s1": {("German", "rad_nerf"): 31.0, ("longhair_pt", "rad_nerf"): 26.5}}
    for label, rows in psnrs.items():
        for (ident, method), v in rows.items():
            run = tmp_path / "w" / "runs" / label / method / f"{ident}.json"
            run.parent.mkdir(parents=True, exist_ok=True)
            refs = {"model": 0.005, "mean_train_frame": 0.006, "nearest_pose_frame": 0.007,
                    "nearest_body_frames": 0.001, "psnr_oracle_body": v + 2.0}
            run.write_text(json.dumps({**base, **body, "method": method, "psnr": v, "body_references": refs}))
    write_doc(tmp_path / "w", doc, tmp_path / "assets")
    write_targets(doc, ["s0", "s1"], sample="German")
    text = doc.read_text()
    assert text.index(TARGETS_BEGIN) < text.index("<!-- quality:begin")
    # German mean 30.5; longhair mean 26.2 -> 4.30 below; May only in s0: 28.0 -> 2.50 below
    assert "| German | rad_nerf | 30.00 | 31.00 | 30.50 | yes | (the sample) | 32.50 |" in text
    assert "| longhair_pt | rad_nerf | 25.90 | 26.50 | 26.20 | yes | 4.30 **(more than 3)** | 28.20 |" in text
    assert "| May | rad_nerf | 28.00 | n/a | 28.00 (1 runs) | yes | 2.50 | 30.00 |" in text
    # rewritten in place, not appended twice; a failing target is marked
    (tmp_path / "w" / "runs" / "s1" / "rad_nerf" / "longhair_pt.json").write_text(json.dumps(
        {**base, **body, "method": "rad_nerf", "psnr": 25.0, "body_references": refs}))
    write_doc(tmp_path / "w", doc, tmp_path / "assets")
    write_targets(doc, ["s0", "s1"], sample="German")
    text = doc.read_text()
    assert text.count(TARGETS_BEGIN) == 1
    assert "| longhair_pt | rad_nerf | 25.90 | 25.00 | 25.45 | **no** | 5.05 **(more than 3)** |" in text
    # a mean that rounds to 26.00 but misses it: shown with its third decimal, and not met
    for label, v in (("s1", 26.05), ("s2", 26.04)):                 # (25.90 + 26.05 + 26.04) / 3 = 25.9967
        run = tmp_path / "w" / "runs" / label / "rad_nerf" / "longhair_pt.json"
        run.parent.mkdir(parents=True, exist_ok=True)
        run.write_text(json.dumps({**base, **body, "method": "rad_nerf", "psnr": v, "body_references": refs}))
    write_doc(tmp_path / "w", doc, tmp_path / "assets")
    write_targets(doc, ["s0", "s1", "s2"], sample="German")
    text = doc.read_text()
    assert "| longhair_pt | rad_nerf | 25.90 | 26.05 | 26.04 | 25.997 | **no** |" in text
    assert "| German | rad_nerf | 30.00 | 31.00 | n/a | 30.50 (2 runs) | yes |" in text
    # the intro says how every cell was measured
    assert "full frame at the training resolution 128x128 px, profile `quick`, steps {'head': 1}" in text
    with pytest.raises(ValueError, match="nope"):
        write_targets(doc, ["s0", "nope"])
    with pytest.raises(ValueError, match="sample"):
        write_targets(doc, ["s0"], sample="Obama")
    # a label measured at another resolution is never averaged with the others
    run = tmp_path / "w" / "runs" / "r256" / "rad_nerf" / "German.json"
    run.parent.mkdir(parents=True)
    run.write_text(json.dumps({**base, **body, "resolution": [256, 256], "method": "rad_nerf", "psnr": 29.0,
                               "body_references": refs}))
    write_doc(tmp_path / "w", doc, tmp_path / "assets")
    with pytest.raises(ValueError, match="measured differently.*256x256"):
        write_targets(doc, ["s0", "r256"], sample="German")
    # nor one trained on another device (scripts/gpu_quality.sh); its own table says where, and its
    # overrides besides the seed
    run = tmp_path / "w" / "runs" / "gpu" / "rad_nerf" / "German.json"
    run.parent.mkdir(parents=True)
    run.write_text(json.dumps({**base, **body, "method": "rad_nerf", "psnr": 31.5, "body_references": refs,
                               "device": "NVIDIA H200", "overrides": {"rays_per_step": 4096, "seed": 1}}))
    write_doc(tmp_path / "w", doc, tmp_path / "assets")
    with pytest.raises(ValueError, match="measured differently.*s0: .* trained on cpu; gpu: .* trained on NVIDIA H200"):
        write_targets(doc, ["s0", "gpu"], sample="German")
    write_targets(doc, ["gpu"], sample="German")
    assert ("steps {'head': 1}, overrides besides the seed `{\"rays_per_step\": 4096}`, trained on NVIDIA H200; "
            "runs `gpu`;") in doc.read_text()
    # one table per group (the CLI's repeated --targets): each group averaged on its own, in the order
    # given, in one block; groups measured differently may stand side by side
    import torch

    from pipeline.train.benchmark import main

    threads = torch.get_num_threads()       # main() sets torch's threads for the process
    try:
        assert main(["--quality", "--targets", "s0", "s1", "--targets", "gpu", "--workdir", str(tmp_path / "w"),
                     "--doc", str(doc)]) == 0
    finally:
        torch.set_num_threads(threads)
    text = doc.read_text()
    block = text.split(TARGETS_BEGIN, 1)[1].split("<!-- targets:end", 1)[0]
    assert text.count(TARGETS_BEGIN) == 1 and block.count("| identity | method |") == 2
    assert block.index("runs `s0`, `s1`;") < block.index("runs `gpu`;")
    assert "| German | rad_nerf | 30.00 | 31.00 | 30.50 | yes | (the sample) |" in block
    assert "| German | rad_nerf | 31.50 | 31.50 | yes | (the sample) |" in block
    with pytest.raises(ValueError, match="no labels"):
        write_targets(doc, [["s0"], []], sample="German")


def test_targets_caption_drops_the_seed_from_every_override_set():
    """The caption's overrides (a section's setup line, :func:`_per_method`'s format) lose the
    ``seed`` key in a plain JSON, in each method's part and in each of a method's sets joined by
    `` / ``; sets equal without it are written once; text that is not JSON is kept as it is."""
    from pipeline.train.quality import _without_seed

    assert _without_seed('{"head_steps": 4200, "seed": 1}') == '{"head_steps": 4200}'
    assert _without_seed('{"seed": 1}') == "{}"
    assert (_without_seed('er_nerf: {"seed": 1}; rad_nerf: {"rays_per_step": 4096, "seed": 1} / {"seed": 2}')
            == 'er_nerf: {}; rad_nerf: {"rays_per_step": 4096} / {}')
    assert _without_seed('rad_nerf: {"seed": 1} / {"seed": 2}') == "rad_nerf: {}"
    assert _without_seed("rad_nerf: not json") == "rad_nerf: not json"


def _sample_frames(n: int = 3, side: int = 128) -> np.ndarray:
    """``n`` real frames of the sample clip, 10 frames apart, at ``side`` px: [n, side, side, 3] in [0, 1]."""
    import cv2

    from tests.conftest import SAMPLE_VIDEO

    cap = cv2.VideoCapture(str(SAMPLE_VIDEO))
    out = []
    for i in range(10 * n):
        ok, img = cap.read()
        assert ok, SAMPLE_VIDEO
        if i % 10 == 0:
            img = cv2.resize(cv2.cvtColor(img, cv2.COLOR_BGR2RGB), (side, side), interpolation=cv2.INTER_AREA)
            out.append(img.astype(np.float64) / 255)
    cap.release()
    return np.stack(out)


def test_blur_equivalent_on_real_frames():
    """The blur of the ground truth with the render's error: real frames of the sample; the
    blurred ground truth's PSNR against scipy's Gaussian filter (the reference the scikit-image
    filter wraps), a render that is the ground truth blurred by a known sigma found again, the
    linear interpolation between two blurs by hand, and the edge cases."""
    from scipy.ndimage import gaussian_filter

    from pipeline.train.quality import blur_equivalent

    gt = _sample_frames()
    out = blur_equivalent(gt, gt)
    assert out["sigma"] == 0.0 and out["psnr_rendered"] == float("inf") and not out["beyond"]
    for s in (0.5, 1.0, 2.0):
        ref = np.stack([gaussian_filter(g, sigma=(s, s, 0), mode="nearest", truncate=4.0) for g in gt])
        assert abs(out["psnr_blurred"][f"{s:g}"] + 10 * np.log10(((ref - gt) ** 2).mean())) < 1e-6
    # a stronger blur costs more: 0.5 px cost the sample's 128-px frames about 42 dB, 2 px under 30
    p = out["psnr_blurred"]
    assert p["0.5"] > p["1"] > p["2"] and p["0.5"] > 38 and p["2"] < 30
    # a render that is the ground truth blurred by 1.25 px: found again between the grid's 1.2 and 1.3
    render = np.stack([gaussian_filter(g, sigma=(1.25, 1.25, 0), mode="nearest", truncate=4.0) for g in gt])
    assert abs(blur_equivalent(render, gt)["sigma"] - 1.25) < 0.02
    # by hand: a render whose squared error lies halfway between those of the 1 and 2 px blurs is 1.5 px
    e1, e2 = (10 ** (-p[k] / 10) for k in ("1", "2"))
    half = blur_equivalent(gt + np.sqrt((e1 + e2) / 2), gt, sigmas=(1.0, 2.0))
    assert abs(half["sigma"] - 1.5) < 1e-9
    # an error beyond the largest blur has no equivalent, and says so
    far = blur_equivalent(gt + 0.5, gt, sigmas=(1.0, 2.0))
    assert far["sigma"] is None and far["beyond"]
    with pytest.raises(ValueError, match="differ"):
        blur_equivalent(gt[:, :64], gt)
    with pytest.raises(ValueError, match="positive"):
        blur_equivalent(gt, gt, sigmas=(0.0, 1.0))


def test_quality_page_sharpness_table_and_targets_column(tmp_path):
    """The sharpness table of a label (one row per record, `> max` where the render's error has no
    equivalent) and the targets table's mean blur-equivalent sigma."""
    from pipeline.train.quality import write_doc, write_targets

    doc = tmp_path / "quality.md"
    base = {"method": "rad_nerf", "profile": "quick", "overrides": {}, "resolution": [128, 128], "steps": {"head": 1},
            "note": "n", "ssim": 0.9, "psnr_head": 26.0, "ssim_head": 0.8, "lmd": 2.0, "lmd_face": 2.5,
            "baseline_psnr": 12.0, "train_seconds": {"total": 61.0}, "finished": "x"}
    curve = {"0.5": 41.94, "1": 32.37, "2": 25.0, "4": 20.0}
    for label, ident, psnr, sigma in (("s0", "German", 33.3, 0.9), ("s1", "German", 33.1, 1.1),
                                      ("s0", "obama_dnc2020", 18.0, None)):
        run = tmp_path / "w" / "runs" / label / "rad_nerf" / f"{ident}.json"
        run.parent.mkdir(parents=True, exist_ok=True)
        be = {"psnr_rendered": psnr - 0.2, "psnr_blurred": curve, "sigma": sigma, "beyond": sigma is None}
        run.write_text(json.dumps({**base, "psnr": psnr, "blur_equivalent": be}))
    write_doc(tmp_path / "w", doc, tmp_path / "assets")
    text = doc.read_text()
    assert "| German | rad_nerf | 41.94 | 32.37 | 25.00 | 33.10 | 0.90 |" in text
    assert "| obama_dnc2020 | rad_nerf | 41.94 | 32.37 | 25.00 | 17.80 | > 4 |" in text
    assert text.count("| identity | method | ground truth blurred 0.5 px |") == 2
    write_targets(doc, ["s0", "s1"], sample="German")
    text = doc.read_text()
    assert "| German | rad_nerf | 33.30 | 33.10 | 33.20 | yes | (the sample) | n/a | 1.00 |" in text
    assert "| obama_dnc2020 | rad_nerf | 18.00 | n/a | 18.00 (1 runs) | **no** | 15.20 **(more than 3)** | n/a | n/a |" in text
    # the plot of the same records goes under the table, linked relative to the page
    from PIL import Image

    from pipeline.train.quality import TARGETS_END, blur_plot

    plot = blur_plot(tmp_path / "w", ["s0", "s1"], tmp_path / "assets" / "targets_blur.png")
    assert plot is not None and Image.open(plot).size == (880, 550)
    write_targets(doc, ["s0", "s1"], sample="German", plot=plot)
    text = doc.read_text()
    assert "runs s0, s1](assets/targets_blur.png)\n\n" + TARGETS_END in text
    assert blur_plot(tmp_path / "w", ["nope"], tmp_path / "none.png") is None and not (tmp_path / "none.png").exists()


def test_benchmark_work_folder_config_paths_are_the_projects(tmp_path):
    """Snakemake runs in the benchmark's work folder: the config's project-relative paths (the
    weights folder, where the SFM files and network weights are looked up) must still name the
    project's, or the work folder's datasets silently lack what the project has (a 3DMM fit)."""
    import yaml

    from pipeline.common.config import PROJECT_ROOT
    from pipeline.train.quality import workdir_config

    project = yaml.safe_load((PROJECT_ROOT / "config.yaml").read_text())
    cfg = workdir_config(tmp_path / "w", [("May", "/videos/May_5s.mp4")])
    assert cfg["weights_dir"] == str(PROJECT_ROOT / project["weights_dir"])
    assert (tmp_path / "w" / "identities.tsv").read_text() == "id\tvideo\n" + "May\t/videos/May_5s.mp4\n"
    assert cfg["identities"] == str(tmp_path / "w" / "identities.tsv")
    assert all(v.startswith("/") for v in cfg["render"]["cross_driven"].values())
    assert cfg["preprocess"]["threedmm"]["model_dir"] == project["preprocess"]["threedmm"]["model_dir"]  # null stays


def test_benchmark_without_a_page(tmp_path):
    """``--doc ''`` writes no page (parallel runs), and ``--targets`` then says it needs one."""
    import torch

    from pipeline.train.benchmark import main

    (tmp_path / "runs").mkdir()
    threads = torch.get_num_threads()       # main() sets torch's threads for the process: restored for later tests
    try:
        assert main(["--quality", "--rescore", "--label", "none", "--workdir", str(tmp_path), "--doc", ""]) == 0
        assert sorted(p.name for p in tmp_path.iterdir()) == ["runs"]
        with pytest.raises(SystemExit, match="--doc"):
            main(["--quality", "--targets", "x", "--workdir", str(tmp_path), "--doc", ""])
    finally:
        torch.set_num_threads(threads)


def test_a_method_that_refuses_a_dataset_gets_a_row_that_says_so(tmp_path, monkeypatch):
    """AED-NeRF refuses a clip without emotion labels: the benchmark goes on with the other runs,
    the page shows the pair as not trained with the method's own reason, and the next run of the
    label tries it again (here it trains: a stand-in record, no real numbers)."""
    from pipeline.common.errors import InputError
    from pipeline.train import quality

    data = tmp_path / "w" / "results" / "data" / "May"
    data.mkdir(parents=True)
    (data / "manifest.json").write_text("{}")
    monkeypatch.setattr(quality, "parsing_overlay", lambda *a, **k: None)
    monkeypatch.setattr(quality, "montage", lambda *a, **k: None)
    trained = {"profile": "quick", "overrides": {}, "resolution": [128, 128], "steps": {"head": 1},
               "ssim": 0.9, "psnr": 27.5, "psnr_head": 26.0, "ssim_head": 0.8, "lmd": 2.0, "lmd_face": 2.5,
               "baseline_psnr": 12.0, "train_seconds": {"total": 61.0}}

    def train(method, data_root, model_dir, cfg, reuse, score=True):
        if method == "aed_nerf":
            raise InputError(data_root / "emotion.npy", "no emotion labels (identities.tsv has no emotion column)")
        return {**trained, "method": method}

    monkeypatch.setattr(quality, "train_and_score", train)
    doc = tmp_path / "quality.md"
    recs = quality.run_quality([("May", tmp_path / "May.mp4")], ["aed_nerf", "rad_nerf"], {"profile": "quick"}, "lab",
                               tmp_path / "w", doc, tmp_path / "assets", build=False)
    assert [r["method"] for r in recs] == ["aed_nerf", "rad_nerf"] and "emotion.npy" in recs[0]["not_trained"]
    text = doc.read_text()
    assert "| May | aed_nerf | n/a (not trained) | n/a | n/a | n/a | n/a | n/a | n/a | n/a |" in text
    assert "* aed_nerf on May: " in text and "no emotion labels" in text
    assert "| May | rad_nerf | 27.50 |" in text and "profile `quick`, overrides `{}`, 128x128 px" in text
    # the next run trains the refused pair again; the measured one is kept
    monkeypatch.setattr(quality, "train_and_score", lambda method, *a, **k: {**trained, "method": method, "psnr": 20.0})
    recs = quality.run_quality([("May", tmp_path / "May.mp4")], ["aed_nerf", "rad_nerf"], {"profile": "quick"}, "lab",
                               tmp_path / "w", doc, tmp_path / "assets", build=False)
    assert [r["psnr"] for r in recs] == [20.0, 27.5]
    assert "n/a (not trained)" not in doc.read_text()
    # the targets table says the refused pair was not trained rather than giving it no runs
    from pipeline.train.quality import write_targets

    (tmp_path / "w" / "runs" / "lab" / "aed_nerf" / "May.json").write_text(json.dumps(
        {"method": "aed_nerf", "not_trained": "no labels", "overrides": {}, "note": "", "finished": "y"}))
    quality.write_doc(tmp_path / "w", doc, tmp_path / "assets")
    with pytest.raises(ValueError, match="sample"):
        write_targets(doc, ["lab"], sample="German")
    write_targets(doc, ["lab"], sample="May")
    assert "| May | aed_nerf | n/a | n/a (not trained: the reason is under the run's table) | n/a | n/a |" in doc.read_text()


def test_readme_status_table_matches_the_quality_page():
    """The README's quality status table (hand-written, "Model quality on real identities") must
    say what docs/quality.md measures: each cell equals the targets table that
    :func:`pipeline.train.quality.targets_table` computes from the page's sections (each method's
    current ``quick`` profile: rows ``ambface01_pair*`` for rad_nerf, ``mouthpair*`` for er_nerf,
    ``n3dt_ambpair*`` for nerf3dtalker; mean of seeds 0-1, dB below the sample, bold where more than
    3 dB) and the ``before`` section's val PSNR; so must the page's own summary table ("Where it
    stands"), and the README's "Known limitations" bullet on model quality (the range of the gaps
    beyond the bar, `obama_dnc2020`'s three means). A rerun of the benchmark that changes the page
    fails here until all three are updated."""
    from pathlib import Path

    from pipeline.train.quality import table_rows, targets_table, doc_sections

    root = Path(__file__).resolve().parents[1]
    page = (root / "docs" / "quality.md").read_text()
    readme = (root / "README.md").read_text()

    def cells(line: str) -> list[str]:
        return [c.strip() for c in line.strip().strip("|").split("|")]

    expected: dict[tuple[str, str], str] = {}
    for labels in (["ambface01_pair", "ambface01_pair_seed1"], ["mouthpair", "mouthpair_seed1"],
                   ["n3dt_ambpair", "n3dt_ambpair_seed1"]):
        for line in targets_table(page, labels, "German"):
            c = cells(line)
            if line.startswith("| ") and c[0] != "identity":
                mean, below = c[4], c[6]
                if below == "(the sample)":
                    expected[(c[0], c[1])] = mean
                else:
                    gap = below.split()[0]
                    expected[(c[0], c[1])] = f"{mean} ({'**' + gap + '**' if 'more than' in below else gap})"
    before = {k[0]: cells(v)[2] for k, v in table_rows(doc_sections(page)["before"]).items()
              if k[1] == "rad_nerf"}

    sec = readme.split("## Model quality on real identities", 1)[1].split("\n## ", 1)[0]
    rows = [cells(l) for l in sec.splitlines() if l.startswith("| ") and not l.startswith("| identity")]
    assert len(rows) == 8, "the README's status table lists the sample and the seven clips"
    methods = ("rad_nerf", "er_nerf", "nerf3dtalker")
    for row in rows:
        ident = row[0].split(" (")[0]
        for method, cell in zip(methods, row[1:4]):
            assert cell == expected[(ident, method)], (ident, method, cell, expected[(ident, method)])
        assert row[4] == before.get(ident, "n/a (not in that run)"), (ident, row[4])
    # the page's own summary ("Where it stands", above the benchmark) holds the same cells
    top = page.split("**Where it stands**", 1)[1].split("\n* ", 1)[0]
    rows = [cells(l) for l in top.splitlines() if l.startswith("| `")]
    assert len(rows) == 8, "the page's summary table lists the sample and the seven clips"
    for row in rows:
        ident = row[0].split("`")[1]
        for method, cell in zip(methods, row[1:4]):
            assert cell == expected[(ident, method)], (ident, method, cell, expected[(ident, method)])
    # "Known limitations" quotes the range of the gaps beyond the bar and the weakest clip's scores
    gaps = [float(v.split("**")[1]) for v in expected.values() if "**" in v]
    limits = readme.split("## Known limitations", 1)[1].split("\n## ", 1)[0]
    quoted = re.search(r"stay (\d+\.\d+)-(\d+\.\d+) dB below the sample", limits)
    assert quoted, "the Known limitations bullet on model quality quotes the gaps' range"
    assert (float(quoted[1]), float(quoted[2])) == (min(gaps), max(gaps)), quoted.group(0)
    obama = " / ".join(expected[("obama_dnc2020", m)].split()[0] for m in methods)
    assert f"narrowly: {obama} dB with" in " ".join(limits.split()), obama


def _same_dataset(a, b) -> None:
    """Every tensor and intrinsic of two :class:`pipeline.train.data.TalkingDataset` loads is equal."""
    import torch

    assert (a.H, a.W, a.focal, a.cx, a.cy) == (b.H, b.W, b.focal, b.cx, b.cy) and torch.equal(a.bc, b.bc)
    assert torch.equal(a.audio, b.audio) and a.splits.keys() == b.splits.keys()
    for name, x in a.splits.items():
        y = b.splits[name]
        for field in x.__dataclass_fields__:
            u, v = getattr(x, field), getattr(y, field)
            if isinstance(u, dict):
                assert u.keys() == v.keys() and all(torch.equal(u[k], v[k]) for k in u), (name, field)
            elif isinstance(u, torch.Tensor):
                assert torch.equal(u, v), (name, field)
            else:
                assert u == v, (name, field)


def test_packed_dataset_loads_to_the_same_tensors(tmp_path, sample_workdir):
    """``--pack`` (what travels to the GPU machine, scripts/gpu_quality.sh): the sample's real
    dataset at the quick profile's 128 px is a fraction of its size and the trainer's provider
    loads it to exactly the tensors it loads from the full dataset, every condition included."""
    from pipeline.common.errors import InputError
    from pipeline.models.conditions import CONDITIONS, get_condition
    from pipeline.models.methods import get_method, method_names
    from pipeline.train.data import TalkingDataset
    from pipeline.train.quality import pack_dataset

    src = sample_workdir / "results" / "data" / "German"
    info = pack_dataset(src, tmp_path / "packed", 128)
    full = sum(f.stat().st_size for f in src.rglob("*") if f.is_file())
    assert info["bytes"] < 0.4 * full, (info, full)
    assert not list((tmp_path / "packed" / "ori_imgs").glob("*.jpg"))
    assert len(list((tmp_path / "packed" / "ori_imgs").glob("*.lms"))) == len(list((src / "ori_imgs").glob("*.lms")))
    # every condition the sample's dataset holds (no emotion labels; the 3DMM fit only where the
    # Surrey Face Model files are in the weights folder)
    for m in method_names():
        get_method(m)                   # every method's module imported: its conditions registered
    n = len(list((src / "ori_imgs").glob("*.lms")))
    conds = []
    for name in CONDITIONS:
        try:
            get_condition(name).read(src, n, "the pack test")
        except InputError:
            continue
        conds.append(name)
    assert {"eye", "body_pose", "body_flow"} <= set(conds), conds
    conds = tuple(conds)
    _same_dataset(TalkingDataset(src, 128, conditions=conds), TalkingDataset(tmp_path / "packed", 128, conditions=conds))
    with pytest.raises(InputError, match="bc.jpg"):
        pack_dataset(src / "parsing", tmp_path / "bad", 128)


def test_train_only_runs_are_scored_later(tmp_path, sample_workdir):
    """``--train-only`` (the GPU machine, which lacks the scorer's libraries): the run is trained and
    recorded ``unscored`` with its device, kept off the page, and the next run of the label here
    scores the same panels (real smoke-scale training of the sample); the scores are the
    scorer's on those panels, near the trainer's own val PSNR of the same frames."""
    from pathlib import Path

    from pipeline.train import quality

    wd = tmp_path / "w"
    (wd / "results" / "data").mkdir(parents=True)
    (wd / "results" / "data" / "German").symlink_to(sample_workdir / "results" / "data" / "German")
    cfg = {"profile": "smoke", "overrides": {"val_frames": 2}}
    args = ([("German", Path("unused.mp4"))], ["rad_nerf"], cfg, "lab", wd)
    (rec,) = quality.run_quality(*args, None, tmp_path / "assets", build=False, score=False)
    assert rec["unscored"] is True and "psnr" not in rec and rec["device"] == "cpu"
    assert (tmp_path / "assets" / "lab" / "German__rad_nerf.jpg").is_file()
    doc = tmp_path / "quality.md"
    quality.write_doc(wd, doc, tmp_path / "assets")
    assert "### `lab`" not in doc.read_text()
    (scored,) = quality.run_quality(*args, doc, tmp_path / "assets", build=False)
    assert "unscored" not in scored and scored["train_seconds"] == rec["train_seconds"]
    model_dir = wd / "models" / "lab" / "rad_nerf" / "German"
    direct = quality.score_panels(model_dir, wd / "results" / "data" / "German")
    assert scored["psnr"] == direct["psnr"] and scored["frames"] == 2
    assert abs(scored["psnr"] - rec["val_psnr_trainer"]) < 0.3, (scored["psnr"], rec["val_psnr_trainer"])
    assert json.loads((wd / "runs" / "lab" / "rad_nerf" / "German.json").read_text())["psnr"] == scored["psnr"]
    assert "### `lab`" in doc.read_text() and "trained on" not in doc.read_text()


def test_montage_and_overlay_are_jpegs_of_the_panels(tmp_path, sample_workdir):
    """The docs' pictures are JPEGs (docs/assets/quality held 72 MB of PNG photographs): the montage
    stacks the first, middle and last validation panels, pixel for pixel within JPEG's error; the
    parsing overlay of the sample's dataset has three tiles; a JPEG replaces a PNG of the same name
    on the page, and the page links the JPEGs."""
    from PIL import Image

    from pipeline.train import quality

    rng = np.random.default_rng(0)
    val = tmp_path / "model" / "val"
    val.mkdir(parents=True)
    panels = []
    for i in range(5):
        # smooth images (a ramp plus a per-panel shade), as renders are; JPEG error stays small
        ramp = np.linspace(0, 200, 64)[None, :, None] + np.linspace(0, 40, 32)[:, None, None]
        img = np.clip(ramp + 10 * i + rng.normal(0, 1, (32, 64, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(val / f"{i * 7}.png")
        panels.append(img)
    out = tmp_path / "assets" / "run" / "May__rad_nerf.jpg"
    quality.montage(tmp_path / "model", out)
    got = np.asarray(Image.open(out))
    assert Image.open(out).format == "JPEG" and got.shape == (96, 64, 3)
    want = np.concatenate([panels[0], panels[2], panels[4]], 0).astype(float)
    assert np.abs(got - want).mean() < 2.0                      # 0-255 scale
    assert np.abs(got - np.concatenate([panels[1]] * 3, 0)).mean() > 5.0   # not any other panels

    over = tmp_path / "assets" / "run" / "parsing" / "German.jpg"
    quality.parsing_overlay(sample_workdir / "results" / "data" / "German", over, side=96)
    assert Image.open(over).format == "JPEG" and Image.open(over).size == (3 * 96, 96)

    Image.fromarray(panels[0]).save(tmp_path / "assets" / "run" / "May__rad_nerf.png")      # an older PNG
    Image.fromarray(panels[0]).save(tmp_path / "assets" / "run" / "Trump__rad_nerf.png")
    assert [p.name for p in quality._pictures(tmp_path / "assets" / "run")] == ["May__rad_nerf.jpg",
                                                                                  "Trump__rad_nerf.png"]
    from pipeline.common.config import PROJECT_ROOT

    doc = PROJECT_ROOT / "docs" / "quality.md"
    links = re.findall(r"\]\((assets/quality/[^)/]+/[^)]+)\)", doc.read_text())
    assert len(links) > 400 and all(link.endswith(".jpg") for link in links)
    assert all((doc.parent / link).is_file() for link in links)


def _analysis_module(name: str = "mouth_motion"):
    """The module of ``scripts/analysis/{name}.py`` (the scripts are not a package)."""
    import importlib.util

    from pipeline.common.config import PROJECT_ROOT

    spec = importlib.util.spec_from_file_location(name, PROJECT_ROOT / "scripts" / "analysis" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_mouth_motion_statistics_on_real_frames(dev_dataset, tmp_path):
    """scripts/analysis/mouth_motion.py (docs/quality.md, cause 19) on real frames of the sample at
    the ``quick`` profile's 128 px: a "render" that is the ground truth moves its mouth exactly as
    the speaker (correlation 1, equal spread, and the speaker does move it); one frame repeated does
    not move it at all (spread under a fifth of the speaker's: MediaPipe tracks a repeated frame to
    nearly the same mesh); the montage has one 32 x 40 crop pair per row, 4x enlarged."""
    import numpy as np
    from PIL import Image

    from pipeline.train.data import TalkingDataset

    mod = _analysis_module()
    data = TalkingDataset(dev_dataset, 128, "mel", ("train",), conditions=("eye",), method="rad_nerf")
    tr = data.splits["train"]
    gts = [tr.gt[k].numpy() for k in range(len(tr))]
    same = mod.mouth_statistics(gts, gts)
    assert same["frames"] == len(gts)
    assert same["corr"] == pytest.approx(1.0) and same["render_std"] == same["gt_std"]
    assert same["gt_std"] > 0.005
    still = mod.mouth_statistics([gts[0]] * len(gts), gts)
    assert still["frames"] == len(gts) and still["render_std"] < 0.2 * still["gt_std"]
    res = {**same, "renders": gts, "gts": gts, "mouths": tr.mouth.numpy()}
    mod.montage(res, tmp_path / "m.png", rows=5)
    assert Image.open(tmp_path / "m.png").size == (2 * 40 * 4, 5 * 32 * 4)
    # top row: the most closed mouth of the frames
    img = np.asarray(Image.open(tmp_path / "m.png"))[:32 * 4:4, :40 * 4:4]
    k = int(np.nanargmin(same["gt_opening"]))
    r0, r1, c0, c1 = tr.mouth[k].tolist()
    cr, cc = (r0 + r1) // 2, (c0 + c1) // 2
    np.testing.assert_array_equal(img[4:-4, 4:-4], gts[k][cr - 12:cr + 12, cc - 16:cc + 16])


def test_where_the_audio_acts_by_hand():
    """``audio_effect_share`` and ``audio_map_image`` of scripts/analysis/mouth_motion.py on
    difference maps made by hand: 4 units inside a 2 x 2 box and 3 outside give 4/7 in the mouth
    (a frame where the audio changes nothing adds nothing); the box covers 4 % of a 10 x 10 frame;
    no difference at all is NaN, not 0; the map's largest value is drawn full red over the render
    darkened to 40 %."""
    import numpy as np

    mod = _analysis_module()
    d0 = np.zeros((10, 10))
    d0[2:4, 2:4] = 1.0
    d0[9, 9] = 3.0
    boxes = np.array([[2, 4, 2, 4], [5, 7, 5, 7]])
    res = mod.audio_effect_share([d0, np.zeros((10, 10))], boxes)
    assert res["audio_in_mouth"] == pytest.approx(4 / 7) and res["mouth_area"] == pytest.approx(0.04)
    assert np.isnan(mod.audio_effect_share([np.zeros((10, 10))], boxes[:1])["audio_in_mouth"])
    with pytest.raises(ValueError, match="2 mouth boxes"):
        mod.audio_effect_share([d0], boxes)
    render = np.full((10, 10, 3), 100, np.uint8)
    img = mod.audio_map_image({"renders": [render], "audio_map": d0})
    assert img.shape == (10, 20, 3)
    np.testing.assert_array_equal(img[:, :10], render)
    assert img[9, 19].tolist() == [255, round(40 + 0.3 * 255), 40]
    assert img[0, 10].tolist() == [40, 40, 40]
    assert img[2, 12].tolist() == [round(40 + 255 / 3), round(40 + 0.3 * 255 / 3), 40]


def test_mouth_motion_renders_a_trained_model(dev_dataset, tmp_path):
    """The script's render loop on a real (smoke-trained) ``er_nerf`` model of the sample: every
    validation frame is rendered, and the audio alone changes the renders (the check that found
    cause 19, where it changed nothing). The smoke model's 64 px blur has no face MediaPipe finds:
    no frame is compared, and the statistics say so with NaN rather than numbers of a face that is
    not there."""
    from pipeline.train.profiles import resolve_config
    from tests.conftest import train_all_stages

    mod = _analysis_module()
    cfg = resolve_config("er_nerf", {"profile": "smoke", "device": "cpu"})
    model_dir = train_all_stages(cfg, dev_dataset, tmp_path / "m")
    res = mod.mouth_motion(model_dir, dev_dataset, "val")
    assert len(res["renders"]) == len(res["gts"]) == len(res["mouths"]) > 1
    assert res["renders"][0].shape == res["gts"][0].shape == (64, 64, 3)
    assert res["audio_effect"] > 0
    assert res["frames"] == 0 and np.isnan(res["corr"]) and np.isnan(res["render_std"])


def test_audio_coordinate_statistics_of_a_rad_nerf_head(dev_dataset, tmp_path):
    """``scripts/analysis/audio_coordinate.py`` on a real (smoke-trained) ``rad_nerf`` head of the
    sample: the audio moves the trained coordinate from frame to frame; with the ambient MLP's last
    layer set by hand its statistics are the ones computed by hand: a zero layer gives a = tanh(0) = 0
    on every point and frame, a bias of 50 gives tanh(50) = 1 (saturated, std 0); and a head without
    an audio coordinate (``er_nerf``) is refused with its class named."""
    import torch

    from pipeline.models.registry import load_checkpoint
    from pipeline.train.data import TalkingDataset
    from pipeline.train.profiles import resolve_config
    from pipeline.train.trainer import train_stage

    mod = _analysis_module("audio_coordinate")
    cfg = resolve_config("rad_nerf", {"profile": "smoke", "device": "cpu"})
    ck = tmp_path / "m" / "head.pt"
    train_stage("head", cfg, dev_dataset, tmp_path / "m", ck)
    model, _ = load_checkpoint(ck)
    model.eval()
    data = TalkingDataset.for_config(dev_dataset, model.cfg, ("train",), max_frames={"train": None})
    s = mod.audio_coordinate(model, data, every=2, points=300)
    assert s["points"] == 300 and s["frames"] == (len(data.splits["train"]) + 1) // 2
    assert s["frame_std"] > 1e-4 and s["audio_std"] > 1e-3 and s["mean_abs"] < 0.99

    last = [m for m in model.head.amb_net.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.zero_()
        zero = mod.audio_coordinate(model, data, every=2, points=300)
        last.bias.fill_(50.0)
        stuck = mod.audio_coordinate(model, data, every=2, points=300)
    assert zero["mean_abs"] == 0 and zero["frame_std"] == 0 and zero["saturated"] == 0
    assert stuck["mean_abs"] == pytest.approx(1.0) and stuck["saturated"] == 1.0 and stuck["frame_std"] == 0
    assert zero["audio_std"] == pytest.approx(s["audio_std"])   # the audio code itself is untouched

    er = resolve_config("er_nerf", {"profile": "smoke", "device": "cpu"})
    train_stage("head", er, dev_dataset, tmp_path / "e", tmp_path / "e" / "head.pt")
    er_model, _ = load_checkpoint(tmp_path / "e" / "head.pt")
    with pytest.raises(ValueError, match="ERNeRFField has no audio coordinate"):
        mod.audio_coordinate(er_model, data)


def test_pose_coverage_hand_computed_and_on_real_poses(dev_dataset):
    """scripts/analysis/pose_coverage.py (docs/quality.md, "Validation poses that no training frame
    covers"): rotations about one axis give their angle differences by hand; a training frame's
    neighbours in time are left out; random rotations agree with SciPy's relative-rotation angle;
    on the sample's real tracked poses the summary is SciPy's too."""
    import numpy as np
    from scipy.spatial.transform import Rotation

    from pipeline.common.errors import InputError

    mod = _analysis_module("pose_coverage")
    rz = Rotation.from_euler("z", [[0.0], [10.0], [20.0]], degrees=True).as_matrix()
    q = Rotation.from_euler("z", [[14.0], [10.0]], degrees=True).as_matrix()
    ids = np.array([0, 5, 10])
    assert mod.nearest_rotation_deg(rz, ids, q, np.array([30, 5]), None) == pytest.approx([4.0, 0.0], abs=1e-6)
    # frame 5 left out of its own lookup (and 0 and 10 are 5 away: left out with exclude 5)
    assert mod.nearest_rotation_deg(rz, ids, q, np.array([30, 5]), 1) == pytest.approx([4.0, 10.0], abs=1e-6)
    assert mod.nearest_rotation_deg(rz, ids, q[1:], np.array([5]), 5)[0] == np.inf
    rng = np.random.default_rng(0)
    a, b = Rotation.random(7, random_state=rng), Rotation.random(4, random_state=rng)
    want = np.array([np.degrees((a.inv() * b[j]).magnitude()).min() for j in range(4)])
    got = mod.nearest_rotation_deg(a.as_matrix(), np.arange(7), b.as_matrix(), np.arange(100, 104), None)
    assert got == pytest.approx(want, abs=1e-6)

    cov = mod.coverage(dev_dataset, exclude=2)
    rt, it = mod.read_split(dev_dataset, "train")
    rv, _ = mod.read_split(dev_dataset, "val")
    t, v = Rotation.from_matrix(rt), Rotation.from_matrix(rv)
    per_train = [min(np.degrees((t[k].inv() * t[m]).magnitude()) for m in range(len(rt)) if abs(it[m] - it[k]) > 2)
                 for k in range(len(rt))]
    per_val = [np.degrees((t.inv() * v[j]).magnitude()).min() for j in range(len(rv))]
    assert cov["train_median"] == pytest.approx(np.median(per_train), abs=1e-6)
    assert cov["val_max"] == pytest.approx(max(per_val), abs=1e-6) and cov["val_max"] > 0
    assert cov["train_frames"] == len(rt) and cov["val_frames"] == len(rv) > 0
    with pytest.raises(InputError, match="transforms_val.json: cannot read"):
        mod.read_split(dev_dataset.parent, "val")
