"""Crop/resample stage: window planning (deadband, smoothing, clamping) and the real Obama clip
(720p, 29.97 fps, camera push-in at 46 s) -> stable 512x512 @ 25 fps with the face centred."""
from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest

from pipeline.preprocess.crop import TRACK_FPS, CropConfig, plan_windows
from tests.conftest import require_shared


def _track(cx, cy, side, seconds=10.0):
    t = np.arange(int(seconds * TRACK_FPS)) / TRACK_FPS
    f = lambda v: np.broadcast_to(v(t) if callable(v) else v, t.shape)  # noqa: E731
    return t, np.stack([f(cx), f(cy), f(side)], axis=1).astype(np.float64)


def test_static_head_with_detector_noise_gives_fixed_window():
    rng = np.random.default_rng(0)
    t, boxes = _track(640.0, 300.0, 120.0)
    boxes = boxes + rng.normal(0, 2.0, boxes.shape)  # detector jitter of 2 px
    cfg = CropConfig()
    win, fixed = plan_windows(t, boxes, 250, 1280, 720, cfg)
    assert fixed and win.shape == (250, 3)
    x, y, side = win[0]
    assert side == pytest.approx(cfg.margin * 120, rel=0.03)
    assert x + side / 2 == pytest.approx(640, abs=3)
    assert y + side / 2 == pytest.approx(300 + cfg.center_y_shift * 120, abs=3)


def test_moving_head_window_follows_smoothly_and_locks_again():
    # the head moves 200 px to the right between 3 s and 5 s, then stays
    t, boxes = _track(lambda t: 500 + 200 * np.clip((t - 3) / 2, 0, 1), 300.0, 120.0)
    cfg = CropConfig(mode="follow")
    win, fixed = plan_windows(t, boxes, 250, 1280, 720, cfg)
    assert not fixed
    steps = np.abs(np.diff(win, axis=0))
    assert steps.max() < 0.05 * win[0, 2]  # no jumps: < 5 % of the side per frame
    assert np.abs(np.diff(win, 2, axis=0)).max() < 0.005 * win[0, 2]  # no jerks: speed changes gently
    assert np.ptp(win[:60], axis=0).max() == 0  # fixed before the move
    assert np.ptp(win[-40:], axis=0).max() == 0  # locked again after it
    assert win[-1, 0] + win[-1, 2] / 2 == pytest.approx(700, abs=0.02 * win[-1, 2])


def test_fixed_mode_holds_a_moving_head_in_one_window():
    # a head moving 40 px to the right: the default (fixed) mode keeps one window holding it throughout
    t, boxes = _track(lambda t: 500 + 40 * np.clip((t - 3) / 2, 0, 1), 300.0, 120.0)
    cfg = CropConfig()
    assert cfg.mode == "fixed"
    win, fixed = plan_windows(t, boxes, 250, 1280, 720, cfg)
    assert fixed
    x, y, side = win[0]
    head_side = cfg.margin * 120                      # the per-frame target window
    assert side == pytest.approx(head_side + 40, rel=0.02)    # union of the targets at 500 and 540
    assert x == pytest.approx(500 - head_side / 2, abs=3) and x + side == pytest.approx(540 + head_side / 2, abs=3)
    # a move larger than fixed_max_scale allows (a walking speaker, a zoom): the window follows
    t, boxes = _track(lambda t: 300 + 600 * np.clip((t - 3) / 2, 0, 1), 300.0, 120.0)
    win, fixed = plan_windows(t, boxes, 250, 1280, 720, cfg)
    follow, _ = plan_windows(t, boxes, 250, 1280, 720, CropConfig(mode="follow"))
    assert not fixed and np.array_equal(win, follow)
    assert win[0, 2] == pytest.approx(head_side, rel=0.02)


def test_window_leaving_the_frame_is_clamped():
    # face at the top-left corner, and a face so large that the window exceeds the frame
    t, boxes = _track(30.0, 20.0, 100.0)
    win, _ = plan_windows(t, boxes, 10, 640, 480, CropConfig())
    assert (win[:, :2] == 0).all() and win[0, 2] == pytest.approx(190, rel=0.03)
    t, boxes = _track(320.0, 240.0, 400.0)
    win, fixed = plan_windows(t, boxes, 10, 640, 480, CropConfig())
    assert fixed and win[0].tolist() == [80.0, 0.0, 480.0]


