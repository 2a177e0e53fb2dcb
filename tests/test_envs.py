"""envs/*.yaml (conda environments for `--sdm conda`) stay in step with pyproject.toml."""
from __future__ import annotations

import re
import tomllib

import yaml
from packaging.requirements import Requirement

from tests.conftest import PROJECT_ROOT


def _pyproject_requirements() -> dict[str, str]:
    data = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())
    reqs = list(data["project"]["dependencies"])
    for extra in data["project"].get("optional-dependencies", {}).values():
        reqs += extra
    out = {}
    for r in reqs:
        req = Requirement(r)
        out[req.name.lower()] = str(req.specifier)
    return out


def _env_pip_requirements(path) -> list[Requirement]:
    env = yaml.safe_load(path.read_text())
    reqs = []
    for dep in env["dependencies"]:
        if isinstance(dep, dict) and "pip" in dep:
            reqs += [Requirement(r) for r in dep["pip"] if not r.startswith("-")]
    return reqs


def test_every_env_pins_match_pyproject():
    pyproj = _pyproject_requirements()
    envs = sorted((PROJECT_ROOT / "envs").glob("*.yaml"))
    assert envs, "no conda environments in envs/"
    for env in envs:
        reqs = _env_pip_requirements(env)
        assert reqs, f"{env.name} lists no pip packages"
        for req in reqs:
            name = req.name.lower()
            assert name in pyproj, f"{env.name}: {req.name} is not a dependency in pyproject.toml"
            assert str(req.specifier) == pyproj[name], (
                f"{env.name}: {req.name}{req.specifier} differs from pyproject.toml {req.name}{pyproj[name]}")


def test_every_rule_names_an_existing_env():
    rules = sorted((PROJECT_ROOT / "workflow" / "rules").rglob("*.smk"))
    seen = set()
    for smk in rules:
        for m in re.finditer(r'conda:\s*\n\s*"([^"]+)"', smk.read_text()):
            env = (smk.parent / m.group(1)).resolve()
            assert env.is_file(), f"{smk.name}: conda env {m.group(1)} does not exist"
            seen.add(env.name)
    assert "preprocess.yaml" in seen


def test_torch_is_pinned_everywhere():
    """An unpinned torch would pull several GB of CUDA packages on a CPU machine."""
    for env in (PROJECT_ROOT / "envs").glob("*.yaml"):
        for req in _env_pip_requirements(env):
            if req.name in ("torch", "torchvision"):
                assert str(req.specifier), f"{env.name}: {req.name} must carry a version range"
