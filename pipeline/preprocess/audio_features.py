"""Audio features stage: 16 kHz speech -> one feature window per video frame.

``python -m pipeline.preprocess.audio_features --audio aud.wav --track crop.json --out-dir DIR --cfg JSON``

Features (config ``preprocess.audio.features``; file names from
:data:`pipeline.common.layout.AUDIO_FEATURE_FILES`):

=========== ============== ================== ==================================================
name        file           shape              what
=========== ============== ================== ==================================================
mel         aud_mel.npy    [N, 16, 80]        log-mel (built in, librosa): 80 bins, 25 ms window,
                                              10 ms hop; 16 mel frames centred on each video frame
wav2vec2    aud_eo.npy     [N, 16, D]         transformers Wav2Vec2 at 50 Hz: CTC logits (D =
                                              vocabulary, 44 for ER-NeRF's esperanto model) or,
                                              without a CTC head, the last hidden state; 16 frames
                                              centred on each video frame (ER-NeRF ``nerf/asr.py``)
hubert      aud_hu.npy     [N, 2, H]          transformers HuBERT last hidden state at 50 Hz, the
                                              2 states of each video frame (SyncTalk / ER-NeRF
                                              ``hubert.py``; H = 1024 for hubert-large-ls960-ft)
deepspeech  aud_ds.npy     [N, 16, 29]        not supported in this build (needs TensorFlow 1.x):
                                              refused with a clear error
=========== ============== ================== ==================================================

Frame alignment: video frame ``i`` (``fps`` frames/s) starts at ``t_i = i / fps``; a window of
``W`` feature frames at rate ``R`` covers feature indices ``c_i - W/2 ... c_i + W/2 - 1`` with
``c_i = round(t_i * R)`` (the centring of AD-NeRF/ER-NeRF's 16-frame DeepSpeech windows). Indices
outside the audio are padded (mel: silence floor; wav2vec2: zeros, as the anchors' ``F.unfold``;
hubert: nearest frame).

Reusable by the renderer (cross-driven audio): :func:`load_audio_16k_mono`, :func:`n_frames_for`,
:func:`extract_features`.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.common.config import StageConfig, parse_cfg_arg
from pipeline.common.errors import InputError
from pipeline.common.io import atomic_path, read_json
from pipeline.common.layout import AUDIO_FEATURE_FILES
from pipeline.common.log import run_main, setup_logging
from pipeline.preprocess.media import AUDIO_SR, load_audio

#: log-mel parameters (16 kHz): 25 ms window, 10 ms hop (100 Hz), 80 bins
MEL_BINS, MEL_HOP, MEL_WIN, MEL_NFFT = 80, 160, 400, 512
#: floor of the mel power before the log (the value of padded "silence")
MEL_FLOOR = 1e-5
#: feature frames per video-frame window
WINDOW = 16
#: wav2vec2/HuBERT are run on chunks of this many seconds with CONTEXT_S seconds of context
CHUNK_S, CONTEXT_S = 20.0, 1.0
#: channels the anchors' AudioNets take per feature file (ER-NeRF ``nerf_triplane/network.py``
#: lines 104-109, RAD-NeRF ``nerf/network.py`` lines 114-119, TalkingGaussian
#: ``scene/motion_net.py`` lines 100-105): esperanto wav2vec2 CTC logits 44, HuBERT-large 1024,
#: DeepSpeech 29
ANCHOR_CHANNELS = {"wav2vec2": 44, "hubert": 1024, "deepspeech": 29}


@dataclass
class AudioConfig(StageConfig):
    """Config ``preprocess.audio``."""

    features: tuple = ("mel",)
    """Features to compute: any of mel, wav2vec2, hubert, deepspeech."""
    wav2vec2: str | None = None
    """Local folder of a transformers Wav2Vec2 model (``from_pretrained``), or None."""
    hubert: str | None = None
    """Local folder of a transformers HuBERT model (``from_pretrained``), or None."""
    deepspeech: str | None = None
    """DeepSpeech 0.1 graph (AD-NeRF); not supported in this build."""

    def __post_init__(self) -> None:
        self.features = tuple(self.features)  # a JSON list in the config


def load_audio_16k_mono(path: str | Path) -> np.ndarray:
    """Any audio or video file ffmpeg reads (wav, flac, mp3, mp4, a WAV with a wrong extension;
    any sample rate or channel count) -> mono float32 [S] at 16 kHz, range [-1, 1].

    Raises:
        InputError: naming the file when it is missing, unreadable or has no audio stream.
    """
    return load_audio(path, AUDIO_SR)


def uses_torch(features) -> bool:
    """Whether computing ``features`` (names as :attr:`AudioConfig.features`) runs a network through
    torch: any feature but the built-in log-mel (librosa, one thread). ``main`` then sets torch's
    threads to the job's, and the Snakemake rule gives the job two cores
    (``audio_features_threads`` in ``workflow/rules/common.smk``). Raises nothing."""
    return any(f != "mel" for f in features)


def n_frames_for(audio_16k: np.ndarray, fps: float = 25) -> int:
    """Number of whole video frames at ``fps`` the audio covers: ``floor(S * fps / 16000)``."""
    return int(math.floor(len(audio_16k) * fps / AUDIO_SR + 1e-6))


def frame_windows(feats: np.ndarray, n_frames: int, rate: float, fps: float, window: int,
                  offset: int | None = None, pad: float | None = None) -> np.ndarray:
    """Cut one window of feature frames per video frame.

    Args:
        feats: [T, D] features at ``rate`` frames/s (frame j at time j / rate).
        n_frames: N, the number of video frames.
        rate: feature frame rate (Hz); fps: video frame rate.
        window: W, feature frames per video frame.
        offset: first index relative to the centre ``c_i = round(i * rate / fps)``; default -W/2
            (centred). 0 gives the W frames starting at the video frame (HuBERT pairs).
        pad: value for indices outside [0, T); None repeats the nearest frame.
    Returns:
        [N, W, D] float32.
    """
    t, d = feats.shape
    off = -(window // 2) if offset is None else offset
    centres = np.round(np.arange(n_frames) * rate / fps).astype(np.int64)
    idx = centres[:, None] + off + np.arange(window)[None, :]
    if t == 0:
        return np.full((n_frames, window, d), 0.0 if pad is None else pad, np.float32)
    out = feats[np.clip(idx, 0, t - 1)].astype(np.float32)
    if pad is not None:
        out[(idx < 0) | (idx >= t)] = pad
    return out


def log_mel(audio_16k: np.ndarray) -> np.ndarray:
    """Log-mel spectrogram [T, 80] at 100 Hz (frame j centred at sample 160 j), natural log of the
    power mel spectrogram floored at :data:`MEL_FLOOR` (librosa, Slaney mel scale, 0-8 kHz)."""
    import librosa

    mel = librosa.feature.melspectrogram(y=np.asarray(audio_16k, np.float32), sr=AUDIO_SR, n_fft=MEL_NFFT,
                                         hop_length=MEL_HOP, win_length=MEL_WIN, n_mels=MEL_BINS,
                                         fmin=0.0, fmax=AUDIO_SR / 2, center=True, power=2.0)
    return np.log(np.maximum(mel, MEL_FLOOR)).T.astype(np.float32)


def _model_dir(name: str, cfg: AudioConfig) -> Path:
    path = getattr(cfg, name)
    if not path:
        raise InputError(f"config preprocess.audio.{name}",
                         f"feature '{name}' is requested but no local model folder is configured "
                         f"(set preprocess.audio.{name} to a transformers from_pretrained folder)")
    p = Path(os.path.expanduser(path))
    if not (p / "config.json").is_file():
        raise InputError(p, f"not a transformers model folder for '{name}' (config.json not found)")
    return p


def _hf_forward(name: str, model_dir: Path, audio_16k: np.ndarray) -> tuple[np.ndarray, float]:
    """Run a local transformers Wav2Vec2/HuBERT model on 16 kHz audio, chunked with context.

    Returns:
        features [T, D] (wav2vec2: CTC logits when the model has a CTC head, else the last hidden
        state; hubert: last hidden state) and their rate in Hz (16000 / total conv stride; 50 Hz
        for the standard models).
    """
    import torch

    from pipeline.common.tvcompat import import_torchvision

    try:  # transformers imports torchvision when it is installed (a CUDA wheel on a CPU torch)
        import_torchvision()
    except ImportError:
        pass
    from transformers import AutoConfig

    try:
        conf = AutoConfig.from_pretrained(model_dir)
    except (OSError, ValueError) as exc:
        raise InputError(model_dir, f"cannot load the model config ({exc})") from None
    archs = conf.architectures or []
    try:
        if name == "hubert":
            from transformers import HubertModel

            model = HubertModel.from_pretrained(model_dir)
            ctc = False
        elif any(a.endswith("ForCTC") for a in archs):
            from transformers import Wav2Vec2ForCTC

            model, ctc = Wav2Vec2ForCTC.from_pretrained(model_dir), True
        else:
            from transformers import Wav2Vec2Model

            model, ctc = Wav2Vec2Model.from_pretrained(model_dir), False
    except (OSError, ValueError) as exc:
        raise InputError(model_dir, f"cannot load the {name} weights ({exc})") from None
    model.eval()
    normalize = True
    pre = model_dir / "preprocessor_config.json"
    if pre.is_file():
        normalize = bool(json.loads(pre.read_text()).get("do_normalize", True))
    stride = int(np.prod(conf.conv_stride))
    rate = AUDIO_SR / stride
    chunk = int(CHUNK_S * rate) * stride
    ctx = int(CONTEXT_S * rate) * stride
    x = np.asarray(audio_16k, np.float32)
    if normalize:  # Wav2Vec2FeatureExtractor(do_normalize=True): zero mean, unit variance
        x = (x - x.mean()) / np.sqrt(x.var() + 1e-7)
    n_total = len(x) // stride
    parts = []
    with torch.inference_mode():
        for s0 in range(0, max(len(x), 1), chunk):
            a, b = max(0, s0 - ctx), min(len(x), s0 + chunk + ctx)
            seg = x[a:b]
            if len(seg) < conf.conv_kernel[0]:
                seg = np.pad(seg, (0, conf.conv_kernel[0] - len(seg)))
            out = model(torch.from_numpy(seg)[None])
            h = (out.logits if ctc else out.last_hidden_state)[0].float().numpy()
            skip = (s0 - a) // stride
            keep = min(chunk, len(x) - s0) // stride
            h = h[skip:skip + keep]
            if len(h) < keep:  # the conv stack loses a frame at the very end: repeat the last
                h = np.concatenate([h, np.repeat(h[-1:], keep - len(h), axis=0)])
            parts.append(h)
    feats = np.concatenate(parts, axis=0)[:n_total] if parts else np.zeros((0, 1), np.float32)
    return feats, rate


def _check_anchor_channels(name: str, channels: int) -> None:
    """Warn when a configured model gives features the anchors' AudioNets cannot take."""
    want = ANCHOR_CHANNELS[name]
    if channels != want:
        logging.getLogger("audio_features").warning(
            "%s: the configured model gives %d channels per frame; the anchors' AudioNets take %d for %s "
            "(docs/preprocess-video.md): the file is usable by this project's models only",
            name, channels, want, AUDIO_FEATURE_FILES[name])