@pytest.fixture(scope="module")
def obama_crop(tmp_path_factory):
    """12 s of the Obama clip from 40 s (static until 46 s, then the camera push-in), cropped with a
    window that follows the head (``mode: follow``)."""
    src = require_shared("identities", "obama_dnc2020_64s.mp4")
    d = tmp_path_factory.mktemp("obama")
    clip = d / "obama12.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-ss", "40", "-t", "12", "-i", str(src), "-c:v", "libx264",
                    "-preset", "ultrafast", "-crf", "18", "-c:a", "aac", str(clip)], check=True)
    from pipeline.preprocess.crop import main

    out = d / "out"
    assert main(["--video", str(clip), "--out-video", str(out / "Obama.mp4"), "--out-audio", str(out / "aud.wav"),
                 "--out-track", str(out / "crop.json"),
                 "--cfg", json.dumps({"size": 512, "fps": 25, "mode": "follow"})]) == 0
    return clip, out


def test_obama_output_format(obama_crop):
    import soundfile as sf

    from pipeline.preprocess.media import count_frames, probe_media

    _, out = obama_crop
    crop = json.loads((out / "crop.json").read_text())
    info = probe_media(out / "Obama.mp4")
    assert (info.width, info.height, info.video_codec) == (512, 512, "h264")
    assert info.r_fps == 25 and info.avg_fps == 25
    assert [s.get("codec_name") for s in info.streams] == ["h264"]
    n = count_frames(out / "Obama.mp4")
    assert n == crop["n_frames"] == len(crop["windows"])
    assert abs(n - 12.0 * 25) <= 1
    with sf.SoundFile(str(out / "aud.wav")) as f:
        assert (f.samplerate, f.channels, f.subtype) == (16000, 1, "PCM_16")
        assert abs(f.frames / 16000 - n / 25) <= 1 / 25
    assert crop["source"]["width"] == 1280 and crop["source"]["avg_fps"] == pytest.approx(29.97, abs=0.01)


def test_obama_face_centred_and_window_stable(obama_crop):
    from pipeline.preprocess.faces import FaceDetector
    from pipeline.preprocess.media import read_frames_at

    _, out = obama_crop
    crop = json.loads((out / "crop.json").read_text())
    win = np.array(crop["windows"])
    # static piece (before the push-in at 6 s): one fixed window; overall: no jumps
    assert np.ptp(win[: 5 * 25], axis=0).max() == 0
    assert np.abs(np.diff(win, axis=0)).max() < 0.02 * win[:, 2].min()
    assert win[-1, 2] > 1.05 * win[0, 2]  # the window zooms in with the camera (slow push-in)
    # the detected face is centred: x at the middle, y above it by center_y_shift / margin
    cfg = CropConfig()
    expect_y = 256 - cfg.center_y_shift / cfg.margin * 512
    with FaceDetector() as det:
        for t, img in zip([1, 4, 7, 9, 11.5], read_frames_at(out / "Obama.mp4", [1, 4, 7, 9, 11.5])):
            faces = det.detect(img)
            assert len(faces) == 1, t
            f = faces[0]
            assert abs(f.cx - 256) < 0.1 * 512, (t, f)
            assert abs(f.cy - expect_y) < 0.1 * 512, (t, f)
            assert 0.3 * 512 < f.side < 0.6 * 512, (t, f)  # head and shoulders, not a close-up


def test_obama_audio_in_sync(obama_crop):
    """aud.wav is the source audio from the video start: cross-correlation peaks at lag 0."""
    import soundfile as sf

    from pipeline.preprocess.media import load_audio

    clip, out = obama_crop
    src = load_audio(clip)
    aud, sr = sf.read(str(out / "aud.wav"), dtype="float32")
    seg = 5 * sr
    a, b = src[sr: sr + seg], aud[sr: sr + seg]
    lags = range(-640, 641, 8)
    corr = [float(np.dot(a[max(0, -k): seg - max(0, k)], b[max(0, k): seg - max(0, -k)])) for k in lags]
    assert abs(list(lags)[int(np.argmax(corr))]) <= 16  # within 1 ms


