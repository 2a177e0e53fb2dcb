"""The pipeline on a real SLURM: scripts/local_slurm.sh starts a single-node cluster on localhost
(munged, slurmctld, slurmd), Snakemake submits every job with sbatch through profiles/slurm-test,
and the test checks what SLURM allocated (``scontrol show job``: CPUs per task = the rule's threads,
memory = mem_mb, time limit = runtime), that the dataset equals a local run's, and that a failing job
fails the run in bounded time. The module fixture always stops the cluster and checks that none of
the daemons it started is left and that /etc/slurm/slurm.conf is as before.

Needs root (CI runs as root) and apt (Debian's slurm-wlm 22.05); skips with the reason otherwise.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests import conftest
from tests.conftest import PROJECT_ROOT, make_workdir, run_snakemake
from tests.test_profiles import declared_resources

pytestmark = pytest.mark.slow

SCRIPT = PROJECT_ROOT / "scripts" / "local_slurm.sh"
TEST_PROFILE = PROJECT_ROOT / "profiles" / "slurm-test"
CONF = Path("/etc/slurm/slurm.conf")
DAEMONS = ("munged", "slurmctld", "slurmd")
DATASET = "results/data/German/manifest.json"
SMOKE_METHOD = "er_nerf"
MODEL_DIR = f"results/models/{SMOKE_METHOD}/German"
#: the first line of every config the script writes (its ``MARK``, read from the script itself)
MARK = re.search(r'^MARK="(.*)"$', SCRIPT.read_text(), re.M).group(1)
ORPHAN_WAIT_S = 600  # how long a cluster of another pytest run may hold /etc/slurm/slurm.conf (_clear_stale_cluster)
SENTINEL = "# a site's slurm.conf, planted by tests/test_slurm.py: 'local_slurm.sh stop' must restore it\n"


@dataclass
class LocalSlurm:
    """A running local cluster: its state folder, the environment for the script, daemon PIDs."""

    state: Path
    env: dict
    pids: dict[str, int]


def _alive(pid: int, name: str) -> bool:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip() == name
    except OSError:
        return False


def _script(action: str, env: dict, timeout: int) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), action], env=env, capture_output=True, text=True, timeout=timeout)


def _clear_stale_cluster() -> None:
    """Stops, with the script's own ``stop``, a cluster whose /etc/slurm/slurm.conf
    scripts/local_slurm.sh wrote in an earlier run that was killed before 'stop' (so ``stop`` removes
    that config, or puts back the site's config that run had saved); does nothing when the config is
    not the script's or absent.

    A cluster of another pytest run (its state dir under a ``pytest-of-*`` temp folder) whose
    daemons still run is waited for up to :data:`ORPHAN_WAIT_S` (a run beside this one stops its
    cluster within that: the module's tests take about 5 minutes), then taken as orphaned.

    Raises AssertionError when someone else's cluster runs (the test must not take it over) or
    when ``stop`` fails.
    """
    text = CONF.read_text(errors="replace") if CONF.exists() else ""
    if MARK not in text:
        return
    m = re.search(r"^# state dir: (.*) ; removed or restored", text, re.M)
    other = Path(m.group(1)) if m else Path("/nonexistent")
    try:
        pid = int((other / "slurmctld.pid").read_text().strip())
    except (OSError, ValueError):
        pid = -1
    end = time.monotonic() + ORPHAN_WAIT_S
    while _alive(pid, "slurmctld") and "pytest-of-" in str(other) and time.monotonic() < end:
        time.sleep(5)
    assert not _alive(pid, "slurmctld") or "pytest-of-" in str(other), (
        f"a local cluster started with LOCAL_SLURM_DIR={other} is running: "
        f"stop it with 'LOCAL_SLURM_DIR={other} scripts/local_slurm.sh stop'")
    stop = _script("stop", {**os.environ, "LOCAL_SLURM_DIR": str(other)}, timeout=180)
    assert stop.returncode == 0, f"could not stop the cluster an earlier run left in {other}:\n{stop.stderr}"
    print(f"stopped the local cluster an earlier run left (state dir {other}): {stop.stderr.strip()}")


@pytest.fixture(scope="module")
def local_slurm(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("the SLURM test needs root: scripts/local_slurm.sh installs slurm-wlm with apt, writes "
                    "/etc/slurm/slurm.conf and runs slurmctld/slurmd as SlurmUser=root (CI runs as root)")
    state = tmp_path_factory.mktemp("slurm-state")
    env = {**os.environ, "LOCAL_SLURM_DIR": str(state)}
    _clear_stale_cluster()  # a killed earlier run's cluster and config, so the restore check below is ours
    # stand in for a site's config when there is none, to check that stop restores it byte for byte
    planted = not CONF.exists()
    if planted:
        CONF.parent.mkdir(parents=True, exist_ok=True)
        CONF.write_text(SENTINEL)
    before = CONF.read_bytes()
    pids: dict[str, int] = {}
    try:
        start = _script("start", env, timeout=900)
        if start.returncode == 3 and (shutil.which("apt-get") is None or os.geteuid() != 0):
            # no apt, or no root to run it: SLURM cannot be installed on this machine. As root with
            # apt (CI) a failed install is a failure, not a skip.
            pytest.skip(f"SLURM cannot be installed with apt here: {start.stderr.strip()[-500:]}")
        assert start.returncode == 0, f"local_slurm.sh start failed:\n{start.stderr[-3000:]}"
        pids = {d: int((state / f"{d}.pid").read_text().strip()) for d in DAEMONS}
        assert all(_alive(p, d) for d, p in pids.items()), pids
        yield LocalSlurm(state, env, pids)
    finally:
        stop = _script("stop", env, timeout=180)
        left = [f"{d} (pid {p})" for d, p in pids.items() if _alive(p, d)]
        restored = CONF.exists() and CONF.read_bytes() == before
        if planted and restored:
            CONF.unlink()
        assert stop.returncode == 0, f"local_slurm.sh stop failed:\n{stop.stderr[-3000:]}"
        assert not left, f"daemons still running after 'local_slurm.sh stop': {left}"
        assert not any(state.glob("*.pid")), "stop left PID files"
        now = CONF.read_text(errors="replace")[:300] if CONF.exists() else "(absent)"
        assert restored, (f"{CONF} was not restored by 'local_slurm.sh stop': before {before[:300]!r}, "
                          f"now {now!r}; stop said: {stop.stderr[-1500:]}")


def run_on_slurm(monkeypatch, workdir: Path, *targets: str, limit_s: int) -> tuple[subprocess.CompletedProcess, float]:
    """Snakemake with the test profile, under ``timeout -k 30 limit_s``; (process, seconds)."""
    monkeypatch.setattr(conftest, "SNAKEMAKE", ["timeout", "-k", "30", str(limit_s), *conftest.SNAKEMAKE])
    t0 = time.monotonic()
    proc = run_snakemake(workdir, *targets, args=("--profile", str(TEST_PROFILE)), timeout=limit_s + 60,
                         check=False)
    return proc, time.monotonic() - t0


def submitted_jobs(log: str) -> dict[str, str]:
    """SLURM job id -> rule name, from the executor's "Job N has been submitted" lines."""
    jobs = {}
    for m in re.finditer(r"has been submitted with SLURM jobid (\d+) \(log: (\S+)\)", log):
        rule = re.search(r"/rule_(\w+)/", m.group(2))
        jobs[m.group(1)] = rule.group(1)
    return jobs


def scontrol_job(job_id: str) -> dict[str, str]:
    """``scontrol show job -o`` as a dict (the controller keeps finished jobs for MinJobAge)."""
    out = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, f"scontrol show job {job_id}: {out.stderr}"
    return dict(re.findall(r"(\S+?)=(\S*)", out.stdout))


def minutes(limit: str) -> int:
    """SLURM time ``[D-]HH:MM:SS`` -> minutes."""
    days, _, hms = limit.rpartition("-")
    h, m, s = (int(x) for x in hms.split(":"))
    return (int(days or 0) * 24 + h) * 60 + m + (s > 0)


def files_under(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def assert_queue_empty():
    q = subprocess.run(["squeue", "-h", "-t", "PENDING,RUNNING,COMPLETING", "-o", "%i %j %T"],
                       capture_output=True, text=True, timeout=30)
    assert q.returncode == 0 and q.stdout.strip() == "", f"jobs left in the queue: {q.stdout}{q.stderr}"


def training_in_workflow() -> bool:
    """True once the Snakefile includes the training rules and the ``smoke`` profile exists."""
    from pipeline.train.profiles import PROFILES

    return "workflow/rules/train.smk" in (PROJECT_ROOT / "Snakefile").read_text() and "smoke" in PROFILES


def test_dataset_on_slurm_matches_local_run(sample_workdir, local_slurm, tmp_path, monkeypatch):
    targets, overrides = [DATASET], {}
    if training_in_workflow():  # one method, smoke profile (seconds of CPU per stage): the train rules too
        targets.append(f"{MODEL_DIR}/train_manifest.json")
        overrides = {"train": {"profile": "smoke", "methods": [SMOKE_METHOD]}}
    wd = make_workdir(tmp_path / "wd", overrides)
    declared = declared_resources(wd, *targets)
    test_profile = yaml.safe_load((TEST_PROFILE / "config.yaml").read_text())
    proc, secs = run_on_slurm(monkeypatch, wd, *targets, limit_s=1200)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"snakemake on SLURM failed ({proc.returncode}) after {secs:.0f} s:\n{log[-6000:]}"
    print(f"{' + '.join(targets)} on SLURM: {secs:.0f} s")

    # every rule ran as its own SLURM job, with what the rule declares
    jobs = submitted_jobs(log)
    assert sorted(jobs.values()) == sorted(declared), (jobs, sorted(declared))
    for job_id, rule in jobs.items():
        # the rule's declaration, with what the test profile sets for the GPU rules
        info, decl = scontrol_job(job_id), {**declared[rule], **test_profile["set-resources"].get(rule, {})}
        where = f"SLURM job {job_id} (rule {rule}): {info}"
        assert info["JobState"] == "COMPLETED" and info["ExitCode"] == "0:0", where
        assert info["Partition"] == "debug", where
        assert int(info["CPUs/Task"]) == decl["threads"], where
        assert info["MinMemoryNode"] == f"{decl['mem_mb']}M", where
        assert minutes(info["TimeLimit"]) == decl["runtime"], where
        assert "gpu" not in info.get("TRES", "") and info.get("TresPerJob", "") in ("", "(null)"), where
        assert info["Comment"].startswith(f"rule_{rule}"), where
    assert_queue_empty()

    # the same dataset as the local session build
    ours, local = wd / "results/data/German", sample_workdir / "results/data/German"
    assert files_under(ours) == files_under(local)
    assert len(files_under(ours)) > 20
    if len(targets) > 1:  # every stage's checkpoint and the training manifest
        models = files_under(wd / MODEL_DIR)
        assert {"head.pt", "lips.pt", "torso.pt", "train_manifest.json"} <= set(models), models


def test_failing_job_fails_the_run(local_slurm, tmp_path, monkeypatch):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(50_000))  # an MP4 header, then garbage
    wd = make_workdir(tmp_path / "wd", identities=[("Broken", str(broken))])
    proc, secs = run_on_slurm(monkeypatch, wd, "results/data/Broken/manifest.json", limit_s=300)
    log = proc.stdout + proc.stderr
    assert proc.returncode not in (0, 124, 137), f"rc {proc.returncode} after {secs:.0f} s:\n{log[-4000:]}"
    assert secs < 240, f"the failure took {secs:.0f} s to surface"
    assert "Error in rule probe" in log and "SLURM status is: 'FAILED'" in log, log[-4000:]
    assert "broken.mp4" in (wd / "results/logs/probe/Broken.log").read_text()
    assert not (wd / "results/data/Broken/probe.json").exists()
    assert_queue_empty()
    print(f"failing job surfaced after {secs:.0f} s")
