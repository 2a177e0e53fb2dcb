"""One-shot face replacement: a single reference photo driven by the motion of a talking video.

The path of LiveNeRF (Vu et al., "LiveNeRF: Efficient Face Replacement Through Neural Radiance
Fields Integration"): an audio-driven NeRF render (by default the cross-driven ``er_nerf`` renders)
drives a photo of a new person, with no training on that person. Backends
(config ``oneshot.backend``; :func:`pipeline.oneshot.backends.resolve_backend`):

===============  ===================  =========================================================
backend          method (render dir)  what
===============  ===================  =========================================================
``liveportrait`` ``livenerf``         LivePortrait's networks (:mod:`pipeline.oneshot.liveportrait`),
                                      needs its weight files (``python -m pipeline.weights list``)
``meshwarp``     ``oneshot_meshwarp`` classical: MediaPipe mesh + piecewise-affine warp
                                      (:mod:`pipeline.oneshot.meshwarp`), runs offline
===============  ===================  =========================================================

Bounds (:mod:`pipeline.oneshot.bounds`): ``still_photo`` (the photo repeated: perfect identity, no
motion) and ``driving_video`` (the driver itself: perfect motion, wrong identity).

Outputs follow the render contract (:mod:`pipeline.render.contract`) with protocol ``one_shot``
under ``results/renders/{method}/{reference}/{test}/``.
"""
from __future__ import annotations

#: backend name -> method name of its render folders
BACKEND_METHODS = {"liveportrait": "livenerf", "meshwarp": "oneshot_meshwarp"}

#: the bounds written beside every one-shot method
BOUND_METHODS = ("still_photo", "driving_video")

#: suffix of the reference name of a run on the horizontally flipped photo (NeRFFaceSpeech's
#: "internal differences", Table 2)
FLIPPED_SUFFIX = "-flipped"

PROTOCOL = "one_shot"