def test_variable_frame_rate_source_becomes_constant_25fps(tmp_path):
    """A VFR source (3 of every 5 frames kept, 4 s; its last frame ends at 3.92 s) comes out at
    constant 25 fps, 98 frames, audio exactly as long; an already cropped 512x512 clip keeps its
    full frame (clamped)."""
    import soundfile as sf

    from pipeline.preprocess.crop import main
    from pipeline.preprocess.media import count_frames, probe_media
    from tests.conftest import SAMPLE_VIDEO

    vfr = tmp_path / "vfr.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(SAMPLE_VIDEO), "-t", "4", "-vf",
                    "select='lt(mod(n\\,5)\\,3)'", "-fps_mode", "vfr", "-c:a", "aac", "-preset", "ultrafast",
                    str(vfr)], check=True)
    src = probe_media(vfr)
    assert src.variable_frame_rate and src.video_duration == pytest.approx(3.92)
    out = tmp_path / "out"
    assert main(["--video", str(vfr), "--out-video", str(out / "v.mp4"), "--out-audio", str(out / "aud.wav"),
                 "--out-track", str(out / "crop.json")]) == 0
    crop = json.loads((out / "crop.json").read_text())
    info = probe_media(out / "v.mp4")
    assert info.avg_fps == 25 and not info.variable_frame_rate
    assert count_frames(out / "v.mp4") == crop["n_frames"] == 98
    assert sf.info(str(out / "aud.wav")).frames == 98 * 640
    assert crop["fixed"] and crop["windows"][0] == [0.0, 0.0, 512.0]


def test_audio_starting_late_is_aligned_to_the_video(tmp_path):
    """Audio muxed 0.2 s after the video start: aud.wav begins with that much silence, so the
    speech stays where it was relative to the frames."""
    import soundfile as sf

    from pipeline.preprocess.crop import main
    from pipeline.preprocess.media import load_audio
    from tests.conftest import SAMPLE_VIDEO

    late = tmp_path / "late.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(SAMPLE_VIDEO), "-itsoffset", "0.2", "-i",
                    str(SAMPLE_VIDEO), "-map", "0:v", "-map", "1:a", "-c", "copy", "-t", "5", str(late)], check=True)
    out = tmp_path / "out"
    assert main(["--video", str(late), "--out-video", str(out / "v.mp4"), "--out-audio", str(out / "aud.wav"),
                 "--out-track", str(out / "crop.json")]) == 0
    ref = load_audio(SAMPLE_VIDEO)
    aud, sr = sf.read(str(out / "aud.wav"), dtype="float32")
    seg = ref[sr: 3 * sr]
    lag = max(range(0, 6400, 2), key=lambda k: float(np.dot(seg, aud[sr + k: 3 * sr + k])))
    assert abs(lag - 0.2 * sr) <= 32, lag  # within 2 ms
    assert np.abs(aud[: int(0.15 * sr)]).max() < 1e-3  # the leading gap is silence
    assert len(aud) == json.loads((out / "crop.json").read_text())["n_frames"] * 640


def test_choose_span_keeps_the_longest_static_camera_stretch_one_window_holds():
    """Hand-made tracks (5 samples/s): a camera move splits the clip into static runs, the longest
    run one window holds is kept; a stretch shorter than min_span_s keeps the whole clip."""
    from pipeline.preprocess.crop import choose_span

    t, boxes = _track(640.0, 300.0, 120.0, seconds=20.0)           # 100 samples, head still
    static = np.ones(99, bool)
    cfg = CropConfig(min_span_s=4.0)
    assert choose_span(t, boxes, static, cfg) is None               # static camera, one window: whole clip
    static[29] = False                                              # the camera moves between 5.8 and 6.0 s
    assert choose_span(t, boxes, static, cfg) == (30, 100)          # 6.0 .. 19.8 s
    static[79] = False                                              # and again between 15.8 and 16.0 s
    assert choose_span(t, boxes, static, cfg) == (30, 80)
    assert choose_span(t, boxes, static, CropConfig(min_span_s=10.0)) is None
    assert choose_span(t, boxes, static, CropConfig(span="whole")) is None
    assert choose_span(t, boxes, static, CropConfig(mode="follow")) is None
    # static camera, but the speaker walks 600 px at 12-14 s: the part before the walk is kept
    t, boxes = _track(lambda t: 300 + 600 * np.clip((t - 12) / 2, 0, 1), 300.0, 120.0, seconds=20.0)
    i, j = choose_span(t, boxes, np.ones(99, bool), cfg)
    assert i == 0 and 11.0 <= t[j - 1] < 12.5


