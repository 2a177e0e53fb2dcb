"""ffmpeg / PyAV helpers shared by the video and audio stages.

Every failure caused by the input file is raised as :class:`InputError` naming the file.
"""
from __future__ import annotations

import logging
import subprocess
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import numpy as np

from pipeline.common.errors import InputError

log = logging.getLogger(__name__)

#: sample rate of every audio file the dataset builder writes (Hz)
AUDIO_SR = 16000


def _ffmpeg_msg(exc: Exception, path: str | Path = "") -> str:
    """Last meaningful line of an ffmpeg/ffprobe error (``ffmpeg.Error`` keeps stderr), without
    the file name ffmpeg puts in front (the InputError names the file already)."""
    stderr = getattr(exc, "stderr", None) or b""
    if isinstance(stderr, bytes):
        stderr = stderr.decode("utf-8", "replace")
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    msg = lines[-1] if lines else (str(exc).strip().splitlines() or [type(exc).__name__])[-1]
    prefix = f"{path}: "
    return msg[len(prefix):] if path and msg.startswith(prefix) else msg


def _rate(text: str | None) -> float:
    """``"30000/1001"`` -> 29.97; ``"0/0"`` or missing -> 0.0."""
    try:
        r = Fraction(text or "0/1")
    except (ValueError, ZeroDivisionError):
        return 0.0
    return float(r)


@dataclass
class MediaInfo:
    """Container and stream facts of one media file (from ``ffmpeg.probe``).

    Times are seconds, rates frames per second; absent streams leave their fields ``None``.
    """

    path: str
    #: container format name (``"mov,mp4,m4a,3gp,3g2,mj2"``)
    format_name: str
    #: container duration (s)
    duration: float
    #: video stream fields (None when there is no video stream)
    width: int | None = None
    height: int | None = None
    video_codec: str | None = None
    #: average frame rate (frames / duration); differs from r_fps for variable frame rate
    avg_fps: float | None = None
    #: the stream's base ("r") frame rate
    r_fps: float | None = None
    video_start: float | None = None
    video_duration: float | None = None
    #: frame count from the container header (may be None or inexact for some formats)
    nb_frames: int | None = None
    #: display rotation (degrees counter-clockwise, from the display matrix); ``width`` and
    #: ``height`` are the displayed (rotated) size, as ffmpeg's autorotation decodes it
    rotation: int = 0
    #: audio stream fields (None when there is no audio stream)
    audio_codec: str | None = None
    sample_rate: int | None = None
    channels: int | None = None
    audio_start: float | None = None
    audio_duration: float | None = None
    #: raw ffprobe stream dictionaries (codec_type, codec_name, ...)
    streams: list = field(default_factory=list)

    @property
    def has_video(self) -> bool:
        return self.width is not None

    @property
    def has_audio(self) -> bool:
        return self.sample_rate is not None

    @property
    def variable_frame_rate(self) -> bool:
        """True when avg and r frame rates differ by more than 1 %."""
        if not self.avg_fps or not self.r_fps:
            return False
        return abs(self.avg_fps - self.r_fps) > 0.01 * self.r_fps

    def to_dict(self) -> dict:
        """The fields as a JSON-ready dict, with the derived ``variable_frame_rate`` (bool) added."""
        d = asdict(self)
        d["variable_frame_rate"] = self.variable_frame_rate
        return d


