"""Audio features: loading any format, log-mel windows aligned to video frames, the transformers
wav2vec2/HuBERT loading code (tiny randomly initialised stand-in models made here), refusals."""
from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest

from pipeline.common.errors import InputError
from pipeline.preprocess import audio_features as af
from tests.conftest import PROJECT_ROOT, SAMPLE_VIDEO

FLAC = PROJECT_ROOT / "resources" / "audio" / "jfk_4.2s.flac"
WAV = PROJECT_ROOT / "resources" / "audio" / "RD_Radio31_4.2s.wav"


def ffmpeg(*args) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-y", *map(str, args)], check=True)


# ----------------------------------------------------------------------------------- loading
def test_load_audio_any_format_and_rate(tmp_path):
    import soundfile as sf

    ref, sr = sf.read(str(WAV), dtype="float32")  # 16 kHz stereo PCM: the reference is the channel mean
    assert sr == 16000 and ref.shape[1] == 2
    ref = ref.mean(axis=1)
    wav = af.load_audio_16k_mono(WAV)
    assert wav.dtype == np.float32 and wav.ndim == 1 and len(wav) == len(ref) == 67200  # 4.2 s
    assert np.abs(wav - ref).max() < 1e-3
    flac = af.load_audio_16k_mono(FLAC)  # 44.1 kHz stereo FLAC
    assert abs(len(flac) - 67200) <= 2
    ffmpeg("-i", WAV, "-ar", "48000", tmp_path / "a48.wav")
    ffmpeg("-i", WAV, "-c:a", "libmp3lame", "-b:a", "128k", tmp_path / "a.mp3")
    shutil.copy(WAV, tmp_path / "really_a_wav.mp3")  # wrong extension
    for name in ("a48.wav", "a.mp3", "really_a_wav.mp3"):
        x = af.load_audio_16k_mono(tmp_path / name)
        assert abs(len(x) - 67200) <= 1200, name  # mp3 adds encoder padding
        n = 16000  # the first second
        # same speech (mp3 may be delayed by its decoder padding: search a small lag)
        best = max(np.corrcoef(x[k:k + n], wav[:n])[0, 1] for k in range(0, 1200, 1))
        assert best > 0.98, (name, best)
    video = af.load_audio_16k_mono(SAMPLE_VIDEO)  # the audio of a video file
    assert abs(len(video) - 12 * 16000) <= 1600


def test_load_audio_refuses_bad_files(tmp_path):
    junk = tmp_path / "junk.wav"
    junk.write_text("this is not audio\n")
    with pytest.raises(InputError, match=r"junk\.wav: unreadable or corrupt media file"):
        af.load_audio_16k_mono(junk)
    silent = tmp_path / "silent.mp4"
    ffmpeg("-i", SAMPLE_VIDEO, "-t", "1", "-an", "-c", "copy", silent)
    with pytest.raises(InputError, match=r"silent\.mp4: no audio stream"):
        af.load_audio_16k_mono(silent)
    with pytest.raises(InputError, match=r"missing\.flac: file not found"):
        af.load_audio_16k_mono(tmp_path / "missing.flac")


def test_n_frames_for():
    assert af.n_frames_for(np.zeros(48000)) == 75
    assert af.n_frames_for(np.zeros(48000 + 639)) == 75
    assert af.n_frames_for(np.zeros(48000 + 640)) == 76
    assert af.n_frames_for(np.zeros(48000), fps=30) == 90


# -------------------------------------------------------------------------------------- mel
def test_mel_windows_are_aligned_to_video_frames():
    """A 1 kHz burst during video frame 25 (t = 1.00 ... 1.04 s = mel frames 100-104; the 25 ms
    windows of mel frames 99 and 105 overlap it by 2.5 ms) shows up at window positions 7-13 of
    frame 25 (its centre index 8 is t = 1.00 s) and 4 positions later in frame 24."""
    sr, n = 16000, 50
    t = np.arange(2 * sr) / sr
    audio = (1e-4 * np.random.default_rng(0).standard_normal(len(t))).astype(np.float32)
    burst = (t >= 1.0) & (t < 1.04)
    audio[burst] += 0.5 * np.sin(2 * np.pi * 1000 * t[burst]).astype(np.float32)
    mel = af.extract_features(audio, n, "mel", {}, fps=25)
    assert mel.shape == (50, 16, 80) and mel.dtype == np.float32
    energy = mel.max(axis=2)  # [N, 16]
    loud = energy > energy.min() + 5.0
    assert set(np.flatnonzero(loud[25])) <= set(range(7, 14)) and loud[25, 8:13].all()
    assert set(np.flatnonzero(loud[24])) <= set(range(11, 16)) and loud[24, 12:16].all()
    assert not loud[25, :7].any() and not loud[24, :11].any()
    assert not loud[20].any() and not loud[30].any()
    # the loudest bin is the mel bin of 1 kHz
    import librosa

    centres = librosa.mel_frequencies(n_mels=82, fmin=0, fmax=8000)[1:-1]
    assert abs(centres[int(mel[25, 9].argmax())] - 1000) < 120
    # frames past the end of the audio are padded with the silence floor
    tail = af.extract_features(audio[: sr], 30, "mel", {}, fps=25)
    assert np.all(tail[29, 12:] == np.float32(np.log(af.MEL_FLOOR)))


