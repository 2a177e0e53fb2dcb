"""Shared test fixtures.

Snakemake runs happen in temporary working folders (never in the project's ``results/``), with the
project's Snakefile and a copy of ``config.yaml`` whose keys the test overrides. The expensive
artefacts (the sample identity's dataset, its trained models) are built once per test session.
"""
from __future__ import annotations

import copy
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"
SAMPLE_VIDEO = PROJECT_ROOT / "resources" / "sample" / "German_12s.mp4"
SNAKEMAKE = [sys.executable, "-m", "snakemake"]

os.environ.setdefault("OMP_NUM_THREADS", "2")

#: test files that run longest, started first: CI runs the suite on two pytest-xdist workers
#: (``-n 2 --dist loadfile``, .ci/run), which hand out whole files in collection order (with
#: xdist's reordering by test count off, :func:`pytest_configure`), so a long file collected last
#: would run alone at the end. The SLURM file spends most of its time waiting
#: for the executor plugin's status polls, which the other worker's tests fill.
LONG_FILES = ("test_slurm.py", "test_dataset.py", "test_nerf3dtalker.py", "test_aed_nerf.py",
              "test_render_e2e.py", "test_metrics_pipeline.py", "test_report_workflow.py")


@pytest.fixture(autouse=True)
def _seeded_random_state():
    """Seeds Python's, NumPy's and PyTorch's global generators (0) before every test, so a test's
    random inputs do not depend on which tests its pytest-xdist worker ran before it: a tolerance
    that holds once holds on every run. Tests that need other draws seed their own generators."""
    random.seed(0)
    np.random.seed(0)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.manual_seed(0)
    yield


@pytest.fixture(autouse=True)
def _autograd_left_on():
    """Fails a test that leaves PyTorch's grad mode off (a CLI ``main`` called in-process that used
    ``torch.set_grad_enabled(False)``): the tests after it in the same worker would then see no
    gradients. Restores the mode so only the offender fails."""
    yield
    torch = sys.modules.get("torch")
    if torch is not None and not torch.is_grad_enabled():
        torch.set_grad_enabled(True)
        pytest.fail("the test left torch's grad mode disabled (use torch.no_grad() as a context or decorator)")


def pytest_configure(config):
    """Keeps :data:`LONG_FILES` first under pytest-xdist. ``--dist loadfile`` hands out the files
    sorted by their number of tests unless ``--no-loadscope-reorder`` is given (pytest-xdist 3.8,
    installed here, reorders by default), which had put the SLURM file, the longest, last and
    the end-to-end render file after it: they ran alone at the end of the suite, while the sum of
    all test durations split over the two workers was 100 s shorter (fresh clone of dd2681a:
    1307 s of tests against 2415 s / 2). The option exists only where xdist is loaded."""
    if getattr(config.option, "loadscopereorder", None) is not None:
        config.option.loadscopereorder = False


def pytest_collection_modifyitems(config, items):
    """Long files first (:data:`LONG_FILES` order), every other file after them in the usual
    order; the order of the tests within a file is kept (a stable sort)."""
    rank = {name: i for i, name in enumerate(LONG_FILES)}
    items.sort(key=lambda it: rank.get(it.path.name, len(LONG_FILES)))


