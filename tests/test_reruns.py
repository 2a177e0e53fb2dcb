"""What reruns after a config or weights change (snakemake -n in a temporary working folder).

The workflow's outputs are stood in by empty files that ``snakemake --touch`` marks as made by
their rules (so Snakemake holds their params and inputs in .snakemake/metadata); a dry run then
lists exactly the jobs a real run would redo."""
from __future__ import annotations

import re

import yaml

from tests.conftest import make_workdir, run_snakemake

METHODS = ["rad_nerf", "er_nerf"]


def _jobs(proc) -> dict[str, list[str]]:
    """{rule: [its jobs' output lists]} of a dry run."""
    jobs: dict[str, list[str]] = {}
    rule = None
    for line in proc.stdout.splitlines():
        m = re.match(r"(?:local)?rule (\w+):", line.strip())
        if m:
            rule = m.group(1)
        elif line.strip().startswith("output:") and rule:
            jobs.setdefault(rule, []).append(line.split(":", 1)[1].strip())
    return jobs


def _touched_workdir(tmp_path, methods, targets):
    """A working folder in which every job that ``targets`` need is done (empty outputs, metadata
    recorded by ``--touch``)."""
    weights = tmp_path / "weights"
    weights.mkdir()
    wd = make_workdir(tmp_path / "wd", {"weights_dir": str(weights), "train": {"methods": methods}})
    dry = run_snakemake(wd, *targets, args=("-n",))
    # outputs, and the benchmark files (the dataset manifest reads the stages' timings from them)
    outs = {o.strip() for line in dry.stdout.splitlines() if line.strip().startswith(("output:", "benchmark:"))
            for o in line.split(":", 1)[1].split(",")}
    for o in outs:
        p = wd / o
        if p.suffix:
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text("stand-in output")
        else:  # directory outputs (ori_imgs, gt_imgs, parsing, ...)
            p.mkdir(parents=True, exist_ok=True)
    run_snakemake(wd, *targets, args=("--touch",))
    assert "Nothing to be done" in run_snakemake(wd, *targets, args=("-n",)).stdout
    return wd, weights


def test_removing_a_method_leaves_the_other_models_untouched(tmp_path):
    targets = [f"results/models/{m}/German/train_manifest.json" for m in METHODS]
    wd, _ = _touched_workdir(tmp_path, METHODS, targets)
    cfg_path = wd / "config.yaml"
    cfg = yaml.safe_load(cfg_path.read_text())
    cfg["train"]["methods"] = ["rad_nerf"]
    cfg_path.write_text(yaml.safe_dump(cfg))
    dry = run_snakemake(wd, targets[0], args=("-n",))
    assert "Nothing to be done" in dry.stdout, dry.stdout[-2000:]
    # a change that does alter the model (the seed) retrains it: the dry run is not blind
    cfg["train"]["seed"] = 1
    cfg_path.write_text(yaml.safe_dump(cfg))
    jobs = _jobs(run_snakemake(wd, targets[0], args=("-n",)))
    assert set(jobs) >= {"train_head", "train_lips", "train_torso"}


def test_a_later_stages_override_retrains_from_that_stage(tmp_path):
    """train.overrides torso_steps is read by the torso stage only: it retrains the torso, not the
    head or the lips (pipeline.train.profiles.LATER_STAGE_KEYS); lips_steps retrains lips and torso."""
    target = "results/models/rad_nerf/German/train_manifest.json"
    wd, _ = _touched_workdir(tmp_path, ["rad_nerf"], [target])
    cfg_path = wd / "config.yaml"
    cfg = yaml.safe_load(cfg_path.read_text())
    cfg["train"]["overrides"] = {"torso_steps": 7}
    cfg_path.write_text(yaml.safe_dump(cfg))
    assert set(_jobs(run_snakemake(wd, target, args=("-n",)))) == {"train_torso"}
    cfg["train"]["overrides"] = {"lips_steps": 7}
    cfg_path.write_text(yaml.safe_dump(cfg))
    assert set(_jobs(run_snakemake(wd, target, args=("-n",)))) == {"train_lips", "train_torso"}


def test_settings_of_a_switched_off_stage_rerun_nothing(tmp_path):
    """preprocess.teeth_mask is off by default and its rule not run: its thresholds change nothing
    (the dataset manifest's --cfg leaves them out); switching it on builds the teeth masks and the
    manifest again."""
    target = "results/data/German/manifest.json"
    wd, _ = _touched_workdir(tmp_path, ["rad_nerf"], [target])
    cfg_path = wd / "config.yaml"
    cfg = yaml.safe_load(cfg_path.read_text())
    cfg["preprocess"]["teeth_mask"]["max_chroma"] = 30.0
    cfg_path.write_text(yaml.safe_dump(cfg))
    assert "Nothing to be done" in run_snakemake(wd, target, args=("-n",)).stdout
    cfg["preprocess"]["teeth_mask"]["enabled"] = True
    cfg_path.write_text(yaml.safe_dump(cfg))
    assert set(_jobs(run_snakemake(wd, target, args=("-n",)))) == {"teeth_mask", "dataset_manifest"}


def test_the_model_folder_of_an_unused_audio_feature_reruns_nothing(tmp_path):
    """With ``features: [mel]`` and the models trained on mel, a HuBERT model folder in config
    ``preprocess.audio`` is read by no job (audio_config_for): neither the audio features nor the
    renders rerun."""
    targets = ["results/renders/rad_nerf/German/self/manifest.json", "results/renders/rad_nerf/German/jfk/manifest.json"]
    wd, _ = _touched_workdir(tmp_path, ["rad_nerf"], targets)
    cfg_path = wd / "config.yaml"
    cfg = yaml.safe_load(cfg_path.read_text())
    assert cfg["preprocess"]["audio"]["features"] == ["mel"] and cfg["train"]["audio_feature"] == "mel"
    cfg["preprocess"]["audio"]["hubert"] = str(tmp_path / "hubert-large-ls960-ft")
    cfg_path.write_text(yaml.safe_dump(cfg))
    assert "Nothing to be done" in run_snakemake(wd, *targets, args=("-n",)).stdout


