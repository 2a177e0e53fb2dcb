"""68-point iBUG landmarks taken from the 478-point MediaPipe mesh by a fixed index mapping.

The mapping picks, for each of the 68 iBUG/300-W points (jaw 0-16, brows 17-26, nose 27-35, eyes
36-47, outer lips 48-59, inner lips 60-67; image-left first as in dlib's output for a frontal face),
the mesh vertex at that semantic point (MediaPipe's canonical face model). It is checked against
dlib's predictor on the sample clip (tests/test_landmarks.py).
The jaw vertices were chosen as the mesh vertices closest on average to dlib's jaw points on the
sample clip (mean error 1-12 px at 512x512: dlib's mid-jaw points 2 and 14 lie inside the mesh's
silhouette); inner points agree with dlib to 1-6 px.
"""
from __future__ import annotations

import numpy as np

#: MediaPipe mesh vertex for each iBUG 68 point (index = iBUG point number)
MESH_TO_68 = np.array([
    # jaw 0-16 (image left -> chin -> image right)
    127, 227, 137, 215, 138, 136, 149, 148, 152, 377, 378, 365, 367, 435, 366, 447, 356,
    # brows 17-21, 22-26
    70, 63, 105, 66, 107, 336, 296, 334, 293, 300,
    # nose bridge 27-30, nostrils 31-35
    168, 197, 5, 4, 75, 97, 2, 326, 305,
    # eyes 36-41, 42-47
    33, 160, 158, 133, 153, 144, 362, 385, 387, 263, 373, 380,
    # outer lips 48-59
    61, 39, 37, 0, 267, 269, 291, 405, 314, 17, 84, 181,
    # inner lips 60-67
    78, 82, 13, 312, 308, 317, 14, 87,
])


def mesh_to_68(mesh: np.ndarray) -> np.ndarray:
    """iBUG 68 points from a mesh.

    Args:
        mesh: [..., 478, 2 or 3] mesh in pixels.
    Returns:
        float32 [..., 68, 2] x, y in pixels.
    """
    return np.asarray(mesh)[..., MESH_TO_68, :2].astype(np.float32)