# --------------------------------------------------------------- wav2vec2 / HuBERT (stand-ins)
@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    """Tiny randomly initialised Wav2Vec2ForCTC / Wav2Vec2Model / HubertModel saved with
    save_pretrained (standard conv strides: 320 samples = 50 Hz). Only used to test loading."""
    import torch

    from pipeline.common.tvcompat import import_torchvision

    import_torchvision()
    from transformers import HubertConfig, HubertModel, Wav2Vec2Config, Wav2Vec2ForCTC, Wav2Vec2Model

    torch.set_num_threads(1)
    torch.manual_seed(0)
    kw = dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
              conv_dim=(8,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)
    d = tmp_path_factory.mktemp("tiny_models")
    Wav2Vec2ForCTC(Wav2Vec2Config(vocab_size=44, **kw)).eval().save_pretrained(d / "w2v_ctc")
    Wav2Vec2Model(Wav2Vec2Config(**kw)).eval().save_pretrained(d / "w2v")
    HubertModel(HubertConfig(**kw)).eval().save_pretrained(d / "hubert")
    return d


def _reference(model_cls, path, audio):
    """Independent forward pass on the whole normalised utterance."""
    import torch

    model = model_cls.from_pretrained(path).eval()
    x = (audio - audio.mean()) / np.sqrt(audio.var() + 1e-7)
    with torch.inference_mode():
        out = model(torch.from_numpy(x)[None])
    return (out.logits if hasattr(out, "logits") else out.last_hidden_state)[0].numpy()


def test_wav2vec2_windows(tiny_models):
    from transformers import Wav2Vec2ForCTC, Wav2Vec2Model

    audio = af.load_audio_16k_mono(FLAC)
    n = af.n_frames_for(audio)  # 105 (4.2 s)
    cfg = {"wav2vec2": str(tiny_models / "w2v_ctc")}
    eo = af.extract_features(audio, n, "wav2vec2", cfg)
    assert eo.shape == (105, 16, 44) and eo.dtype == np.float32  # ER-NeRF aud_eo.npy: [N, 16, 44]
    ref = _reference(Wav2Vec2ForCTC, cfg["wav2vec2"], audio)  # [209, 44] at 50 Hz
    for i in (4, 30, 60):  # window of frame i = logits 2i-8 ... 2i+7
        np.testing.assert_allclose(eo[i], ref[2 * i - 8: 2 * i + 8], atol=1e-4)
    assert np.all(eo[0, :8] == 0.0)  # zeros before the audio, as the anchors' F.unfold(padding=8)
    np.testing.assert_allclose(eo[0, 8:], ref[:8], atol=1e-4)
    hid = af.extract_features(audio, n, "wav2vec2", {"wav2vec2": str(tiny_models / "w2v")})
    assert hid.shape == (105, 16, 16)  # no CTC head: last hidden state
    np.testing.assert_allclose(hid[30], _reference(Wav2Vec2Model, tiny_models / "w2v", audio)[52:68], atol=1e-4)


def test_hubert_pairs(tiny_models):
    from transformers import HubertModel

    audio = af.load_audio_16k_mono(WAV)
    n = af.n_frames_for(audio)
    hu = af.extract_features(audio, n, "hubert", {"hubert": str(tiny_models / "hubert")})
    assert hu.shape == (105, 2, 16)  # [N, 2, 1024] for hubert-large
    ref = _reference(HubertModel, tiny_models / "hubert", audio)
    np.testing.assert_allclose(hu[:104].reshape(-1, 16), ref[:208], atol=1e-4)  # frame i = states 2i, 2i+1


def test_cli_writes_named_files(tiny_models, tmp_path):
    from pipeline.common.layout import AUDIO_FEATURE_FILES

    track = tmp_path / "crop.json"
    track.write_text(json.dumps({"n_frames": 70, "fps": 25}))  # the video's frame count rules
    cfg = {"features": ["mel", "hubert"], "hubert": str(tiny_models / "hubert")}
    assert af.main(["--audio", str(WAV), "--track", str(track), "--out-dir", str(tmp_path),
                    "--cfg", json.dumps(cfg), "--threads", "1"]) == 0
    assert np.load(tmp_path / AUDIO_FEATURE_FILES["mel"]).shape == (70, 16, 80)
    assert np.load(tmp_path / AUDIO_FEATURE_FILES["hubert"]).shape == (70, 2, 16)


def test_refusals(tmp_path):
    audio = np.zeros(16000, np.float32)
    with pytest.raises(InputError, match="DeepSpeech features .* not supported in this build"):
        af.extract_features(audio, 25, "deepspeech", {})
    with pytest.raises(InputError, match="config preprocess.audio.hubert: feature 'hubert' is requested but no"):
        af.extract_features(audio, 25, "hubert", {})
    with pytest.raises(InputError, match=r"nowhere: not a transformers model folder"):
        af.extract_features(audio, 25, "wav2vec2", {"wav2vec2": str(tmp_path / "nowhere")})
