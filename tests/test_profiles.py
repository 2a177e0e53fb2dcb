"""Snakemake profiles (profiles/): the SLURM profile's dry run shows each rule's resource requests,
the test profile stays in step with it, and the workstation profile's ``gpu`` resource caps the
number of concurrent GPU jobs, each of which gets its own device from pipeline.common.gpu."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import PROJECT_ROOT, SNAKEMAKE, make_workdir

PROFILES = PROJECT_ROOT / "profiles"
GPU_RULES = ("train_head", "train_lips", "train_torso", "render")
TARGET = "results/data/German/manifest.json"


def parse_dry_run(text: str) -> dict[str, list[dict]]:
    """Jobs of a ``snakemake -n`` printout: rule name -> one dict per job with ``threads`` (int,
    1 when not printed), ``priority`` (int, 0 when not printed) and every ``resources:`` entry
    (ints where numeric)."""
    jobs: dict[str, list[dict]] = {}
    current = None
    for line in text.splitlines():
        m = re.match(r"^(?:local)?rule (\w+):$", line)
        if m:
            current = {"threads": 1, "priority": 0}
            jobs.setdefault(m.group(1), []).append(current)
            continue
        if current is None:
            continue
        m = re.match(r"^    (threads|priority): (\d+)$", line)
        if m:
            current[m.group(1)] = int(m.group(2))
        elif line.startswith("    resources: "):
            for item in line[len("    resources: "):].split(", "):
                key, _, value = item.partition("=")
                current[key] = int(value) if value.isdigit() else value
        elif not line.startswith("    "):
            current = None
    return jobs


def dry_run(workdir: Path, *args: str, targets: tuple[str, ...] = (TARGET,)) -> str:
    """``snakemake -n`` of the project's Snakefile in ``workdir``; returns stdout+stderr."""
    cmd = [*SNAKEMAKE, "-s", str(PROJECT_ROOT / "Snakefile"), "-d", str(workdir),
           "--configfile", str(workdir / "config.yaml"), "-n", "--forceall", *args, *targets]
    proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def declared_resources(workdir: Path, *targets: str) -> dict[str, dict]:
    """What the rules themselves declare (no profile) for ``targets`` (default: the sample's
    dataset): rule -> {threads, mem_mb, runtime, ...} of its first job."""
    jobs = parse_dry_run(dry_run(workdir, "--cores", "256", targets=targets or (TARGET,)))
    return {rule: js[0] for rule, js in jobs.items() if rule != "all"}


def load_profile(name: str) -> dict:
    return yaml.safe_load((PROFILES / name / "config.yaml").read_text())


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return make_workdir(tmp_path_factory.mktemp("profiles"))


def test_slurm_profile_dry_run_shows_resource_requests(workdir):
    # exactly the user's command (plus the temp workdir): no sbatch needed for -n
    out = dry_run(workdir, "--profile", str(PROFILES / "slurm"), targets=("all",))
    assert "Using profile" in out and "profiles/slurm" in out
    jobs = parse_dry_run(out)
    declared = declared_resources(workdir, "all")
    profile = load_profile("slurm")
    assert {"probe", "crop", "landmarks", "dataset_manifest"} <= set(jobs)
    for rule, decl in declared.items():
        for job in jobs[rule]:
            expected = {**decl, **profile["set-resources"].get(rule, {})}
            for key in ("mem_mb", "runtime", "gpu", "slurm_partition"):
                if key in expected:
                    assert job.get(key) == expected[key], (rule, key, job)
    # with --cores the dry run also shows the threads (= --cpus-per-task on SLURM)
    with_cores = parse_dry_run(dry_run(workdir, "--profile", str(PROFILES / "slurm"), "--cores", "256",
                                       targets=("all",)))
    assert {r: js[0]["threads"] for r, js in with_cores.items() if r != "all"} == \
        {r: d["threads"] for r, d in declared.items()}
    assert with_cores["crop"][0]["threads"] == 2


def test_default_job_scheduling_threads_and_priorities(workdir, tmp_path):
    # the metrics job and the log-mel audio features run on one thread: with two declared, no other
    # job could start beside them on a 2-core machine (the default job ran its 9 metrics jobs one
    # after another); a network audio feature runs through torch on the job's threads and takes 2
    declared = declared_resources(workdir, "all")
    assert declared["metrics"]["threads"] == 1 and declared["audio_features"]["threads"] == 1
    # training, then rendering, starts before every other ready job (the longest path); the
    # baseline's metrics, ready as soon as the dataset is, no longer delay the head stages
    prio = {rule: d["priority"] for rule, d in declared.items()}
    assert prio["train_head"] == prio["train_lips"] == prio["train_torso"] == 2 and prio["render"] == 1
    assert {r for r, p in prio.items() if p} == {"train_head", "train_lips", "train_torso", "render"}
    hubert = make_workdir(tmp_path / "hubert", {"preprocess": {"audio": {"features": ["mel", "hubert"]}}})
    assert declared_resources(hubert)["audio_features"]["threads"] == 2


