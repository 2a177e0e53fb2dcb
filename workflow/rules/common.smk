# Shared set-up: config validation, the identities table, wildcard constraints, helpers.
import json
import os
import re
import shlex
import sys

from snakemake.utils import validate

from pipeline.common.config import load_identities, resolve_path, validate_config
from pipeline.common.layout import AUDIO_FEATURE_FILES, SELF_DRIVEN_TEST


# Schema validation (fills defaults too); a bad config stops here with the key path and reason.
validate(config, "../schemas/config.schema.yaml")
validate_config(config, "config.yaml")

IDENTITIES = {row["id"]: row for row in load_identities(config["identities"])}

envvars:
    "PATH",


# Rules call `python -m pipeline.<stage>`: make `python` the interpreter snakemake runs in (the
# project's venv), also when .venv/bin/snakemake is called without activating the venv.
os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")


# Scheduling: training, then rendering, is the longest path of every run, so those jobs start first
# and the metrics, baseline and one-shot jobs fill the cores left over (without it, the default job
# on 2 cores began its head stages after the baseline's metrics; docs/performance.md). Jobs of the
# other rules have Snakemake's default priority 0.
TRAIN_PRIORITY = 2
RENDER_PRIORITY = 1


def _alternation(names):
    return "|".join(re.escape(n) for n in sorted(names)) or "NO_MATCH^"


wildcard_constraints:
    identity=_alternation(IDENTITIES),


# trained methods whose emotion_edit protocol is rendered (render.emotion_edit; render.smk, metrics.smk)
EMOTION_EDIT_METHODS = [m for m in config["render"].get("emotion_edit", []) if m in config["train"]["methods"]]

DATA = "results/data/{identity}"
LOGS = "results/logs"
BENCH = "results/benchmarks"

# Every .smk appends the final targets it contributes to `rule all`.
ALL_TARGETS = []

# Each workflow/rules/baselines/*.smk appends the (method, identity, test) runs it renders; the
# report rules compare them with the trained methods.
BASELINE_RUNS = []


def cfg_arg(*keys, drop=()):
    """Shell-quoted JSON of a config sub-tree, passed to a stage as --cfg (params: reruns on change),
    without the keys in ``drop`` (those that do not change the stage's output, e.g. the list of
    methods for one method's training job)."""
    node = config
    for k in keys:
        node = node[k]
    if drop:
        node = {k: v for k, v in node.items() if k not in drop}
    return shlex.quote(json.dumps(node, sort_keys=True))


def audio_features_cfg():
    """Shell-quoted JSON of ``preprocess.audio`` for the audio-features stage: its features and
    their model folders only (``pipeline.common.config.audio_config_for``)."""
    from pipeline.common.config import audio_config_for

    section = config["preprocess"]["audio"]
    return shlex.quote(json.dumps(audio_config_for(section, section["features"]), sort_keys=True))


def audio_features_threads():
    """Cores the audio-features job takes: 2 when a configured feature runs a network through torch
    (wav2vec2, hubert; ``pipeline.preprocess.audio_features.uses_torch``), whose thread count
    follows the job's; 1 for the built-in log-mel alone (librosa, one thread: a second core would
    only keep the other stages of the identity from starting beside it)."""
    from pipeline.preprocess.audio_features import uses_torch

    return 2 if uses_torch(config["preprocess"]["audio"]["features"]) else 1


def render_audio_cfg(wildcards):
    """The render job's --audio-cfg: for a cross-driven test, ``preprocess.audio`` with the model
    folder of the feature the models are trained on (``train.audio_feature``), the one extracted
    from the driving audio; nothing for the self-driven test, which reads the dataset's features."""
    from pipeline.common.config import audio_config_for

    if wildcards.test == SELF_DRIVEN_TEST:
        return shlex.quote("{}")
    node = audio_config_for(config["preprocess"]["audio"], [config["train"]["audio_feature"]])
    return shlex.quote(json.dumps(node, sort_keys=True))


def manifest_cfg():
    """Shell-quoted JSON of the ``preprocess`` section for the dataset manifest's --cfg (params),
    without the settings of a switched-off stage (``pipeline.common.config.manifest_config``)."""
    from pipeline.common.config import manifest_config

    return shlex.quote(json.dumps(manifest_config(config["preprocess"]), sort_keys=True))


def train_cfg(stage):
    """Shell-quoted JSON of the ``train`` section for one training stage's --cfg (params): without
    ``methods`` and the overrides only later stages read (``pipeline.train.profiles.stage_train_cfg``),
    so that e.g. a torso_steps override retrains the torsos, not the heads."""
    from pipeline.train.profiles import stage_train_cfg

    return shlex.quote(json.dumps(stage_train_cfg(config["train"], stage), sort_keys=True))


def identity_video(wildcards):
    """Absolute path of an identity's raw video (from the identities table)."""
    return str(resolve_path(IDENTITIES[wildcards.identity]["video"]))


def teeth_mask_report(wildcards):
    """teeth_mask.json of the identity when preprocess.teeth_mask.enabled (TalkingGaussian extras), else nothing."""
    if not config["preprocess"].get("teeth_mask", {}).get("enabled", False):
        return []
    return f"{DATA}/teeth_mask.json".format(identity=wildcards.identity)


def metrics_cfg(wildcards):
    """The metrics job's --cfg: config ``metrics`` with only the metric list of the job's protocol
    (``self_driven`` for the self-driven test, else ``cross_driven``), so that changing one
    protocol's list reruns only that protocol's metrics."""
    key = "self_driven" if wildcards.test == SELF_DRIVEN_TEST else "cross_driven"
    node = {k: v for k, v in config["metrics"].items() if k not in ("self_driven", "cross_driven") or k == key}
    return shlex.quote(json.dumps(node, sort_keys=True))


