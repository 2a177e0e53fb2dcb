"""The render contract: what every method (ours or a baseline) writes for one test.

``results/renders/{method}/{identity}/{test}/`` (:func:`pipeline.common.layout.render_dir`)::

    frames/{i}.png     RGB PNG frames, i = 0 .. n_frames-1
    video.mp4          25 fps H.264 yuv420p, AAC audio (the driving audio) muxed, A/V in sync
    manifest.json      see :data:`REQUIRED_FIELDS`

The metrics and report stages read only this folder, so a baseline that writes it through
:func:`write_contract` is compared exactly like our models. :func:`validate_contract` lists every
violation (used by the tests and by ingesting baselines).
"""
from __future__ import annotations

import hashlib
import logging
import math
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from pipeline.common.errors import InputError, PipelineError
from pipeline.common.io import atomic_dir, atomic_write_json, read_json

log = logging.getLogger(__name__)

CONTRACT_VERSION = 1
FPS = 25
AUDIO_SR = 16000
#: sample rate of the AAC track in ``video.mp4`` (48 kHz: an AAC frame of 1024 samples is 21 ms,
#: well under one video frame, so the A/V durations can match within a frame)
MUX_AUDIO_SR = 48000
#: one_shot: a reference photo driven by a video (pipeline.oneshot; the identity field names the photo)
PROTOCOLS = ("self_driven", "cross_driven", "one_shot", "free_view")
COMPOSITING = ("full", "head_on_gt", "paste_back")

#: manifest fields every producer must supply (``write_contract`` adds the ``video``/``n_frames``/
#: ``fps``/``resolution``/``contract_version`` fields itself)
REQUIRED_FIELDS = {
    "method": str,            # registered method or baseline name
    "identity": str,
    "test": str,              # "self" (pipeline.common.layout.SELF_DRIVEN_TEST) or a cross-driven key
    "protocol": str,          # self_driven | cross_driven | one_shot | free_view (pipeline.render.freeview)
    "driving_audio": dict,    # {"path": str, "sha256": str}
    "n_frames": int,
    "fps": (int, float),      # 25
    "resolution": list,       # [W, H] pixels
    "compositing": str,       # full | head_on_gt | paste_back
    "controls": dict,         # {} or {background, eye_openness, yaw_deg, pitch_deg}
    "device": str,            # cpu | cuda:0 | ... | "external"
    "render_seconds": (int, float, type(None)),  # model time only (no I/O, no warm-up)
    "fps_render": (int, float, type(None)),      # n_frames / render_seconds
    "gt_reference": (dict, type(None)),          # self-driven: {"dir", "indices"}; else None
}


class ContractError(PipelineError):
    """A render folder that does not satisfy the contract (the message lists the problems)."""


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def fit_audio(audio_16k: np.ndarray, n_frames: int, fps: float = FPS, sr: int = AUDIO_SR) -> np.ndarray:
    """Trim or zero-pad audio to exactly ``n_frames / fps`` seconds.

    Args:
        audio_16k: [T] float32 mono samples in [-1, 1] at ``sr`` Hz.
        n_frames: number of video frames the audio accompanies.
    Returns:
        [round(n_frames * sr / fps)] float32.
    """
    audio = np.asarray(audio_16k, dtype=np.float32).reshape(-1)
    n = int(round(n_frames * sr / fps))
    if len(audio) >= n:
        return audio[:n]
    return np.concatenate([audio, np.zeros(n - len(audio), np.float32)])