class _Resources(dict):
    """Job resources as the SLURM plugin reads them (``.get`` and attribute access)."""

    __getattr__ = dict.__getitem__


def sbatch_call(rule: str, threads: int, resources: dict) -> str:
    """The sbatch command line the SLURM plugin builds for a job (its own code, no sbatch run)."""
    from types import SimpleNamespace

    from snakemake_executor_plugin_slurm.submit_string import get_submit_command
    from snakemake_executor_plugin_slurm.utils import set_gres_string

    job = SimpleNamespace(name=rule, threads=threads, resources=_Resources(resources))
    part = resources.get("slurm_partition")
    params = {"run_uuid": "talking-nerf_test", "slurm_logfile": "x.log", "comment_str": f"rule_{rule}",
              "account": "", "partition": f" -p {part}" if part else "", "workdir": "/tmp"}
    return get_submit_command(job, params) + set_gres_string(job)


def test_slurm_profile_gpu_rules():
    """Each GPU rule asks for one GPU (one flag style), in a GPU partition, and the plugin turns it
    into the sbatch flags docs/cluster.md describes."""
    profile = load_profile("slurm")
    assert profile["executor"] == "slurm"
    assert set(profile["set-resources"]) == set(GPU_RULES)
    for rule in GPU_RULES:
        res = profile["set-resources"][rule]
        assert (res.get("gpu") == 1 and "gres" not in res) or \
            (res.get("gres", "").startswith("gpu:") and not res.get("gpu")), rule
        assert res["mem_mb"] > 0 and res["runtime"] > 0 and res["slurm_partition"]
        call = sbatch_call(rule, 2, res)
        assert f"-p {res['slurm_partition']}" in call and f"--mem {res['mem_mb']}" in call, call
        assert f"-t {res['runtime']}" in call and "--cpus-per-task=2" in call, call
        assert "--gpus=1" in call and "--gres" not in call, call
    # the other documented style: generic resources (gpu: 0 next to gres, as the comments say)
    gres = sbatch_call("train_head", 2, {**profile["set-resources"]["train_head"], "gpu": 0, "gres": "gpu:1"})
    assert "--gres=gpu:1" in gres and "--gpus" not in gres, gres
    # a CPU rule: no GPU flag at all
    cpu = sbatch_call("crop", 2, {"mem_mb": 4000, "runtime": 30})
    assert "gpu" not in cpu and "--cpus-per-task=2" in cpu and "--mem 4000" in cpu, cpu


def test_slurm_profile_covers_paper_resources(tmp_path):
    """The profile's GPU-rule memory and time are at least what the rules declare for the paper
    profile (a cluster kills a job at its time limit)."""
    wd = make_workdir(tmp_path / "paper", {"train": {"profile": "paper"}})
    declared = declared_resources(wd, "all")
    assert set(GPU_RULES) <= set(declared), sorted(set(GPU_RULES) - set(declared))
    profile = load_profile("slurm")["set-resources"]
    for rule in GPU_RULES:
        assert declared[rule].get("gpu") == 1, (rule, declared[rule])
        assert profile[rule]["mem_mb"] >= declared[rule]["mem_mb"], rule
        assert profile[rule]["runtime"] >= declared[rule]["runtime"], rule


def test_every_profile_key_is_commented():
    """Each top-level key of the user-facing profiles says what it does / what a site changes:
    a comment on the line itself or on the line above."""
    for name in ("slurm", "workstation"):
        lines = (PROFILES / name / "config.yaml").read_text().splitlines()
        keys = 0
        for i, line in enumerate(lines):
            if re.match(r"^[a-z][\w-]*:", line):
                keys += 1
                assert "#" in line or lines[i - 1].startswith("#"), f"{name}: {line!r} has no comment"
        assert keys >= 4
    text = (PROFILES / "slurm" / "config.yaml").read_text()
    for site in ("slurm_account", "slurm_partition", "gres", "slurm-status-command", "SITE"):
        assert site in text, site


def test_slurm_test_profile_in_step():
    """profiles/slurm-test is profiles/slurm with only the site keys changed."""
    prod, test = load_profile("slurm"), load_profile("slurm-test")
    assert test["executor"] == prod["executor"] == "slurm"
    assert set(test["set-resources"]) == set(prod["set-resources"])
    for rule, res in test["set-resources"].items():
        assert "gpu" not in res and "gres" not in res, rule  # the test node has no GPU
        assert res["slurm_partition"] == "debug"
    assert test["default-resources"]["slurm_partition"] == "debug"
    assert test["slurm-status-command"] == "squeue"
    assert test["slurm-init-seconds-before-status-checks"] <= 5
    for key in ("rerun-incomplete", "printshellcmds", "keep-going", "slurm-jobname-prefix"):
        assert test[key] == prod[key], key