def metric_weight_files(wildcards):
    """The present pretrained files the metrics job of ``wildcards.test`` uses (its protocol's
    config metric groups, manifest ``stages: metrics.<group>``): inputs of the metrics rule, so
    that fetching or replacing a weight file reruns exactly the metrics that use it."""
    from pipeline.common.config import weights_dir
    from pipeline.weights import present_files

    key = "self_driven" if wildcards.test == SELF_DRIVEN_TEST else "cross_driven"
    return [str(p) for p in present_files([f"metrics.{g}" for g in config["metrics"].get(key, [])], weights_dir(config))]


def stage_weight_files(*stages):
    """An input function: the present pretrained files of the weights-manifest ``stages`` (entries
    tagged e.g. ``preprocess.landmarks``; ``preprocess.aus``: pyfaceau's OpenFace model stamp), so
    that fetching or replacing one reruns the jobs that use it, as :func:`metric_weight_files` does
    for the metrics. For ``preprocess.threedmm`` the Surrey Face Model files of the folder the stage
    itself uses (``pipeline.preprocess.threedmm.sfm_dir``: ``model_dir`` when set)."""

    def weight_files(wildcards):
        from pipeline.common.config import weights_dir
        from pipeline.preprocess.threedmm import SFM_FILES, ThreeDMMConfig, sfm_dir
        from pipeline.weights import present_files

        if "preprocess.threedmm" in stages and config["preprocess"]["threedmm"].get("model_dir"):
            folder, _ = sfm_dir(ThreeDMMConfig.from_dict(config["preprocess"]["threedmm"]), weights_dir(config))
            return [str(folder / f) for f in SFM_FILES.values()] if folder else []
        return [str(p) for p in present_files(list(stages), weights_dir(config))]

    return weight_files


def aus_cfg(wildcards, input):
    """The AU stage's --cfg, config preprocess.aus plus ``openface_models`` (pyfaceau's model
    folder) when its files are installed; unchanged otherwise, so results made without them keep
    their params."""
    from pipeline.common.config import weights_dir
    from pipeline.preprocess.aus import pyfaceau_models_dir

    node = dict(config["preprocess"]["aus"])
    if input.get("weights"):
        node["openface_models"] = str(pyfaceau_models_dir(weights_dir(config)))
    return shlex.quote(json.dumps(node, sort_keys=True))


def identity_emotion(wildcards):
    """An identity's emotion cell of the identities table ('' when empty; pipeline.common.emotion)."""
    return IDENTITIES[wildcards.identity].get("emotion") or ""


def input_dir(name):
    """Params helper: a function of (wildcards, input) giving the folder of the input file ``name``
    (the first file when ``name`` is a list)."""

    def _input_dir(wildcards, input):
        value = input[name]
        return os.path.dirname(value if isinstance(value, str) else value[0])

    return _input_dir


def input_dirs(name):
    """Params helper: the folders of every file of the input list ``name``."""

    def _input_dirs(wildcards, input):
        return [os.path.dirname(p) for p in input[name]]

    return _input_dirs


def output_dir(name):
    """Params helper: the folder of the output file ``name`` (the first file when it is a list)."""

    def _output_dir(wildcards, output):
        value = output[name]
        return os.path.dirname(value if isinstance(value, str) else value[0])

    return _output_dir


def trained_model_manifest(wildcards):
    """train_manifest.json of a trained method (its training time reaches the tables); baselines have none."""
    if wildcards.method in config["train"]["methods"]:
        return [f"results/models/{wildcards.method}/{wildcards.identity}/train_manifest.json"]
    return []


def model_dir_arg(wildcards, input):
    """``--model-dir DIR`` of the metrics CLI when the method has a trained model, else nothing."""
    return f"--model-dir {shlex.quote(os.path.dirname(input.model[0]))}" if input.get("model") else ""


def driving_audio(wildcards):
    """[the driving audio file] of a cross-driven test; [] for the self-driven test."""
    if wildcards.test == SELF_DRIVEN_TEST:
        return []
    return [str(resolve_path(config["render"]["cross_driven"][wildcards.test]))]


def background_control(wildcards):
    """The background image of render.controls.background when set, else nothing."""
    if config["render"]["controls"].get("background"):
        return [str(resolve_path(config["render"]["controls"]["background"]))]
    return []


def audio_arg(wildcards, input):
    """``--audio FILE`` of the render CLI for a cross-driven test (input ``audio``), else nothing."""
    return f"--audio {shlex.quote(input.audio[0])}" if input.get("audio") else ""


def driving_arg(wildcards, input):
    """``--audio FILE`` of a baseline's CLI for a cross-driven test (input ``driving``), else nothing."""
    return f"--audio {shlex.quote(input.driving[0])}" if input.driving else ""


def external_video(wildcards):
    """The video of config baselines.external for (method, identity, test)."""
    return str(resolve_path(EXTERNAL_RUNS[(wildcards.method, wildcards.identity, wildcards.test)]))


def reported_inputs(wildcards):
    """The reported-numbers file (config ``report.reported_numbers``) and the sources file beside
    it, which the tables read too (``pipeline.report.tables.reported_files``); none when unset."""
    from pipeline.report.tables import reported_files

    path = config["report"].get("reported_numbers")
    return reported_files(resolve_path(path) if path else None)


def reported_arg(wildcards, input):
    """``--reported FILE`` of the tables CLI when a reported-numbers file is configured, else nothing."""
    return f"--reported {shlex.quote(input.reported[0])}" if input.reported else ""