def probe_media(path: str | Path) -> MediaInfo:
    """Read container and stream information with ``ffmpeg.probe`` (ffprobe).

    Raises:
        InputError: the file is missing or ffprobe cannot read it ("unreadable or corrupt ...").
    """
    import ffmpeg

    path = Path(path)
    if not path.is_file():
        raise InputError(path, "file not found")
    try:
        info = ffmpeg.probe(str(path))
    except ffmpeg.Error as exc:
        raise InputError(path, f"unreadable or corrupt media file ({_ffmpeg_msg(exc, path)})") from None
    fmt = info.get("format", {})
    streams = info.get("streams", [])
    mi = MediaInfo(path=str(path), format_name=fmt.get("format_name", ""),
                   duration=float(fmt.get("duration") or 0.0),
                   streams=[{k: s.get(k) for k in ("index", "codec_type", "codec_name", "width", "height",
                                                      "r_frame_rate", "avg_frame_rate", "nb_frames",
                                                      "sample_rate", "channels", "start_time", "duration")
                             if k in s} for s in streams])
    video = [s for s in streams if s.get("codec_type") == "video"
             and not s.get("disposition", {}).get("attached_pic")]
    audio = [s for s in streams if s.get("codec_type") == "audio"]
    if video:
        v = video[0]
        mi.width, mi.height = int(v["width"]), int(v["height"])
        rot = next((sd.get("rotation") for sd in v.get("side_data_list", []) if "rotation" in sd), None)
        if rot is None and "rotate" in v.get("tags", {}):  # legacy tag: clockwise degrees
            rot = -int(v["tags"]["rotate"])
        mi.rotation = int(round(float(rot or 0) / 90.0)) * 90 % 360
        if mi.rotation in (90, 270):
            mi.width, mi.height = mi.height, mi.width
        mi.video_codec = v.get("codec_name")
        mi.avg_fps, mi.r_fps = _rate(v.get("avg_frame_rate")), _rate(v.get("r_frame_rate"))
        mi.video_start = float(v.get("start_time") or 0.0)
        mi.video_duration = float(v.get("duration") or mi.duration or 0.0)
        mi.nb_frames = int(v["nb_frames"]) if str(v.get("nb_frames", "")).isdigit() else None
    if audio:
        a = audio[0]
        mi.audio_codec = a.get("codec_name")
        mi.sample_rate = int(a.get("sample_rate") or 0) or None
        mi.channels = int(a.get("channels") or 0) or None
        mi.audio_start = float(a.get("start_time") or 0.0)
        mi.audio_duration = float(a.get("duration") or mi.duration or 0.0)
    return mi


def probe_talking_video(path: str | Path) -> MediaInfo:
    """:func:`probe_media` plus the checks every video stage needs: a video and an audio stream.

    Raises:
        InputError: unreadable/corrupt, "no video stream ...", "no audio stream ...".
    """
    info = probe_media(path)
    if not info.has_video:
        raise InputError(path, "no video stream (audio-only file?)")
    if not info.has_audio:
        raise InputError(path, "no audio stream (the dataset needs the speech track)")
    return info