# ---------------------------------------------------------------------------------------------
# Workstation: at most `gpu` GPU jobs at once, each on its own device

TOY = """
rule all:
    input: expand("done/{i}.json", i=range(4))

rule gpu_job:
    output: "done/{i}.json"
    threads: 1
    resources: gpu=1
    shell: "{PY} -c 'import json, sys, time; from pipeline.common.gpu import claim_gpu; c = claim_gpu(timeout_s=60); t0 = time.time(); time.sleep(1.5); json.dump(dict(device=c.device, start=t0, end=time.time()), open(sys.argv[1], \\"w\\"))' {output}"
"""


def _run_toy(tmp: Path, *args: str) -> list[dict]:
    tmp.mkdir()
    (tmp / "Snakefile").write_text(TOY.replace("{PY}", sys.executable))
    env = {**os.environ, "TALKING_NERF_GPUS": "0,1", "TALKING_NERF_GPU_LOCK_DIR": str(tmp / "locks")}
    proc = subprocess.run([*SNAKEMAKE, "--profile", str(PROFILES / "workstation"), "--cores", "2", *args],
                          cwd=tmp, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [json.loads(p.read_text()) for p in sorted((tmp / "done").glob("*.json"))]


def _max_overlap(jobs: list[dict]) -> int:
    events = sorted([(j["start"], 1) for j in jobs] + [(j["end"], -1) for j in jobs], key=lambda e: (e[0], e[1]))
    cur = best = 0
    for _, d in events:
        cur += d
        best = max(best, cur)
    return best


def test_workstation_gpu_limit_and_assignment(tmp_path):
    assert load_profile("workstation")["resources"]["gpu"] == 1
    # the profile as shipped (gpu: 1): 2 cores, but GPU jobs one at a time
    serial = _run_toy(tmp_path / "one")
    assert len(serial) == 4 and _max_overlap(serial) == 1
    # two GPUs: two jobs at once, never on the same device
    parallel = _run_toy(tmp_path / "two", "--resources", "gpu=2")
    assert len(parallel) == 4 and _max_overlap(parallel) == 2
    assert {j["device"] for j in parallel} == {"0", "1"}
    for a in parallel:
        for b in parallel:
            if a is not b and a["start"] < b["end"] and b["start"] < a["end"]:
                assert a["device"] != b["device"], (a, b)


def test_claim_gpu_pool_sources_and_waiting(tmp_path):
    from pipeline.common.errors import PipelineError
    from pipeline.common.gpu import claim_gpu, claimed_devices, gpu_pool

    assert gpu_pool({"TALKING_NERF_GPUS": "2, 3", "CUDA_VISIBLE_DEVICES": "0"}) == ["2", "3"]
    assert gpu_pool({"TALKING_NERF_GPUS": "none"}) == []
    assert gpu_pool({"CUDA_VISIBLE_DEVICES": "1,0"}) == ["1", "0"]
    # SLURM has bound the job's GPU: kept, no lock taken
    env = {"SLURM_JOB_ID": "7", "CUDA_VISIBLE_DEVICES": "3"}
    claim = claim_gpu(pool=["0"], lock_folder=tmp_path, env=env)
    assert (claim.device, claim.source, env["CUDA_VISIBLE_DEVICES"]) == ("3", "scheduler", "3")
    assert not list(tmp_path.iterdir())
    # no GPU: a no-op
    assert claim_gpu(env={"TALKING_NERF_GPUS": ""}).device is None
    # one device: the second claim waits, then gives up with the reason; a release frees it
    env1, env2 = {"TALKING_NERF_GPUS": "5"}, {"TALKING_NERF_GPUS": "5"}
    first = claim_gpu(lock_folder=tmp_path, env=env1)
    assert first.device == "5" and env1["CUDA_VISIBLE_DEVICES"] == "5"
    assert claimed_devices(["5"], tmp_path) == {"5": True}
    with pytest.raises(PipelineError, match="no free GPU among 5"):
        claim_gpu(lock_folder=tmp_path, env=env2, timeout_s=0.3, poll_s=0.1)
    first.release()
    with claim_gpu(lock_folder=tmp_path, env=env2, timeout_s=0.3) as second:
        assert second.device == "5" and env2["CUDA_VISIBLE_DEVICES"] == "5"
    assert claimed_devices(["5"], tmp_path) == {"5": False}
