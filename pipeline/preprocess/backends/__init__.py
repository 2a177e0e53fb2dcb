"""Face-stage backends of the dataset builder (landmarks, face parsing).

Offline defaults: MediaPipe Face Landmarker (:mod:`.mediapipe_mesh`), dlib's 68-point predictor
(:mod:`.dlib68`) or the mesh->68 mapping (:mod:`.mesh68`), MediaPipe selfie segmentation
(:mod:`.selfie`). Used when their weights are present: FAN 2DFAN4 (:mod:`.fan`), BiSeNet face
parsing (:mod:`.bisenet`).
"""
