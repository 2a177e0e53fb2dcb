"""Frames stage: the cropped video -> ``ori_imgs/{i}.jpg``, exactly one JPEG per video frame.

``python -m pipeline.preprocess.frames --video {id}.mp4 --out ori_imgs``

The video is decoded once (PyAV, every frame in presentation order, no rate conversion) and each
frame is JPEG-encoded (OpenCV, quality :data:`JPEG_QUALITY`). The number of frames written is
checked against the container's frame count (``nb_frames``; when the container has none, against
``ffprobe -count_frames``) and against its number of video packets (``ffprobe -count_packets``): a
mismatch is an error, frames are never dropped or duplicated. The folder appears only when
complete (atomic).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tqdm import tqdm

from pipeline.common.errors import InputError
from pipeline.common.io import atomic_dir
from pipeline.common.log import run_main, setup_logging
from pipeline.preprocess.media import count_frames, count_packets

#: JPEG quality of ori_imgs (OpenCV scale 0-100)
JPEG_QUALITY = 95


def extract_frames(video: str | Path, out_dir: str | Path, quality: int = JPEG_QUALITY) -> int:
    """Write every frame of ``video`` as ``out_dir/{i}.jpg`` (i from 0), atomically.

    Returns:
        the number of frames written.
    Raises:
        InputError: the video cannot be decoded, or the decoded count differs from the
            container's frame count.
    """
    import av
    import cv2

    log = setup_logging("frames")
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)]
    n = 0
    with atomic_dir(out_dir) as tmp:
        try:
            with av.open(str(video)) as container:
                if not container.streams.video:
                    raise InputError(video, "no video stream")
                vs = container.streams.video[0]
                vs.thread_type = "AUTO"
                expected = int(vs.frames or 0)
                for frame in tqdm(container.decode(vs), desc="frames", unit="frame", total=expected or None,
                                  mininterval=5):
                    ok, buf = cv2.imencode(".jpg", frame.to_ndarray(format="bgr24"), params)
                    if not ok:
                        raise RuntimeError(f"JPEG encoding failed for frame {n} of {video}")
                    (tmp / f"{n}.jpg").write_bytes(buf.tobytes())
                    n += 1
        except av.error.FFmpegError as exc:
            raise InputError(video, f"unreadable or corrupt video after {n} frames ({exc})") from None
        if not expected:
            expected = count_frames(video)
        if n != expected:
            raise InputError(video, f"decoded {n} frames but the container holds {expected}")
        packets = count_packets(video)
        if packets != n:
            raise InputError(video, f"decoded {n} frames but the container holds {packets} video packets")
        if n == 0:
            raise InputError(video, "no frames decoded")
    log.info("%s: %d frames -> %s", video, n, out_dir)
    return n


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--video", required=True, help="the cropped video ({identity}.mp4)")
    ap.add_argument("--out", required=True, help="ori_imgs folder to write")
    ap.add_argument("--quality", type=int, default=JPEG_QUALITY, help="JPEG quality 0-100")
    args = ap.parse_args(argv)
    extract_frames(args.video, args.out, args.quality)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