def test_camera_motion_of_a_hand_made_zoom_matches_the_corner_displacement():
    """A real photo (scikit-image's astronaut) zoomed by 1 % about its centre between two frames:
    the measured step is the corners' displacement, 0.01 x the half diagonal; an unchanged frame
    measures 0; a frame without texture is not measured."""
    import cv2
    from skimage.data import astronaut

    from pipeline.preprocess.camera import CameraMotion

    img = cv2.resize(astronaut(), (360, 360), interpolation=cv2.INTER_AREA)
    z = 1.01
    m = np.array([[z, 0, 180 * (1 - z)], [0, z, 180 * (1 - z)]])
    zoomed = cv2.warpAffine(img, m, (360, 360), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
    cam = CameraMotion()
    for frame in (img, img, zoomed, np.full_like(img, 128), np.full_like(img, 128)):
        cam.update(frame, None)
    s = cam.steps_px
    assert s[0] == pytest.approx(0.0, abs=0.02)
    assert s[1] == pytest.approx(0.01 * 180 * np.sqrt(2), rel=0.1)      # 2.55 px
    assert np.isnan(s[3])
    assert cam.static_steps(1.0).tolist() == [True, False, True, True]


def test_obama_push_in_is_left_out_and_the_audio_follows(tmp_path, capfd):
    """22 s of the Obama clip from 40 s: static until 46 s, a camera push-in to about 52 s, static
    again. The default fixed crop keeps the later static stretch (from ~11.6 s of the clip), with
    one window, and aud.wav starts where the kept frames start."""
    import soundfile as sf

    from pipeline.preprocess.crop import main
    from pipeline.preprocess.media import count_frames, load_audio

    src = require_shared("identities", "obama_dnc2020_64s.mp4")
    clip = tmp_path / "obama22.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-ss", "40", "-t", "22", "-i", str(src), "-c:v", "libx264",
                    "-preset", "ultrafast", "-crf", "18", "-c:a", "aac", str(clip)], check=True)
    out = tmp_path / "out"
    assert main(["--video", str(clip), "--out-video", str(out / "v.mp4"), "--out-audio", str(out / "aud.wav"),
                 "--out-track", str(out / "crop.json"), "--cfg", json.dumps({"min_span_s": 4.0})]) == 0
    crop = json.loads((out / "crop.json").read_text())
    steps = np.array([np.nan if v is None else v for v in crop["camera"]["steps_px"]])
    assert np.nanmax(steps[: 5 * 5]) < 0.5 and np.nanmax(steps[7 * 5: 10 * 5]) > 1.5  # still, then push-in
    span = crop["span"]
    assert span["trimmed"] and 11.0 <= span["start_s"] <= 12.5 and span["end_s"] - span["start_s"] >= 8.0
    n = count_frames(out / "v.mp4")
    assert n == crop["n_frames"] == len(crop["windows"]) == round((span["end_s"] - span["start_s"]) * 25)
    assert crop["fixed"]
    ref = load_audio(clip)
    aud, sr = sf.read(str(out / "aud.wav"), dtype="float32")
    assert len(aud) == n * 640
    k0 = round(span["start_s"] * sr)
    seg = aud[sr: 4 * sr]
    lags = range(-640, 641, 8)
    corr = [float(np.dot(seg, ref[k0 + sr + k: k0 + 4 * sr + k])) for k in lags]
    assert abs(list(lags)[int(np.argmax(corr))]) <= 16  # within 1 ms of the kept frames' start
    # no static stretch of 30 s in the clip: every frame is kept, the window follows, and the
    # log says that the camera moves
    capfd.readouterr()
    assert main(["--video", str(clip), "--out-video", str(out / "w.mp4"), "--out-audio", str(out / "aud2.wav"),
                 "--out-track", str(out / "crop2.json"), "--cfg", json.dumps({"min_span_s": 30.0})]) == 0
    crop2 = json.loads((out / "crop2.json").read_text())
    assert not crop2["span"]["trimmed"] and not crop2["fixed"]
    assert crop2["n_frames"] >= span["source_frames"] - 2   # the clip: 21.5 s of video stream
    assert "the camera moves" in capfd.readouterr().err
