"""Config and identities-table validation (schema, id pattern, clear errors)."""
from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from pipeline.common.config import load_config, load_identities, validate_config
from pipeline.common.errors import InputError
from tests.conftest import PROJECT_ROOT, SNAKEMAKE, make_workdir


def test_default_config_is_valid_and_filled():
    cfg = load_config(PROJECT_ROOT / "config.yaml")
    assert cfg["preprocess"]["crop"]["size"] == 512
    assert cfg["preprocess"]["crop"]["fps"] == 25
    assert set(cfg["train"]["methods"]) == {"rad_nerf", "er_nerf"}


def test_every_config_key_is_commented():
    """Every key line of config.yaml carries a comment on the line or the line(s) above."""
    lines = (PROJECT_ROOT / "config.yaml").read_text().splitlines()
    uncommented = []
    for i, line in enumerate(lines):
        s = line.strip()
        if not s or s.startswith("#") or s.startswith("-") or ":" not in s:
            continue
        prev = lines[i - 1].strip() if i else ""
        if "#" not in line and not prev.startswith("#") and not line.rstrip().endswith(":"):
            uncommented.append(line)
    assert not uncommented, f"config.yaml keys without a comment: {uncommented}"


def test_unknown_key_and_bad_value_name_the_key():
    cfg = yaml.safe_load((PROJECT_ROOT / "config.yaml").read_text())
    cfg["preprocess"]["crop"]["sise"] = 3
    with pytest.raises(InputError, match=r"preprocess/crop.*sise"):
        validate_config(cfg, "my.yaml")
    cfg = yaml.safe_load((PROJECT_ROOT / "config.yaml").read_text())
    cfg["preprocess"]["crop"]["size"] = "big"
    with pytest.raises(InputError, match=r"my.yaml: invalid config at 'preprocess/crop/size'"):
        validate_config(cfg, "my.yaml")


@pytest.mark.parametrize("bad_id", ["has space", "slash/id", "dots.id", "ümlaut"])
def test_identity_ids_are_restricted(tmp_path, bad_id):
    t = tmp_path / "ids.tsv"
    t.write_text(f"id\tvideo\n{bad_id}\tx.mp4\n")
    with pytest.raises(InputError, match="does not match"):
        load_identities(t)


def test_identities_table_errors(tmp_path):
    t = tmp_path / "ids.tsv"
    t.write_text("id\tvideo\nA\ta.mp4\nA\tb.mp4\n")
    with pytest.raises(InputError, match="duplicate identity id 'A'"):
        load_identities(t)
    t.write_text("name\tpath\nA\ta.mp4\n")
    with pytest.raises(InputError, match="columns 'id' and 'video'"):
        load_identities(t)
    rows = load_identities(PROJECT_ROOT / "identities.tsv")
    assert rows[0]["id"] == "German" and rows[0]["emotion"] == "neutral"


def test_snakemake_refuses_invalid_config_at_startup(tmp_path):
    wd = make_workdir(tmp_path, {"preprocess": {"crop": {"size": -4}}})
    proc = subprocess.run([*SNAKEMAKE, "-s", str(PROJECT_ROOT / "Snakefile"), "-d", str(wd),
                           "--configfile", str(wd / "config.yaml"), "-n"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "size" in out and "minimum" in out


def test_dry_run_with_test_config(tmp_path):
    wd = make_workdir(tmp_path)
    proc = subprocess.run([*SNAKEMAKE, "-s", str(PROJECT_ROOT / "Snakefile"), "-d", str(wd),
                           "--configfile", str(wd / "config.yaml"), "-n"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "probe" in proc.stdout and "dataset_manifest" in proc.stdout


def test_wildcard_constraints_come_from_the_table(tmp_path):
    """A target for an identity not in the table is not matched by any rule."""
    wd = make_workdir(tmp_path)
    proc = subprocess.run([*SNAKEMAKE, "-s", str(PROJECT_ROOT / "Snakefile"), "-d", str(wd),
                           "--configfile", str(wd / "config.yaml"), "-n", "results/data/Nobody/manifest.json"],
                          capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "MissingRuleException" in out or "No rule to produce" in out, out[-2000:]


def test_lint_is_clean():
    proc = subprocess.run([*SNAKEMAKE, "--lint"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300)
    assert "Congratulations" in proc.stdout + proc.stderr, (proc.stdout + proc.stderr)[-4000:]


def test_configs_without_settings_no_job_reads():
    """audio_config_for keeps the listed features' model folders only; manifest_config also reduces
    a switched-off teeth_mask to its flag (hand-made sections)."""
    from pipeline.common.config import audio_config_for, manifest_config

    audio = {"features": ["mel", "hubert"], "hubert": "/m/hubert", "wav2vec2": "/m/w2v", "deepspeech": None}
    assert audio_config_for(audio, ["mel", "hubert"]) == {"features": ["mel", "hubert"], "hubert": "/m/hubert"}
    assert audio_config_for(audio, ["wav2vec2"]) == {"features": ["wav2vec2"], "wav2vec2": "/m/w2v"}
    section = {"audio": audio, "crop": {"size": 512},
               "teeth_mask": {"enabled": False, "min_lightness": 0.85, "max_chroma": 22.0}}
    assert manifest_config(section) == {"audio": {"features": ["mel", "hubert"], "hubert": "/m/hubert"},
                                        "crop": {"size": 512}, "teeth_mask": {"enabled": False}}
    section["teeth_mask"]["enabled"] = True
    assert manifest_config(section)["teeth_mask"] == section["teeth_mask"]
    assert section["audio"] is audio and len(audio) == 4  # the config itself is left as it was