def extract_features(audio_16k: np.ndarray, n_frames: int, name: str, cfg: AudioConfig | dict,
                     fps: float = 25) -> np.ndarray:
    """One feature window per video frame.

    Args:
        audio_16k: mono float32 [S] at 16 kHz (see :func:`load_audio_16k_mono`).
        n_frames: N video frames (e.g. :func:`n_frames_for` or the dataset's frame count).
        name: ``mel`` | ``wav2vec2`` | ``hubert`` | ``deepspeech``.
        cfg: :class:`AudioConfig` or the ``preprocess.audio`` dict (model folders).
        fps: video frame rate.
    Returns:
        float32: mel [N, 16, 80]; wav2vec2 [N, 16, D]; hubert [N, 2, H].
    Raises:
        InputError: unknown name, model folder not configured / not loadable, deepspeech.
    """
    if isinstance(cfg, dict):
        cfg = AudioConfig.from_dict(cfg)
    if name == "mel":
        return frame_windows(log_mel(audio_16k), n_frames, AUDIO_SR / MEL_HOP, fps, WINDOW,
                             pad=float(np.log(MEL_FLOOR)))
    if name == "wav2vec2":
        feats, rate = _hf_forward(name, _model_dir(name, cfg), audio_16k)
        _check_anchor_channels(name, feats.shape[-1])
        # zeros outside the audio, as the anchors' F.unfold(padding=8) (ER-NeRF data_utils/wav2vec.py 238-243)
        return frame_windows(feats, n_frames, rate, fps, WINDOW, pad=0.0)
    if name == "hubert":
        feats, rate = _hf_forward(name, _model_dir(name, cfg), audio_16k)
        _check_anchor_channels(name, feats.shape[-1])
        per_frame = max(1, int(round(rate / fps)))
        return frame_windows(feats, n_frames, rate, fps, per_frame, offset=0)
    if name == "deepspeech":
        raise InputError(cfg.deepspeech or "config preprocess.audio.deepspeech",
                         "DeepSpeech features (aud_ds.npy) are not supported in this build (they need "
                         "TensorFlow 1.x); use wav2vec2 (aud_eo.npy: ER-NeRF/RAD-NeRF --asr_model "
                         "cpierse/wav2vec2-large-xlsr-53-esperanto, TalkingGaussian --audio_extractor esperanto) "
                         "or hubert (aud_hu.npy: ER-NeRF --asr_model facebook/hubert-large-ls960-ft, "
                         "TalkingGaussian --audio_extractor hubert), or mel for this project's own models")
    raise InputError("config preprocess.audio.features", f"unknown audio feature '{name}'")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--audio", required=True, help="aud.wav (any audio file ffmpeg reads)")
    ap.add_argument("--track", help="crop.json: n_frames and fps of the video (else from the audio)")
    ap.add_argument("--fps", type=float, default=25.0, help="video frame rate when --track is not given")
    ap.add_argument("--out-dir", required=True, help="dataset folder (files named as in AUDIO_FEATURE_FILES)")
    ap.add_argument("--cfg", default="{}", help="JSON of config preprocess.audio")
    ap.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "2")))
    args = ap.parse_args(argv)
    log = setup_logging("audio_features")
    cfg = AudioConfig.from_dict(parse_cfg_arg(args.cfg))
    audio = load_audio_16k_mono(args.audio)
    if args.track:
        track = read_json(args.track)
        n, fps = int(track["n_frames"]), float(track["fps"])
    else:
        fps = args.fps
        n = n_frames_for(audio, fps)
    if uses_torch(cfg.features):
        import torch

        torch.set_num_threads(max(1, args.threads))
    for name in cfg.features:
        feats = extract_features(audio, n, name, cfg, fps)
        out = Path(args.out_dir) / AUDIO_FEATURE_FILES[name]
        with atomic_path(out) as tmp:
            np.save(tmp, feats)
        log.info("%s: %s %s -> %s", args.audio, name, tuple(feats.shape), out)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
