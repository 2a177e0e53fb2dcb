"""Weights manager: manifest, require/verify, fetch from a file:// URL with right and wrong hashes."""
from __future__ import annotations

import hashlib

import pytest
import yaml

from pipeline.weights import (WeightsMissing, fetch, hash_problem, load_manifest, require,
                              weights_path)
from pipeline.weights.__main__ import main as weights_main

NEEDED = {"lpips_alexnet", "fid_inception", "syncnet_v2", "s3fd", "arcface_r100", "hubert_large",
          "wav2vec2", "deepspeech"}


def test_manifest_lists_every_metric_weight():
    man = load_manifest()
    assert NEEDED <= set(man)
    for e in man.values():
        assert e.filename and e.url and e.licence and e.stages
        assert e.kind in ("file", "folder")
        assert e.sha256 is None or len(e.sha256) == 64
    # the published hash prefixes are the ones in the file names
    assert man["lpips_alexnet"].sha256_prefix == "7be5be79" and "7be5be79" in man["lpips_alexnet"].url
    assert man["fid_inception"].sha256_prefix == "6726825d" and "6726825d" in man["fid_inception"].url


def _manifest_with(tmp_path, src, sha=None, prefix=None):
    data = {"weights": [{"name": "toy", "filename": "toy.bin", "url": src.as_uri(), "sha256": sha,
                         "sha256_prefix": prefix, "size": src.stat().st_size, "licence": "test",
                         "stages": ["test"]}]}
    p = tmp_path / f"manifest_{sha}_{prefix}.yaml"  # load_manifest caches by path
    p.write_text(yaml.safe_dump(data))
    return p


def test_fetch_file_url_verifies_hash(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(b"pretrained bytes" * 100)
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    wdir = tmp_path / "weights"
    good = _manifest_with(tmp_path, src, sha=digest)
    path = fetch("toy", wdir, manifest=good)
    assert path.read_bytes() == src.read_bytes()

    # wrong hash: rejected, and nothing is left in the weights folder
    wdir2 = tmp_path / "weights2"
    bad = _manifest_with(tmp_path, src, sha="0" * 64)
    with pytest.raises(WeightsMissing, match="rejected"):
        fetch("toy", wdir2, manifest=bad)
    assert not (wdir2 / "toy.bin").exists()
    assert list(wdir2.iterdir()) == []

    # published-prefix check (torch.hub convention)
    entry = load_manifest(_manifest_with(tmp_path, src, prefix=digest[:8]))["toy"]
    assert hash_problem(entry, src) is None
    entry = load_manifest(_manifest_with(tmp_path, src, prefix="deadbeef"))["toy"]
    assert "prefix" in hash_problem(entry, src)

    # CLI: fetch with the bad manifest exits 1, verify of the good file exits 0
    assert weights_main(["fetch", "toy", "--weights-dir", str(wdir2), "--manifest", str(bad)]) == 1
    assert weights_main(["verify", "toy", "--weights-dir", str(wdir), "--manifest", str(good)]) == 0


def test_require_missing_names_the_file(tmp_path, capsys):
    with pytest.raises(WeightsMissing) as exc:
        require("syncnet_v2", tmp_path)
    assert "syncnet_v2.model not found" in exc.value.reason
    assert weights_path("syncnet_v2", tmp_path) == tmp_path / "syncnet_v2.model"
    assert weights_main(["list", "--weights-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "syncnet_v2" in out and "MISSING" in out


def test_require_verifies_by_default_and_names_both_hashes(tmp_path, monkeypatch):
    """A different file under a real weights file name is refused by default: an error (not a
    missing file) naming the file, its sha256 and the pinned one."""
    from pipeline.weights import VERIFY_ENV, WeightsMismatch, load_manifest, sha256_of

    path = tmp_path / "alexnet-owt-7be5be79.pth"
    path.write_bytes(b"not the real alexnet")
    with pytest.raises(WeightsMismatch) as exc:
        require("lpips_alexnet", tmp_path)
    assert not isinstance(exc.value, WeightsMissing)
    assert str(exc.value).startswith(f"{path}: sha256 {sha256_of(path)}, expected "
                                     f"{load_manifest()['lpips_alexnet'].sha256} (manifest)")
    assert require("lpips_alexnet", tmp_path, verify=False) == path  # loading-code tests only
    monkeypatch.setenv(VERIFY_ENV, "0")
    assert require("lpips_alexnet", tmp_path) == path


def test_pinned_hashes_match_the_published_file_name_prefixes():
    """Every full sha256 in the manifest starts with the prefix its publisher put in the file name."""
    for e in load_manifest().values():
        if e.sha256:
            assert len(e.sha256) == 64 and int(e.sha256, 16) >= 0, e.name
        if e.sha256 and e.sha256_prefix:
            assert e.sha256.startswith(e.sha256_prefix), e.name
    pinned = {e.name for e in load_manifest().values() if e.sha256}
    assert {"lpips_alexnet", "fid_inception", "fan_2dfan4"} <= pinned


def test_folder_entries_and_non_direct_downloads(tmp_path):
    with pytest.raises(WeightsMissing, match="not a direct download"):
        fetch("hubert_large", tmp_path)
    # files a tool of their own installs after a licence prompt: fetch names the command
    with pytest.raises(WeightsMissing, match=r"installed by its own tool after you accept its licence \(OpenFace") as exc:
        fetch("openface_models_pyfaceau", tmp_path)
    assert exc.value.reason.endswith(f"OPENFACE_MODELS_DIR={tmp_path}/OpenFaceModels pyfaceau-download-models")
    assert not (tmp_path / "OpenFaceModels").exists()
    (tmp_path / "hubert-large-ls960-ft").mkdir()
    assert require("hubert_large", tmp_path).is_dir()
