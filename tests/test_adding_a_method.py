"""A method added from outside the package (the example of docs/adding-a-method.md): a toy field
conditioned on the audio code and on a new per-frame condition read from a dataset artefact the
test writes, registered here and trained + rendered through the real trainer and renderer with no
other file changed."""
from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass

import numpy as np
import pytest
import torch

from pipeline.common.errors import InputError
from pipeline.models.conditions import CONDITIONS, Condition, register_condition
from pipeline.models.configs import TrainConfig
from pipeline.models.encodings import make_hash_grid
from pipeline.models.fields import HeadField, mlp
from pipeline.models.methods import MethodSpec, get_method, method_names, register, unregister
from pipeline.models.torso import TorsoField
from tests.conftest import SAMPLE_VIDEO

# ---------------------------------------------------------------------------------- the method
#: a new per-frame condition: mean brightness of the frame, one row per img_id in light.npy
LIGHT = Condition("light", (1,), "light.npy", None, "mean brightness of the frame in [0, 1]",
                  load=lambda path, n: np.load(path).reshape(-1, 1))


@dataclass
class ToyConfig(TrainConfig):
    """Toy method: one 3D hash grid, audio code and brightness concatenated into the density MLP."""

    method: str = "toy_nerf"
    """registered method name."""
    light_gain: float = 1.0
    """factor on the brightness input."""


class ToyField(HeadField):
    """``sigma, rgb = MLP([hash(x), audio code, light_gain * light])`` (no regulariser)."""

    def __init__(self, cfg: ToyConfig, aud_dim: int):
        super().__init__(cfg.hidden)
        self.grid = make_hash_grid(3, n_levels=cfg.levels, n_features=cfg.features,
                                   log2_hashmap_size=cfg.log2_hashmap, base_resolution=16,
                                   desired_resolution=cfg.max_resolution)
        self.sigma_net = mlp(self.grid.output_dim + aud_dim + 1, 1 + self.geo_dim, cfg.hidden, 3)
        self.gain = cfg.light_gain

    def _hidden(self, x, cond):
        n = x.shape[0]
        feats = [self.grid((x + 1) / 2), cond["audio"].expand(n, -1), self.gain * cond["light"].expand(n, 1)]
        return self.sigma_net(torch.cat(feats, -1))

    def forward(self, x, d, cond):
        return self._finish(self._hidden(x, cond), d, torch.zeros((), device=x.device))


TOY = MethodSpec(name="toy_nerf", config=ToyConfig, field=ToyField, torso=TorsoField,
                 conditions=("audio", "light"), paper_steps=dict(head_steps=1000, lips_steps=100, torso_steps=1000),
                 summary="toy method of docs/adding-a-method.md")


# ---------------------------------------------------------------------------------- the tests
@pytest.fixture
def toy_method():
    """Register the toy condition and method for one test, then remove them again."""
    register_condition(LIGHT)
    register(TOY)
    yield TOY
    unregister("toy_nerf")
    CONDITIONS.pop("light", None)



@pytest.fixture
def toy_dataset(dev_dataset, tmp_path):
    """The dev dataset plus the toy condition's artefact light.npy and the audio track aud.wav
    the self-driven render muxes."""
    ds = tmp_path / "German"
    shutil.copytree(dev_dataset, ds)
    ids = sorted(int(p.stem) for p in (ds / "gt_imgs").glob("*.jpg"))
    from PIL import Image

    light = [np.asarray(Image.open(ds / "gt_imgs" / f"{i}.jpg"), np.float32).mean() / 255 for i in ids]
    np.save(ds / "light.npy", np.asarray(light, np.float32))
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(SAMPLE_VIDEO), "-t", f"{len(ids) / 25:.2f}", "-ac", "1",
                    "-ar", "16000", str(ds / "aud.wav")], check=True)
    return ds


def test_toy_method_trains_and_renders(toy_method, toy_dataset, tmp_path):
    from pipeline.render.__main__ import render_test
    from pipeline.render.contract import validate_contract
    from pipeline.train.profiles import resolve_config
    from pipeline.train.trainer import STAGES, train_stage

    assert "toy_nerf" in method_names() and get_method("toy_nerf") is TOY
    cfg = resolve_config("toy_nerf", {"profile": "smoke", "device": "cpu",
                                      "overrides": {"resolution": 32, "head_steps": 8, "lips_steps": 2,
                                                    "torso_steps": 2, "val_frames": 1, "light_gain": 2.0}})
    assert isinstance(cfg, ToyConfig) and cfg.light_gain == 2.0
    assert resolve_config("toy_nerf", {"profile": "paper"}).head_steps == 1000
    md = tmp_path / "models" / "toy_nerf" / "German"
    init = None
    for stage in STAGES:
        train_stage(stage, cfg, toy_dataset, md, md / f"{stage}.pt", init=init, weights_dir=tmp_path / "none")
        init = md / f"{stage}.pt"
    man = json.loads((md / "train_manifest.json").read_text())
    assert man["method"] == "toy_nerf" and man["steps"] == {"head": 8, "lips": 2, "torso": 2}

    out = tmp_path / "renders" / "toy_nerf" / "German" / "self"
    m = render_test(md, toy_dataset, "toy_nerf", "German", "self", out, device="cpu")
    assert validate_contract(out) == []
    n_val = len(json.loads((toy_dataset / "transforms_val.json").read_text())["frames"])
    assert m["method"] == "toy_nerf" and m["n_frames"] == n_val and m["resolution"] == [32, 32]


def test_toy_condition_reaches_the_field(toy_method, toy_dataset, tmp_path):
    """The renderer hands the frame's light.npy row to the field: changing the artefact changes
    the rendered frame."""
    from pipeline.models.registry import build_model, checkpoint_payload, load_trained
    from pipeline.render.protocol import self_driven
    from pipeline.render.renderer import Renderer
    from pipeline.common.layout import DatasetLayout
    from pipeline.models.configs import make_config

    torch.manual_seed(0)
    meta = dict(H=16, W=16, focal=20.0, cx=8.0, cy=8.0, scene_scale=0.5, bound=1.0, audio_feature="mel",
                audio_window=8, audio_shape=[16, 80], profile="smoke")
    model = build_model(make_config("toy_nerf", dict(levels=2, log2_hashmap=8, max_resolution=32, hidden=16,
                                                     n_samples=8, occ_resolution=8, torso_levels=2,
                                                     torso_resolution=16)), meta)
    torch.save(checkpoint_payload(model, "head", {}), tmp_path / "head.pt")
    head = load_trained(tmp_path)
    assert head.conditions == ("audio", "light")
    data = DatasetLayout(toy_dataset, "German")
    frames = []
    for scale in (1.0, 0.0):
        np.save(toy_dataset / "light.npy", np.load(toy_dataset / "light.npy") * scale)
        seq = self_driven(data, "mel", head.conditions, "toy_nerf")
        assert seq.conditions["light"].shape == (len(seq), 1)
        frames.append(Renderer(head, data).render_all(seq.head(1))[0][0])
    assert np.abs(frames[0] - frames[1]).max() > 1e-4


def test_missing_condition_artefact_names_file_and_method(toy_method, toy_dataset):
    from pipeline.train.data import TalkingDataset

    (toy_dataset / "light.npy").unlink()
    with pytest.raises(InputError, match=r"light\.npy: file not found \(method toy_nerf needs it") as exc:
        TalkingDataset(toy_dataset, 32, "mel", conditions=TOY.conditions, method="toy_nerf")
    assert str(toy_dataset / "light.npy") in str(exc.value)
