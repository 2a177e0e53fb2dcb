"""LSE-C / LSE-D: lip-sync error from SyncNet (Chung & Zisserman 2016), as Wav2Lip's
``scores_LSE/calculate_scores_real_videos`` computes it with ``syncnet_python``.

Pipeline (``run_pipeline.py`` then ``SyncNetInstance.evaluate``), re-implemented here:

1. face track: S3FD (``sfd_face.pth``) on every frame at scale 0.25, confidence 0.9; one track
   (the face overlapping the previous box best), gaps up to 25 frames interpolated, mean face
   size over 100 px; the box centre and size are median-filtered (13 frames) and the frame is
   cropped with crop scale 0.4 (padded with grey 110) and resized to 224x224 (BGR);
2. audio: 16 kHz mono PCM, MFCC (``python_speech_features.mfcc``, 13 coefficients, 100 per s)
   on the int16 sample scale;
3. SyncNet v2 (``syncnet_v2.model``): a 1024-d lip feature for each 5-frame window and an audio
   feature for the matching 20 MFCC columns (0.2 s);
4. offset search (:func:`offset_distances`, :func:`lse_from_distances`): for offsets -15..15
   frames, the mean over windows of the feature distance; LSE-D = the minimum over offsets,
   LSE-C = median over offsets minus that minimum; the AV offset is the arg-min.

Clips of :data:`MIN_FRAMES` frames or fewer are refused with that reason: the reference pipeline
(``run_pipeline.py``, ``track_shot``) keeps a face track only when ``len(track) > opt.min_track``
(``--min_track`` 100), so a clip needs 101 frames (over 4 s at 25 fps). Without the SyncNet or S3FD weights the metric is n/a.
"""
from __future__ import annotations

import logging
import math

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


def face_track(boxes: list[np.ndarray]) -> np.ndarray:
    """One face track from per-frame detections.

    Args:
        boxes: per frame, [K, >=4] detections (x1, y1, x2, y2, ...) in pixels (K may be 0).
    Returns:
        [N, 4] boxes, gaps interpolated linearly.
    Raises:
        ValueError: no face, a gap longer than :data:`MAX_GAP` frames, or faces smaller than
            :data:`MIN_FACE` pixels (the reference pipeline drops such tracks).
    """
    n = len(boxes)
    track = np.full((n, 4), np.nan)
    prev = None
    for i, det in enumerate(boxes):
        det = np.asarray(det, np.float64)
        if det.size == 0:
            continue
        det = det.reshape(1, -1) if det.ndim == 1 else det
        if prev is None:
            j = int(np.argmax((det[:, 2] - det[:, 0]) * (det[:, 3] - det[:, 1])))
        else:
            j = int(np.argmax([_iou(prev, d) for d in det]))
        track[i] = prev = det[j, :4]
    found = ~np.isnan(track[:, 0])
    if not found.any():
        raise ValueError("no face found by S3FD")
    run = gap = 0
    for f in found:
        run = 0 if f else run + 1
        gap = max(gap, run)
    if gap > MAX_GAP:
        raise ValueError(f"face lost for {gap} consecutive frames (more than {MAX_GAP})")
    idx = np.arange(n)
    for c in range(4):
        track[:, c] = np.interp(idx, idx[found], track[found, c])
    size = max(np.mean(track[:, 2] - track[:, 0]), np.mean(track[:, 3] - track[:, 1]))
    if size <= MIN_FACE:
        raise ValueError(f"face track of mean size {size:.0f} px, the reference needs over {MIN_FACE} px")
    return track


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
        """``{"lse_c", "lse_d", "offset", "n_frames"}`` of ``video`` (25 fps, audio muxed).

        Raises:
            ValueError: too short (``min_frames`` frames or fewer), no usable face track.
        """
        import cv2

        frames = read_video_bgr(video)
        audio = read_audio_16k(video)
        n = min(len(frames), int(math.floor(len(audio) / (SR / FPS))))
        if n <= self.min_frames:
            raise ValueError(f"{n} frames with audio: the reference SyncNet pipeline needs more than "
                             f"{self.min_frames} (run_pipeline.py --min_track)")
        frames = frames[:n]
        boxes = [self.det.detect_faces(cv2.cvtColor(f, cv2.COLOR_BGR2RGB), conf_th=CONF_TH,
                                       scales=[FACEDET_SCALE]) for f in frames]
        crops = crop_track(frames, face_track(boxes))
        vf, af = syncnet_features(self.net, crops, mfcc(audio[: int(n * SR / FPS)]), audio_frames=n)
        out = lse_from_distances(offset_distances(vf, af))
        out["n_frames"] = n
        return out