def test_fetching_a_weight_file_reruns_exactly_the_metrics_that_use_it(tmp_path):
    """LPIPS's backbone is used by the self-driven metrics only; SyncNet's by every test
    (config metrics: self_driven has lpips and lse, cross_driven has lse); replacing a file reruns
    its users again."""
    targets = ["results/metrics/static_frame/German/self.json", "results/metrics/static_frame/German/jfk.json"]
    wd, weights = _touched_workdir(tmp_path, ["rad_nerf"], targets)
    (weights / "alexnet-owt-7be5be79.pth").write_bytes(b"fetched")
    jobs = _jobs(run_snakemake(wd, *targets, args=("-n",)))
    assert list(jobs) == ["metrics"] and len(jobs["metrics"]) == 1
    assert "static_frame/German/self.json" in jobs["metrics"][0]
    run_snakemake(wd, *targets, args=("--touch",))
    (weights / "syncnet_v2.model").write_bytes(b"fetched")
    jobs = _jobs(run_snakemake(wd, *targets, args=("-n",)))
    assert list(jobs) == ["metrics"] and len(jobs["metrics"]) == 2
    run_snakemake(wd, *targets, args=("--touch",))
    assert "Nothing to be done" in run_snakemake(wd, *targets, args=("-n",)).stdout
    import os
    import time

    later = time.time() + 5
    os.utime(weights / "alexnet-owt-7be5be79.pth", (later, later))  # newer, same bytes: nothing to redo
    assert "Nothing to be done" in run_snakemake(wd, *targets, args=("-n",)).stdout
    (weights / "alexnet-owt-7be5be79.pth").write_bytes(b"replaced")  # a replaced file
    os.utime(weights / "alexnet-owt-7be5be79.pth", (later, later))
    jobs = _jobs(run_snakemake(wd, *targets, args=("-n",)))
    assert list(jobs) == ["metrics"] and len(jobs["metrics"]) == 1
    assert "static_frame/German/self.json" in jobs["metrics"][0]


def test_changing_one_protocols_metric_list_reruns_only_its_metrics(tmp_path):
    """The metrics job gets only its own protocol's list (common.smk ``metrics_cfg``): adding FID to
    ``metrics.cross_driven`` reruns the cross-driven metrics, not the self-driven ones."""
    targets = ["results/metrics/static_frame/German/self.json", "results/metrics/static_frame/German/jfk.json"]
    wd, _ = _touched_workdir(tmp_path, ["rad_nerf"], targets)
    cfg_path = wd / "config.yaml"
    cfg = yaml.safe_load(cfg_path.read_text())
    cfg["metrics"]["cross_driven"] = [*cfg["metrics"]["cross_driven"], "fid"]
    cfg_path.write_text(yaml.safe_dump(cfg))
    jobs = _jobs(run_snakemake(wd, *targets, args=("-n",)))
    assert list(jobs) == ["metrics"] and len(jobs["metrics"]) == 1
    assert "static_frame/German/jfk.json" in jobs["metrics"][0]


def test_fetching_a_stage_weight_file_reruns_that_stage(tmp_path):
    """Landmarks use FAN, the lips stage LPIPS's AlexNet and the 3DMM fit the Surrey Face Model when
    present (weights manifest ``stages``): fetching one reruns its stage and what depends on it,
    nothing upstream."""
    from pipeline.weights import load_manifest

    target = "results/models/rad_nerf/German/train_manifest.json"
    wd, weights = _touched_workdir(tmp_path, ["rad_nerf"], [target])
    manifest = load_manifest()

    def fetch(*names):
        """The jobs a dry run lists with these files fetched; removed again afterwards."""
        paths = [manifest[name].path(weights) for name in names]
        for path in paths:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"fetched")
        jobs = _jobs(run_snakemake(wd, target, args=("-n",)))
        for path in paths:
            path.unlink()
        return jobs

    jobs = fetch("lpips_alexnet")
    assert set(jobs) == {"train_lips", "train_torso"}
    jobs = fetch(*[n for n, e in manifest.items() if "preprocess.threedmm" in e.stages])
    assert set(jobs) == {"threedmm", "tracking", "dataset_manifest", "train_head", "train_lips", "train_torso"}
    jobs = fetch("fan_2dfan4")
    assert {"landmarks", "parsing", "threedmm", "train_head"} <= set(jobs) and {"probe", "frames"}.isdisjoint(jobs)
    assert "Nothing to be done" in run_snakemake(wd, target, args=("-n",)).stdout


def test_installing_pyfaceau_models_reruns_the_au_stage_with_them(tmp_path):
    """pyfaceau's OpenFace model stamp in the weights folder (manifest entry
    openface_models_pyfaceau, stage preprocess.aus) is an input of rule aus: installing it reruns
    the AU stage, whose --cfg then names the model folder; without it the params are the config's."""
    target = "results/data/German/au.csv"
    wd, weights = _touched_workdir(tmp_path, ["rad_nerf"], [target])
    stamp = weights / "OpenFaceModels/2.2.0/derived/pyfaceau/1/pyfaceau-models.json"
    stamp.parent.mkdir(parents=True)
    stamp.write_text("{}")
    dry = run_snakemake(wd, target, args=("-n", "-p"))
    assert list(_jobs(dry)) == ["aus"]
    assert f'"openface_models": "{weights / "OpenFaceModels"}"' in dry.stdout
