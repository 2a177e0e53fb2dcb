"""LSE-C / LSE-D: lip-sync error from SyncNet (Chung & Zisserman 2016), as Wav2Lip's
``scores_LSE/calculate_scores_real_videos`` computes it with ``syncnet_python``.

Pipeline (``run_pipeline.py`` then ``SyncNetInstance.evaluate``), re-implemented here:

1. decode (:func:`reference_decode`): the clip re-encoded by ffmpeg to an MPEG-4 AVI at 25 fps
   (``-qscale:v 2``), its frames as JPEGs (``-qscale:v 2``), its audio as 16 kHz mono PCM;
2. shots (:func:`shots`, ``scene_detect``): PySceneDetect's ContentDetector at scenedetect 0.5.1's
   defaults; face tracks within each shot of at least 100 frames (:func:`face_tracks`,
   ``track_shot``): S3FD (``sfd_face.pth``) on every frame at
   scale 0.25, confidence 0.9; greedy tracks whose consecutive detections overlap by IoU over 0.5
   and are at most 25 frames apart, interpolated between their first and last detection, kept
   when they hold more than 100 detections and their mean face size is over 100 px;
3. crops (:func:`crop_track`, ``crop_video``): the box centre and size median-filtered (13
   frames), the frame cropped with crop scale 0.4 (padded with grey 110) and resized to 224x224
   (BGR), written to an XVID AVI and read back as JPEGs (:func:`xvid_roundtrip`);
4. audio: the track's slice of the PCM, MFCC (``python_speech_features.mfcc``, 13 coefficients,
   100 per s) on the int16 sample scale;
5. SyncNet v2 (``syncnet_v2.model``): a 1024-d lip feature for each 5-frame window and an audio
   feature for the matching 20 MFCC columns (0.2 s);
6. offset search (:func:`offset_distances`, :func:`lse_from_distances`): for offsets -15..15
   frames, the mean over windows of the feature distance; LSE-D = the minimum over offsets,
   LSE-C = median over offsets minus that minimum; the AV offset is the arg-min. A clip with
   several tracks gets the mean of its tracks' scores (Wav2Lip prints one line per track).

One difference, for frame-exact timing (:func:`reference_decode`): the audio is read from the clip,
not from the intermediate AVI, whose MP3 makes ffmpeg 5.1 shift the video by one frame.

Clips of :data:`MIN_FRAMES` frames or fewer are refused with that reason: the reference pipeline
(``run_pipeline.py``, ``track_shot``) keeps a face track only when ``len(track) > opt.min_track``
(``--min_track`` 100), so a clip needs 101 frames (over 4 s at 25 fps). Without the SyncNet or S3FD weights the metric is n/a.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import torch

from pipeline.weights import file_sha256, require

log = logging.getLogger(__name__)

VSHIFT = 15          #: offsets searched: -VSHIFT..VSHIFT frames (Wav2Lip scores_LSE --vshift 15)
MIN_FRAMES = 100     #: syncnet_python run_pipeline.py --min_track
FPS = 25
SR = 16000
CROP = 224
CROP_SCALE = 0.4
FACEDET_SCALE = 0.25
CONF_TH = 0.9
MAX_GAP = 25         #: run_pipeline.py --num_failed_det
MIN_FACE = 100       #: run_pipeline.py --min_face_size (pixels)
SMOOTH = 13          #: median filter of the track (frames)
WINDOW = 5           #: SyncNet video window (frames)
IOU_TH = 0.5         #: run_pipeline.py track_shot iouThres: a detection continues a track above it
SHOT_THRESHOLD = 30.0   #: ContentDetector threshold of scenedetect 0.5.1, which syncnet_python pins
SHOT_MIN_LEN = 15       #: ContentDetector min_scene_len (frames) of scenedetect 0.5.1
#: scenedetect 0.5.1's automatic downscale factor by frame width (``DEFAULT_DOWNSCALE_FACTORS``)
SHOT_DOWNSCALE = {3200: 12, 2100: 8, 1700: 6, 1200: 5, 900: 4, 600: 3, 400: 2}


def offset_distances(video_feats: torch.Tensor, audio_feats: torch.Tensor, vshift: int = VSHIFT) -> torch.Tensor:
    """Distance of each video feature to the audio features at offsets -vshift..vshift.

    The audio features are zero-padded by ``vshift`` rows at both ends (syncnet_python
    ``calc_pdist``), so column ``k`` of row ``i`` compares video window ``i`` with audio window
    ``i + k - vshift``.

    Args:
        video_feats, audio_feats: [T, D] features (T windows).
    Returns:
        [T, 2 vshift + 1] Euclidean distances (``torch.nn.functional.pairwise_distance``, eps 1e-6).
    """
    t = len(video_feats)
    padded = torch.nn.functional.pad(audio_feats, (0, 0, vshift, vshift))
    idx = torch.arange(t)[:, None] + torch.arange(2 * vshift + 1)[None, :]
    win = padded[idx]                                     # [T, K, D]
    return torch.nn.functional.pairwise_distance(
        video_feats[:, None, :].expand_as(win).reshape(-1, win.shape[-1]),
        win.reshape(-1, win.shape[-1])).reshape(t, -1)


def lse_from_distances(dists: torch.Tensor | np.ndarray, vshift: int = VSHIFT) -> dict[str, float]:
    """LSE-D, LSE-C and the AV offset from per-window offset distances.

    Args:
        dists: [T, 2 vshift + 1] (:func:`offset_distances`).
    Returns:
        ``{"lse_d": min_k mean_t d[t, k], "lse_c": median_k(mean_t d) - lse_d,
        "offset": vshift - argmin_k}`` (offset in frames; positive: audio leads as in
        syncnet_python). The median is torch's (lower middle for an even count).
    """
    d = torch.as_tensor(np.asarray(dists), dtype=torch.float64)
    mdist = d.mean(0)
    minval, minidx = torch.min(mdist, 0)
    return {"lse_d": float(minval), "lse_c": float(torch.median(mdist) - minval),
            "offset": int(vshift - int(minidx))}


def load_syncnet(weights_dir, verify: bool | None = None):
    """SyncNet v2 (``syncnet_python.SyncNetModel``) with ``syncnet_v2.model`` loaded (keys may carry
    syncnet_python's ``__S__.`` prefix). Returns (model in eval mode, sha256).

    Raises:
        WeightsMissing: the file is absent.
    """
    from pipeline.common.tvcompat import import_torchvision

    import_torchvision()
    from syncnet_python.SyncNetModel import S

    path = require("syncnet_v2", weights_dir, verify=verify)
    state = torch.load(path, map_location="cpu", weights_only=False)
    if isinstance(state, torch.nn.Module):
        state = state.state_dict()
    state = {k.removeprefix("__S__."): v for k, v in state.items()}
    net = S(num_layers_in_fc_layers=1024)
    net.load_state_dict(state, strict=True)
    return net.eval(), file_sha256(path)


def load_s3fd(weights_dir, verify: bool | None = None, device: str = "cpu"):
    """S3FD face detector (syncnet_python ``detectors.s3fd``) with ``sfd_face.pth``.
    Returns (detector with ``detect_faces(rgb, conf_th, scales)``, sha256)."""
    from pipeline.common.tvcompat import import_torchvision

    import_torchvision()
    from syncnet_python.detectors.s3fd import S3FD
    from syncnet_python.detectors.s3fd.nets import S3FDNet

    path = require("s3fd", weights_dir, verify=verify)
    net = S3FDNet(device=device)
    net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), strict=True)
    return S3FD(net, device=device), file_sha256(path)


def _iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def face_tracks(boxes: list[np.ndarray], min_track: int = MIN_FRAMES, max_gap: int = MAX_GAP,
                min_face: float = MIN_FACE, iou_th: float = IOU_TH) -> list[tuple[int, np.ndarray]]:
    """The face tracks of a shot from per-frame detections, as syncnet_python's ``track_shot``
    (``run_pipeline.py``) builds them.

    Greedy, one track at a time: a track starts at the first detection left (the earliest frame,
    the detector's order within it: S3FD's, by confidence); each later frame within ``max_gap``
    frames of the track's last detection adds its first detection left whose IoU with that one is
    over ``iou_th``; a gap of more than ``max_gap`` frames ends the track. The detections a track
    took are removed and the next track is built from the rest, until none is left. A track is kept
    when it holds more than ``min_track`` detections and, its boxes interpolated linearly over the
    frames between its first and last detection (none before or after), their mean width or height
    is over ``min_face`` pixels.

    Args:
        boxes: per frame, [K, >=4] detections (x1, y1, x2, y2, ...) in pixels (K may be 0).
    Returns:
        ``[(first frame, [M, 4] boxes of frames first .. first + M - 1)]`` in the order built.
    """
    left = []
    for det in boxes:
        det = np.asarray(det, np.float64)
        left.append([] if det.size == 0 else [d[:4] for d in det.reshape(-1, det.shape[-1])])
    tracks = []
    while True:
        frames, track = [], []
        for f, faces in enumerate(left):
            if not track:
                if faces:
                    frames.append(f)
                    track.append(faces.pop(0))
                continue
            if f - frames[-1] > max_gap:
                break
            k = next((k for k, d in enumerate(faces) if _iou(d, track[-1]) > iou_th), None)
            if k is not None:
                frames.append(f)
                track.append(faces.pop(k))
        if not track:
            return tracks
        if len(track) > min_track:
            idx = np.arange(frames[0], frames[-1] + 1)
            bb = np.stack([np.interp(idx, frames, np.asarray(track)[:, c]) for c in range(4)], 1)
            if max(np.mean(bb[:, 2] - bb[:, 0]), np.mean(bb[:, 3] - bb[:, 1])) > min_face:
                tracks.append((frames[0], bb))


def no_track_reason(boxes: list[np.ndarray], min_track: int = MIN_FRAMES) -> str:
    """Why :func:`face_tracks` kept no track of these detections (one line for the n/a reason)."""
    if not any(np.asarray(b).size for b in boxes):
        return "no face found by S3FD"
    longest = max((len(b) for _, b in face_tracks(boxes, 0, min_face=0)), default=0)
    if longest <= min_track:
        return (f"no face track over {min_track} frames (the longest spans {longest}: a face lost for more than "
                f"{MAX_GAP} frames or moved to IoU {IOU_TH} or less between detections; run_pipeline.py --min_track)")
    return f"face tracks of mean size {MIN_FACE} px or less (run_pipeline.py --min_face_size)"


def crop_track(frames_bgr: list[np.ndarray], track: np.ndarray) -> np.ndarray:
    """224x224 face crops along a track (run_pipeline.py ``crop_video``).

    Args:
        frames_bgr: N frames [H, W, 3] uint8 BGR.
        track: [N, 4] boxes.
    Returns:
        [N, 224, 224, 3] uint8 BGR.
    """
    import cv2
    from scipy.signal import medfilt

    k = min(SMOOTH, len(track) - (1 - len(track) % 2))
    s = medfilt(np.maximum(track[:, 3] - track[:, 1], track[:, 2] - track[:, 0]) / 2, k)
    cy = medfilt((track[:, 1] + track[:, 3]) / 2, k)
    cx = medfilt((track[:, 0] + track[:, 2]) / 2, k)
    out = np.empty((len(frames_bgr), CROP, CROP, 3), np.uint8)
    for i, img in enumerate(frames_bgr):
        bs = s[i]
        pad = int(bs * (1 + 2 * CROP_SCALE))
        fr = np.pad(img, ((pad, pad), (pad, pad), (0, 0)), "constant", constant_values=110)
        my, mx = cy[i] + pad, cx[i] + pad
        face = fr[int(my - bs):int(my + bs * (1 + 2 * CROP_SCALE)),
                  int(mx - bs * (1 + CROP_SCALE)):int(mx + bs * (1 + CROP_SCALE))]
        out[i] = cv2.resize(face, (CROP, CROP))
    return out


def mfcc(audio_16k: np.ndarray) -> np.ndarray:
    """[13, T] MFCC (100 per second) of float audio in [-1, 1] at 16 kHz, computed on the int16
    scale as syncnet_python (which reads the PCM wav with scipy)."""
    import python_speech_features

    # the inverse of read_audio_16k's int16 / 32768: the wav's own int16 samples, as the reference reads them
    pcm = np.clip(np.round(np.asarray(audio_16k, np.float64) * 32768.0), -32768, 32767)
    return np.asarray(python_speech_features.mfcc(pcm, SR), np.float64).T


@torch.no_grad()
def syncnet_features(net, crops_bgr: np.ndarray, mfcc_13xT: np.ndarray, batch: int = 20,
                     audio_frames: int | None = None):
    """Lip and audio features of every 5-frame window.

    Args:
        net: SyncNet (``forward_lip`` / ``forward_aud``).
        crops_bgr: [N, 224, 224, 3] uint8 BGR crops (fed as 0..255 floats, as the reference).
        mfcc_13xT: [13, T] MFCC, 4 columns per video frame.
        audio_frames: video frames the audio covers, ``floor(samples / 640)`` at 16 kHz and 25 fps
            (syncnet_python's ``SyncNetInstance.evaluate``: ``min_length``); None: ``T // 4``, one
            fewer than that when the audio is exactly n frames long (its MFCC has 4n - 1 columns).
    Returns:
        (video [M, 1024], audio [M, 1024]) with M = min(N, audio_frames) - 5 windows.
    Raises:
        ValueError: fewer than 6 frames, or ``audio_frames`` beyond the MFCC's columns.
    """
    n = min(len(crops_bgr), mfcc_13xT.shape[1] // 4 if audio_frames is None else audio_frames)
    if 4 * (n - WINDOW - 1) + 20 > mfcc_13xT.shape[1]:
        raise ValueError(f"{n} frames need {4 * (n - WINDOW - 1) + 20} MFCC columns, got {mfcc_13xT.shape[1]}")
    last = n - WINDOW
    if last < 1:
        raise ValueError(f"{n} frames: SyncNet needs at least {WINDOW + 1}")
    im = torch.from_numpy(crops_bgr[:n]).float().permute(3, 0, 1, 2)[None]   # [1, 3, N, H, W]
    cc = torch.from_numpy(mfcc_13xT).float()[None, None]                       # [1, 1, 13, T]
    vf, af = [], []
    for i in range(0, last, batch):
        js = range(i, min(last, i + batch))
        vf.append(net.forward_lip(torch.cat([im[:, :, j:j + WINDOW] for j in js], 0)))
        af.append(net.forward_aud(torch.cat([cc[:, :, :, 4 * j:4 * j + 20] for j in js], 0)))
    return torch.cat(vf, 0), torch.cat(af, 0)


def _read_jpegs(folder) -> list[np.ndarray]:
    import cv2

    return [cv2.imread(str(f)) for f in sorted(Path(folder).glob("*.jpg"))]


def reference_decode(video, tmp) -> tuple[list[np.ndarray], np.ndarray]:
    """Frames and audio of ``video`` as syncnet_python's ``run_pipeline.py`` gets them: ffmpeg
    re-encodes the clip to an AVI (MPEG-4 part 2, ``-qscale:v 2 -r 25``) and writes its frames as
    JPEGs (``-qscale:v 2``), which the detector and the crops read; the audio is 16 kHz mono PCM.

    One difference, for frame-exact timing: the AVI is written without audio and the PCM is taken
    from ``video`` itself. The reference muxes the audio into the AVI (MP3, ffmpeg's default for
    AVI) and extracts it from there; ffmpeg 5.1 then delays every video frame after the first by
    one frame slot to cover the MP3 encoder's delay, and the JPEG step repeats the first frame:
    a shift of the video against the audio that depends on the ffmpeg version and moves the AV
    offset, not the lip-sync the metric is for. (``-async 1`` is left out with the audio.)

    Args:
        video: a media file with a video and an audio stream.
        tmp: an empty folder for the intermediate files.
    Returns:
        (frames [H, W, 3] uint8 BGR, [T] float32 audio in [-1, 1] at 16 kHz, the AVI's path).
    Raises:
        ValueError: ffmpeg cannot read ``video`` (its last error line).
    """
    import ffmpeg

    from pipeline.preprocess.media import _ffmpeg_msg

    tmp = Path(tmp)
    avi, jpg = tmp / "video.avi", tmp / "frames"
    jpg.mkdir(parents=True)
    try:
        ffmpeg.input(str(video)).output(str(avi), an=None, **{"qscale:v": 2, "r": FPS}).run(
            quiet=True, overwrite_output=True)
        ffmpeg.input(str(avi)).output(str(jpg / "%06d.jpg"), **{"qscale:v": 2, "threads": 1, "f": "image2"}).run(
            quiet=True, overwrite_output=True)
        audio = read_audio_16k(video)
    except ffmpeg.Error as exc:
        raise ValueError(f"{video}: {_ffmpeg_msg(exc, video)}") from None
    return _read_jpegs(jpg), audio, avi


def shots(video, n_frames: int) -> list[tuple[int, int]]:
    """The shots of ``video`` as ``run_pipeline.py``'s ``scene_detect`` finds them: PySceneDetect's
    ``ContentDetector`` (mean HSV change between frames) with the defaults of scenedetect 0.5.1,
    which syncnet_python pins (threshold 30, shots of at least 15 frames, consecutive cuts
    suppressed, frames subsampled by 0.5.1's factor for the width), run by the installed 0.6.

    Args:
        video: the clip (the reference runs it on its intermediate AVI).
        n_frames: frames of the clip, the end of the last shot.
    Returns:
        ``[(first frame, end frame exclusive)]``; the whole clip when no cut is found.
    """
    from scenedetect import ContentDetector, SceneManager, open_video
    from scenedetect.scene_detector import FlashFilter

    stream = open_video(str(video), backend="opencv")
    manager = SceneManager()
    manager.auto_downscale = False
    manager.downscale = next((f for w, f in sorted(SHOT_DOWNSCALE.items(), reverse=True) if stream.frame_size[0] >= w), 1)
    manager.add_detector(ContentDetector(threshold=SHOT_THRESHOLD, min_scene_len=SHOT_MIN_LEN,
                                         filter_mode=FlashFilter.Mode.SUPPRESS))
    manager.detect_scenes(video=stream)
    cuts = [(a.get_frames(), min(b.get_frames(), n_frames)) for a, b in manager.get_scene_list()]
    return [(a, b) for a, b in cuts if b > a] or [(0, n_frames)]


def xvid_roundtrip(crops_bgr: np.ndarray, tmp) -> np.ndarray:
    """The crops as SyncNet sees them in the reference: ``crop_video`` writes them to an XVID AVI
    (OpenCV's writer, 25 fps) and ``SyncNetInstance.evaluate`` reads that back as JPEG frames
    (ffmpeg ``-f image2``, its default quality).

    Args:
        crops_bgr: [N, 224, 224, 3] uint8 BGR.
        tmp: an empty folder for the intermediate files.
    Returns:
        [N, 224, 224, 3] uint8 BGR after the two lossy codecs.
    Raises:
        RuntimeError: OpenCV has no XVID writer, or the round trip lost frames.
    """
    import cv2
    import ffmpeg

    tmp = Path(tmp)
    avi, jpg = tmp / "crop.avi", tmp / "crop"
    jpg.mkdir(parents=True)
    writer = cv2.VideoWriter(str(avi), cv2.VideoWriter_fourcc(*"XVID"), FPS, (CROP, CROP))
    if not writer.isOpened():
        raise RuntimeError("OpenCV cannot write XVID (an OpenCV build without FFmpeg)")
    for c in crops_bgr:
        writer.write(np.ascontiguousarray(c))
    writer.release()
    ffmpeg.input(str(avi)).output(str(jpg / "%06d.jpg"), threads=1, f="image2").run(quiet=True, overwrite_output=True)
    out = _read_jpegs(jpg)
    if len(out) != len(crops_bgr):
        raise RuntimeError(f"XVID round trip gave {len(out)} of {len(crops_bgr)} frames")
    return np.stack(out)


def read_video_bgr(path) -> list[np.ndarray]:
    """All frames of a video as [H, W, 3] uint8 BGR (OpenCV decode)."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, img = cap.read()
        if not ok:
            break
        frames.append(img)
    cap.release()
    return frames


def read_audio_16k(path) -> np.ndarray:
    """[T] float32 mono 16 kHz audio of a media file (ffmpeg resampling)."""
    import ffmpeg

    raw, _ = (ffmpeg.input(str(path)).output("pipe:", format="s16le", acodec="pcm_s16le", ac=1, ar=SR)
              .run(capture_stdout=True, capture_stderr=True))
    return np.frombuffer(raw, np.int16).astype(np.float32) / 32768.0


class LSE:
    """LSE-C / LSE-D of a video with its muxed audio.

    Raises (constructor):
        WeightsMissing: ``syncnet_v2.model`` or ``sfd_face.pth`` absent.
    """

    backend = "SyncNet v2 (syncnet_python) + S3FD track, Wav2Lip scores_LSE protocol"

    def __init__(self, weights_dir, verify: bool | None = None, device: str = "cpu", min_frames: int = MIN_FRAMES):
        self.net, sha_sync = load_syncnet(weights_dir, verify)
        self.det, sha_det = load_s3fd(weights_dir, verify, device)
        self.net.to(device)
        self.weights_sha256 = sha_sync
        self.detector_sha256 = sha_det
        self.min_frames = min_frames

    def __call__(self, video) -> dict[str, float]:
        """LSE of ``video`` (25 fps, audio muxed) as syncnet_python scores it: frames and audio
        through :func:`reference_decode`, S3FD on every frame, :func:`shots`, :func:`face_tracks`
        within each shot of more than ``min_frames`` frames, each track
        cropped (:func:`crop_track`) through :func:`xvid_roundtrip` with its slice of the audio,
        and scored (:func:`offset_distances`, :func:`lse_from_distances`). Wav2Lip's
        ``calculate_scores_real_videos.sh`` prints one line per track; a clip's LSE-C and LSE-D
        are the mean over its tracks (one track on a talking-head clip).

        Returns:
            ``{"lse_c", "lse_d", "offset" (of the first track, frames), "n_frames" (frames in the
            tracks), "tracks"}``.
        Raises:
            ValueError: too short (``min_frames`` frames or fewer), no usable face track (the
                reason), or a file ffmpeg cannot read.
        """
        import tempfile

        import cv2

        with tempfile.TemporaryDirectory(prefix="lse_") as tmp:
            frames, audio, avi = reference_decode(video, tmp)
            n = min(len(frames), int(math.floor(len(audio) / (SR / FPS))))
            if n <= self.min_frames:
                raise ValueError(f"{n} frames with audio: the reference SyncNet pipeline needs more than "
                                 f"{self.min_frames} (run_pipeline.py --min_track)")
            frames = frames[:n]
            boxes = [self.det.detect_faces(cv2.cvtColor(f, cv2.COLOR_BGR2RGB), conf_th=CONF_TH,
                                           scales=[FACEDET_SCALE]) for f in frames]
            tracks = []
            for start, end in shots(avi, n):     # run_pipeline.py: tracks within shots of min_track frames
                if end - start >= self.min_frames:
                    tracks += [(start + first, bb) for first, bb in face_tracks(boxes[start:end], self.min_frames)]
            if not tracks:
                raise ValueError(no_track_reason(boxes, self.min_frames))
            scores = []
            hop = SR // FPS
            for t, (first, track) in enumerate(tracks):
                crops = xvid_roundtrip(crop_track(frames[first:first + len(track)], track), Path(tmp) / f"t{t}")
                clip = audio[first * hop:(first + len(track)) * hop]
                vf, af = syncnet_features(self.net, crops, mfcc(clip), audio_frames=len(clip) // hop)
                scores.append(lse_from_distances(offset_distances(vf, af)))
        return {"lse_c": float(np.mean([r["lse_c"] for r in scores])),
                "lse_d": float(np.mean([r["lse_d"] for r in scores])),
                "offset": scores[0]["offset"], "n_frames": int(sum(len(b) for _, b in tracks)),
                "tracks": len(tracks)}