def _to_uint8(frame: Any) -> np.ndarray:
    """[H, W, 3] uint8 from uint8, or float in [0, 1] (numpy array or torch tensor)."""
    if hasattr(frame, "detach"):
        frame = frame.detach().cpu().numpy()
    frame = np.asarray(frame)
    if frame.dtype != np.uint8:
        frame = (np.clip(frame, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"frame must be [H, W, 3], got {frame.shape}")
    return frame


def _write_frames(frames: Iterable[Any] | str | Path, dst: Path) -> tuple[int, tuple[int, int]]:
    """Write frames as ``dst/{i}.png``; returns (count, (W, H))."""
    import cv2

    dst.mkdir(parents=True, exist_ok=True)
    if isinstance(frames, (str, Path)):
        src = Path(frames)
        files = sorted(src.glob("*.png"), key=lambda p: int(p.stem) if p.stem.isdigit() else -1)
        if not files or any(not p.stem.isdigit() for p in files):
            raise InputError(src, "frames folder must hold PNG files named {i}.png")
        idx = [int(p.stem) for p in files]
        if idx != list(range(len(idx))):
            raise InputError(src, f"frames must be numbered 0..{len(idx) - 1} without gaps")
        for p in files:
            shutil.copyfile(p, dst / p.name)
        first = cv2.imread(str(files[0]), cv2.IMREAD_COLOR)
        if first is None:
            raise InputError(files[0], "not a readable PNG")
        return len(files), (first.shape[1], first.shape[0])
    n, size = 0, None
    for n, frame in enumerate(frames):
        img = _to_uint8(frame)
        if size is None:
            size = (img.shape[1], img.shape[0])
        elif size != (img.shape[1], img.shape[0]):
            raise ValueError(f"frame {n} is {img.shape[1]}x{img.shape[0]}, frame 0 is {size[0]}x{size[1]}")
        if not cv2.imwrite(str(dst / f"{n}.png"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR)):
            raise PipelineError(f"{dst / f'{n}.png'}: could not be written")
    if size is None:
        raise ValueError("no frames to write")
    return n + 1, size


def encode_video(frames_dir: Path, audio_16k: np.ndarray, out: Path, fps: float = FPS,
                 crf: int = 18) -> None:
    """Encode ``frames_dir/{i}.png`` to H.264 yuv420p at ``fps`` with ``audio_16k`` muxed as AAC.

    The audio must already have the video's duration (:func:`fit_audio`); it is resampled to
    :data:`MUX_AUDIO_SR` by ffmpeg. Odd frame sizes are padded by one pixel (yuv420p needs even
    sizes). Uses ffmpeg-python (ffmpeg on PATH).
    """
    import ffmpeg
    import soundfile as sf

    with tempfile.TemporaryDirectory(prefix="mux") as tmp:
        wav = Path(tmp) / "audio.wav"
        sf.write(wav, np.clip(audio_16k, -1.0, 1.0), AUDIO_SR, subtype="PCM_16")
        video = ffmpeg.input(str(frames_dir / "%d.png"), framerate=fps, start_number=0)
        video = video.filter("pad", "ceil(iw/2)*2", "ceil(ih/2)*2")
        audio = ffmpeg.input(str(wav))
        stream = ffmpeg.output(
            video, audio, str(out), vcodec="libx264", pix_fmt="yuv420p", crf=crf,
            preset="veryfast", r=fps, acodec="aac", ar=MUX_AUDIO_SR, ac=1,
            **{"b:a": "128k", "movflags": "+faststart"},
        )
        try:
            stream.overwrite_output().run(quiet=True)
        except ffmpeg.Error as exc:
            tail = (exc.stderr or b"").decode(errors="replace").strip().splitlines()[-3:]
            raise PipelineError(f"{out}: ffmpeg encoding failed: {' | '.join(tail)}") from None


def probe_av(video: str | Path) -> dict[str, Any]:
    """ffprobe summary of an mp4: codecs, pixel format, size, frame rate, frame count, durations.

    Returns:
        ``{"vcodec", "pix_fmt", "width", "height", "fps", "n_frames", "video_s", "acodec",
        "audio_s", "audio_sr"}`` (audio keys None without an audio stream).
    Raises:
        InputError: ffprobe cannot read the file or it has no video stream.
    """
    import ffmpeg

    try:
        info = ffmpeg.probe(str(video), count_frames=None)
    except ffmpeg.Error as exc:
        reason = (exc.stderr or b"").decode(errors="replace").strip().splitlines()
        raise InputError(video, f"ffprobe failed: {reason[-1] if reason else 'unknown error'}") from None
    vs = [s for s in info["streams"] if s["codec_type"] == "video"]
    aus = [s for s in info["streams"] if s["codec_type"] == "audio"]
    if not vs:
        raise InputError(video, "no video stream")
    v = vs[0]
    num, den = (int(x) for x in v.get("avg_frame_rate", "0/1").split("/"))
    n = int(v.get("nb_read_frames") or v.get("nb_frames") or 0)
    out = {
        "vcodec": v.get("codec_name"), "pix_fmt": v.get("pix_fmt"),
        "width": int(v["width"]), "height": int(v["height"]),
        "fps": num / den if den else 0.0, "n_frames": n,
        "video_s": float(v.get("duration") or 0.0),
        "acodec": None, "audio_s": None, "audio_sr": None,
    }
    if aus:
        a = aus[0]
        out.update(acodec=a.get("codec_name"), audio_s=float(a.get("duration") or 0.0),
                   audio_sr=int(a.get("sample_rate") or 0))
    return out


def write_contract(out_dir: str | Path, frames: Iterable[Any] | str | Path, audio_16k: np.ndarray,
                   manifest_fields: dict[str, Any] | Callable[[], dict[str, Any]],
                   fps: float = FPS) -> dict[str, Any]:
    """Write one render folder atomically (built in a temporary folder, swapped in on success).

    Args:
        out_dir: ``results/renders/{method}/{identity}/{test}``.
        frames: an iterator of [H, W, 3] frames (uint8, or float in [0, 1]; numpy or torch, RGB),
            or a folder of ``{i}.png`` files (copied).
        audio_16k: [T] float32 16 kHz mono driving audio; trimmed / zero-padded to the video's
            duration (n_frames / fps) before muxing.
        manifest_fields: every key of :data:`REQUIRED_FIELDS` except ``n_frames``, ``fps`` and
            ``resolution`` (filled here from the frames), plus any extra keys to record; or a
            callable returning them, called once all frames are written (so that a renderer
            that produces ``frames`` lazily can report its timings).
    Returns:
        the manifest written.
    Raises:
        ValueError: missing manifest fields, inconsistent frame sizes, no frames.
        ContractError: the written folder fails :func:`validate_contract` (nothing is swapped in).
    """
    out_dir = Path(out_dir)

    def fields() -> dict[str, Any]:
        got = manifest_fields() if callable(manifest_fields) else manifest_fields
        missing = [k for k in REQUIRED_FIELDS if k not in got and k not in ("n_frames", "fps", "resolution")]
        if missing:
            raise ValueError(f"manifest fields missing: {', '.join(missing)}")
        return got

    if not callable(manifest_fields):
        fields()
    with atomic_dir(out_dir) as tmp:
        n, (w, h) = _write_frames(frames, tmp / "frames")
        extra = fields()
        audio = fit_audio(audio_16k, n, fps)
        encode_video(tmp / "frames", audio, tmp / "video.mp4", fps)
        av = probe_av(tmp / "video.mp4")
        manifest = {
            "contract_version": CONTRACT_VERSION,
            **extra,
            "n_frames": n,
            "fps": fps,
            "resolution": [w, h],
            "video": {k: av[k] for k in ("vcodec", "pix_fmt", "acodec", "audio_sr", "video_s", "audio_s")},
        }
        atomic_write_json(tmp / "manifest.json", manifest)
        problems = validate_contract(tmp)
        if problems:
            raise ContractError(f"{out_dir}: render contract violated: " + "; ".join(problems))
    log.info("render contract written: %s (%d frames %dx%d)", out_dir, n, w, h)
    return manifest


def validate_contract(render_dir: str | Path, check_all_frames: bool = False) -> list[str]:
    """List every way ``render_dir`` breaks the render contract (empty list: valid).

    Checks: manifest present with :data:`REQUIRED_FIELDS` of the right types and allowed values;
    ``frames/`` holds exactly ``0..n_frames-1``.png of the manifest's resolution (first and last
    frame, or all with ``check_all_frames``); ``video.mp4`` is H.264 yuv420p at ``fps`` with
    ``n_frames`` frames of that resolution (padded to even) and an AAC track whose duration is
    within one frame of the video's; self-driven renders name their ground-truth frames.
    """
    import cv2

    d = Path(render_dir)
    problems: list[str] = []
    try:
        m = read_json(d / "manifest.json")
    except InputError as exc:
        return [str(exc)]
    for key, typ in REQUIRED_FIELDS.items():
        if key not in m:
            problems.append(f"manifest: missing '{key}'")
        elif not isinstance(m[key], typ) or (typ is int and isinstance(m[key], bool)):
            problems.append(f"manifest: '{key}' has type {type(m[key]).__name__}")
    if problems:
        return problems
    if m["protocol"] not in PROTOCOLS:
        problems.append(f"manifest: protocol {m['protocol']!r} not in {PROTOCOLS}")
    if m["compositing"] not in COMPOSITING:
        problems.append(f"manifest: compositing {m['compositing']!r} not in {COMPOSITING}")
    if not {"path", "sha256"} <= set(m["driving_audio"]):
        problems.append("manifest: driving_audio needs 'path' and 'sha256'")
    if len(m["resolution"]) != 2:
        problems.append("manifest: resolution must be [W, H]")
    if m["protocol"] == "self_driven":
        gt = m["gt_reference"] or {}
        if not gt.get("indices") or len(gt["indices"]) != m["n_frames"]:
            problems.append("manifest: self-driven gt_reference.indices must list one index per frame")
    rs, fr = m["render_seconds"], m["fps_render"]
    if rs is not None and fr is not None and rs > 0 and not math.isclose(fr, m["n_frames"] / rs, rel_tol=1e-3):
        problems.append(f"manifest: fps_render {fr} != n_frames / render_seconds")
    n, fps = m["n_frames"], float(m["fps"])
    w, h = (m["resolution"] + [0, 0])[:2]

    frames = d / "frames"
    names = sorted(p.name for p in frames.glob("*")) if frames.is_dir() else []
    expected = sorted(f"{i}.png" for i in range(n))
    if names != expected:
        extra, lacking = set(names) - set(expected), set(expected) - set(names)
        problems.append(f"frames/: {len(names)} files for n_frames={n}"
                        + (f", missing {sorted(lacking)[:3]}" if lacking else "")
                        + (f", unexpected {sorted(extra)[:3]}" if extra else ""))
    else:
        check = range(n) if check_all_frames else sorted({0, n - 1})
        for i in check:
            img = cv2.imread(str(frames / f"{i}.png"), cv2.IMREAD_UNCHANGED)
            if img is None or img.shape[:2] != (h, w):
                problems.append(f"frames/{i}.png: not a {w}x{h} image")
                break

    video = d / "video.mp4"
    if not video.is_file():
        problems.append("video.mp4: missing")
        return problems
    try:
        av = probe_av(video)
    except InputError as exc:
        return problems + [str(exc)]
    if av["vcodec"] != "h264" or av["pix_fmt"] != "yuv420p":
        problems.append(f"video.mp4: {av['vcodec']} {av['pix_fmt']}, expected h264 yuv420p")
    if abs(av["fps"] - fps) > 1e-3:
        problems.append(f"video.mp4: {av['fps']:.3f} fps, expected {fps}")
    if av["n_frames"] != n:
        problems.append(f"video.mp4: {av['n_frames']} frames, manifest says {n}")
    if (av["width"], av["height"]) != (w + w % 2, h + h % 2):
        problems.append(f"video.mp4: {av['width']}x{av['height']}, frames are {w}x{h}")
    if av["acodec"] != "aac":
        problems.append(f"video.mp4: audio {av['acodec'] or 'missing'}, expected aac")
    elif abs(av["audio_s"] - av["video_s"]) > 1.0 / fps:
        problems.append(f"video.mp4: audio {av['audio_s']:.3f} s vs video {av['video_s']:.3f} s "
                        f"(more than one frame apart)")
    return problems


def require_valid(render_dir: str | Path) -> dict[str, Any]:
    """Return the manifest of a valid render folder; raise :class:`ContractError` otherwise."""
    problems = validate_contract(render_dir)
    if problems:
        raise ContractError(f"{render_dir}: render contract violated: " + "; ".join(problems))
    return read_json(Path(render_dir) / "manifest.json")