def read_frames_at(path: str | Path, times: list[float], max_side: int | None = None,
                   rotation: int | None = None) -> list[np.ndarray]:
    """Decode the first frame at or after each time (PyAV, seeking).

    Args:
        path: video file.
        times: seconds from the video stream start, ascending.
        max_side: downscale so that the longer side is at most this (None: full size).
        rotation: the stream's display rotation (:attr:`MediaInfo.rotation`); None reads it.
            Frames are rotated as displayed (as ffmpeg's autorotation does).
    Returns:
        list of uint8 RGB arrays [H, W, 3], one per time.
    Raises:
        InputError: the file cannot be decoded at one of the times ("unreadable or corrupt ...").
    """
    import av
    import cv2

    if rotation is None:
        rotation = probe_media(path).rotation
    out = []
    try:
        with av.open(str(path)) as container:
            vs = container.streams.video[0]
            vs.thread_type = "AUTO"
            tb = vs.time_base
            start = vs.start_time or 0
            for t in times:
                target = start + int(t / tb)
                container.seek(target, stream=vs, backward=True, any_frame=False)
                frame = None
                for cand in container.decode(vs):
                    if cand.pts is None or cand.pts >= target:
                        frame = cand
                        break
                if frame is None:  # the stream ended before t (truncated file)
                    raise InputError(path, f"unreadable or corrupt video: no frame decoded at {t:.2f} s")
                img = frame.to_ndarray(format="rgb24")
                if rotation:
                    img = np.ascontiguousarray(np.rot90(img, rotation // 90))
                if max_side and max(img.shape[:2]) > max_side:
                    s = max_side / max(img.shape[:2])
                    img = cv2.resize(img, (round(img.shape[1] * s), round(img.shape[0] * s)),
                                     interpolation=cv2.INTER_AREA)
                out.append(img)
    except av.error.FFmpegError as exc:
        raise InputError(path, f"unreadable or corrupt video ({exc})") from None
    return out


def iter_frames(path: str | Path, fps: float | None = None, scale_h: int | None = None,
                width: int | None = None, height: int | None = None,
                crop: tuple[int, int, int, int] | None = None) -> Iterator[np.ndarray]:
    """Decode a video through an ffmpeg pipe, optionally resampled and scaled.

    Args:
        path: video file.
        fps: resample to this constant rate with ffmpeg's ``fps`` filter (nearest frame: drops or
            repeats source frames, timestamps from the stream start); None keeps every frame.
        scale_h: scale to this height (width keeps the aspect, rounded to even); None: source size.
        width, height: the source size (from :func:`probe_media`), needed to know the frame size.
        crop: (x, y, w, h) region of the source to keep (applied before scaling; even sizes).
    Yields:
        uint8 RGB frames [H, W, 3].
    Raises:
        InputError: ffmpeg fails to decode the file.
    """
    import ffmpeg

    w, h = int(width), int(height)
    stream = ffmpeg.input(str(path)).video
    if fps:
        stream = stream.filter("fps", fps=fps)
    if crop:
        stream = stream.filter("crop", crop[2], crop[3], crop[0], crop[1])
        w, h = int(crop[2]), int(crop[3])
    if scale_h:
        w = int(round(w * scale_h / h / 2) * 2)
        h = int(scale_h)
        stream = stream.filter("scale", w, h)
    proc = (stream.output("pipe:", format="rawvideo", pix_fmt="rgb24")
            .global_args("-nostdin", "-loglevel", "error")
            .run_async(pipe_stdout=True, pipe_stderr=True))
    nbytes = w * h * 3
    try:
        while True:
            buf = proc.stdout.read(nbytes)
            if len(buf) < nbytes:
                break
            yield np.frombuffer(buf, np.uint8).reshape(h, w, 3)
    finally:
        proc.stdout.close()
        err = proc.stderr.read().decode("utf-8", "replace")
        proc.stderr.close()
        rc = proc.wait()
    if rc != 0:
        lines = [ln for ln in err.splitlines() if ln.strip()]
        raise InputError(path, f"unreadable or corrupt video ({lines[-1] if lines else 'ffmpeg exit ' + str(rc)})")


class VideoWriter:
    """Encode RGB frames to H.264 (yuv420p, constant frame rate) through an ffmpeg pipe.

    Use as a context manager; the file appears at ``path`` only when closed without error
    (callers pass a temporary path from :func:`pipeline.common.io.atomic_path`).

    Args:
        path: output .mp4.
        size: (width, height) of the frames.
        fps: constant output frame rate.
        crf: x264 quality (lower is better; 17 is visually lossless for training data).
        preset: x264 speed preset.
    """

    def __init__(self, path: str | Path, size: tuple[int, int], fps: float, crf: int = 17,
                 preset: str = "veryfast", threads: int = 2):
        import ffmpeg

        self.path, self.size, self.n = Path(path), size, 0
        self.proc = (ffmpeg.input("pipe:", format="rawvideo", pix_fmt="rgb24", s=f"{size[0]}x{size[1]}",
                                  framerate=fps)
                     .output(str(self.path), vcodec="libx264", pix_fmt="yuv420p", crf=crf, preset=preset,
                             r=fps, movflags="+faststart", threads=threads, **{"fps_mode": "passthrough"})
                     .global_args("-nostdin", "-loglevel", "error", "-y")
                     .run_async(pipe_stdin=True, pipe_stderr=True))

    def write(self, frame: np.ndarray) -> None:
        """Append one uint8 RGB frame [H, W, 3] of the writer's size."""
        assert frame.shape == (self.size[1], self.size[0], 3), frame.shape
        self.proc.stdin.write(np.ascontiguousarray(frame, dtype=np.uint8).tobytes())
        self.n += 1

    def close(self) -> None:
        """Finishes the file: closes ffmpeg's input and waits for it.

        Raises:
            RuntimeError: ffmpeg exited with an error (its last 500 characters of stderr).
        """
        self.proc.stdin.close()
        err = self.proc.stderr.read().decode("utf-8", "replace")
        if self.proc.wait() != 0:
            raise RuntimeError(f"ffmpeg encoder failed for {self.path}: {err.strip()[-500:]}")

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.proc.kill()
            self.proc.wait()


def load_audio(path: str | Path, sr: int = AUDIO_SR) -> np.ndarray:
    """Decode the first audio stream of any file ffmpeg reads to mono float32 at ``sr``.

    The container is detected from the content (a WAV named ``.mp3`` works). Channels are
    averaged (as librosa's ``to_mono``); resampling is ffmpeg's ``aresample`` (swr).

    Returns:
        float32 [S] in [-1, 1].
    Raises:
        InputError: the file is missing, unreadable, or has no audio stream.
    """
    import ffmpeg

    path = Path(path)
    if not path.is_file():
        raise InputError(path, "file not found")
    info = probe_media(path)
    if not info.has_audio:
        raise InputError(path, "no audio stream")
    ch = int(info.channels or 1)
    try:  # keep the channels (ffmpeg's own downmix scales by 1/sqrt(2)); average them below
        out, _ = (ffmpeg.input(str(path)).audio
                  .output("pipe:", format="f32le", acodec="pcm_f32le", ac=ch, ar=sr)
                  .global_args("-nostdin", "-loglevel", "error")
                  .run(capture_stdout=True, capture_stderr=True))
    except ffmpeg.Error as exc:
        raise InputError(path, f"unreadable or corrupt audio ({_ffmpeg_msg(exc, path)})") from None
    raw = np.frombuffer(out, np.float32)
    audio = raw[: len(raw) // ch * ch].reshape(-1, ch).mean(axis=1).astype(np.float32)
    if audio.size == 0:
        raise InputError(path, "audio stream decodes to no samples")
    return audio


def write_wav(path: str | Path, audio: np.ndarray, sr: int = AUDIO_SR) -> None:
    """Write mono float audio [S] (range [-1, 1]) as 16-bit PCM WAV (callers pass an atomic path)."""
    import soundfile as sf

    sf.write(str(path), np.clip(audio, -1.0, 1.0), sr, subtype="PCM_16", format="WAV")


def _ffprobe_count(path: str | Path, what: str) -> int:
    """``ffprobe -count_{what}`` of the first video stream (``what``: ``frames`` or ``packets``).

    Raises:
        InputError: ffprobe fails or prints no count (unreadable or corrupt video).
    """
    proc = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", f"-count_{what}",
                           "-show_entries", f"stream=nb_read_{what}", "-of", "csv=p=0", str(path)],
                          capture_output=True, text=True)
    if proc.returncode != 0 or not proc.stdout.strip().isdigit():
        raise InputError(path, f"unreadable or corrupt video ({proc.stderr.strip()[-200:]})")
    return int(proc.stdout.strip())


def count_frames(path: str | Path) -> int:
    """Number of frames the video stream decodes to (``ffprobe -count_frames``; decodes the file).

    Raises:
        InputError: unreadable or corrupt video.
    """
    return _ffprobe_count(path, "frames")


def count_packets(path: str | Path) -> int:
    """Number of video packets in the container (``ffprobe -count_packets``: demuxes, no decoding;
    one packet per frame for H.264 in MP4).

    Raises:
        InputError: unreadable or corrupt video.
    """
    return _ffprobe_count(path, "packets")