def deep_update(base: dict, upd: dict) -> dict:
    """Recursively merge ``upd`` into a copy of ``base``."""
    out = copy.deepcopy(base)
    for k, v in upd.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_update(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def make_workdir(path: Path, overrides: dict | None = None, identities: list[tuple[str, str]] | None = None) -> Path:
    """Create a snakemake working folder: ``config.yaml`` (project config + overrides) and an
    identities table (default: the sample identity). The project's ``train.overrides`` (the
    default job's budget on the sample) are left out: a test's profile trains as it is unless
    ``overrides`` sets ``train.overrides`` itself. Returns ``path``."""
    path.mkdir(parents=True, exist_ok=True)
    cfg = yaml.safe_load((PROJECT_ROOT / "config.yaml").read_text())
    cfg["train"]["overrides"] = {}
    cfg = deep_update(cfg, overrides or {})
    rows = identities or [("German", str(SAMPLE_VIDEO))]
    (path / "identities.tsv").write_text("id\tvideo\n" + "".join(f"{i}\t{v}\n" for i, v in rows))
    cfg["identities"] = str(path / "identities.tsv")
    for key in ("cross_driven",):
        if key in cfg.get("render", {}):
            cfg["render"][key] = {k: str((PROJECT_ROOT / v).resolve()) if not os.path.isabs(v) else v
                                  for k, v in cfg["render"][key].items()}
    rep = cfg.get("report", {})
    if rep.get("reported_numbers") and not os.path.isabs(rep["reported_numbers"]):
        rep["reported_numbers"] = str(PROJECT_ROOT / rep["reported_numbers"])
    (path / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def run_snakemake(workdir: Path, *targets: str, args: tuple[str, ...] = (), timeout: int = 1500,
                  check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the project's Snakefile in ``workdir`` (cores 2). Output is captured; on failure with
    ``check`` the tail of the output and of the rule logs is shown in the assertion."""
    cmd = [*SNAKEMAKE, "-s", str(PROJECT_ROOT / "Snakefile"), "-d", str(workdir),
           "--configfile", str(workdir / "config.yaml"), "--cores", "2", *args, *targets]
    proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})
    if check and proc.returncode != 0:
        logs = ""
        for log in sorted((workdir / "results" / "logs").rglob("*.log"))[-5:]:
            logs += f"\n--- {log}\n" + log.read_text()[-2000:]
        raise AssertionError(f"snakemake failed ({proc.returncode}):\n{proc.stderr[-6000:]}{logs}")
    return proc


@pytest.fixture(scope="session")
def sample_workdir(tmp_path_factory) -> Path:
    """A working folder with the sample identity whose dataset is built once per session
    (``results/data/German/``)."""
    wd = make_workdir(tmp_path_factory.mktemp("sample"))
    run_snakemake(wd, "results/data/German/manifest.json")
    return wd


@pytest.fixture(scope="session")
def sample_dataset(sample_workdir):
    """:class:`DatasetLayout` of the sample identity's built dataset."""
    from pipeline.common.layout import DatasetLayout

    return DatasetLayout.of("German", sample_workdir / "results")


@pytest.fixture(scope="session")
def dev_dataset(tmp_path_factory):
    """24 real frames of the sample video in the ER-NeRF layout (pipeline.train.devdata)."""
    from pipeline.train.devdata import cached

    return cached(tmp_path_factory.getbasetemp())


def train_all_stages(cfg, data_root: Path, model_dir: Path) -> Path:
    """Train the head, lips and torso stages of ``cfg`` on ``data_root`` into ``model_dir`` (each
    stage starting from the previous one, as the ``train_*`` rules do; ``pipeline.train.trainer.train_stages``);
    returns ``model_dir``."""
    from pipeline.train.trainer import train_stages

    train_stages(cfg, data_root, model_dir)
    return model_dir


def require_shared(*rel: str) -> Path:
    """Path under ../shared/data, or skip the test with the reason when it is absent."""
    p = SHARED_DATA.joinpath(*rel)
    if not p.exists():
        pytest.skip(f"{p} not found: larger real-data tests need ../shared/data beside the clone")
    return p


def table_with_training(training: str, method: str):
    """The self-driven table (preset ``livenerf_table2``) of one PSNR row of ``method`` whose
    ``Training`` cell says ``training``: for the footnote tests of the Training markers."""
    import pandas as pd

    from pipeline.report.presets import get_preset
    from pipeline.report.tables import build_table

    rows = [{"method": method, "identity": "German", "protocol": "self_driven", "test": "self", "metric": "psnr",
             "value": 30.0, "backend": "skimage", "na_reason": None, "n_frames": 10, "compositing": "full",
             "resolution": "128x128", "training": training, "note": None, "weights_sha256": None, "source_file": "x"}]
    reported = pd.DataFrame(columns=["method", "source", "table", "metric", "value", "notes", "setup", "resolution", "id"])
    return build_table(pd.DataFrame(rows), get_preset("livenerf_table2"), "self_driven", [method], reported)


def assert_latex_compiles(tex_files: list[Path], workdir: Path) -> None:
    """``\\input`` every file into one bare article (booktabs and geometry, no inputenc or fontenc:
    the tables' LaTeX is ASCII) and compile it with pdflatex in ``workdir``; fails with the end of
    pdflatex's output, or on a missing character. Fails, not skips, where pdflatex is absent:
    scripts/bootstrap.sh, part of the README's test command, installs it."""
    assert shutil.which("pdflatex"), ("pdflatex not installed: run scripts/bootstrap.sh "
                                      "(apt-get install texlive-latex-base texlive-latex-recommended)")
    doc = workdir / "doc.tex"
    doc.write_text("\\documentclass{article}\n\\usepackage{booktabs}\n\\usepackage[margin=1cm,landscape]{geometry}\n"
                   "\\begin{document}\n" + "".join(f"\\input{{{p}}}\n\\clearpage\n" for p in tex_files)
                   + "\\end{document}\n")
    proc = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", doc.name], cwd=workdir,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:]
    log = (workdir / "doc.log").read_text(errors="replace")
    assert "Missing character" not in log and "Undefined control sequence" not in log
    assert (workdir / "doc.pdf").stat().st_size > 1000
