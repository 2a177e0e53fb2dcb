"""Native libraries' start-up chatter (absl, TensorFlow Lite) is filtered from the stage logs.

MediaPipe and TensorFlow Lite write these lines from C++ straight to file descriptor 2; the CLI
wrapper ``run_main`` routes fd 2 through :class:`pipeline.common.log.NativeStderrFilter`.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from tests.conftest import PROJECT_ROOT, SAMPLE_VIDEO

# the lines as mediapipe 0.10.21 prints them when a face landmarker starts (copied from a rule log)
NOISE = [
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    "I0000 00:00:1796103273.174664   17865 task_runner.cc:85] GPU suport is not available: INTERNAL: ; "
    "RET_CHECK failure (mediapipe/gpu/gl_context_egl.cc:84) egl_initializedUnable to initialize EGL",
    "W0000 00:00:1796103273.174961   17865 face_landmarker_graph.cc:174] Sets FaceBlendshapesGraph "
    "acceleration to xnnpack by default.",
    "INFO: Created TensorFlow Lite XNNPACK delegate for CPU.",
]
KEPT_ERROR = "E0000 00:00:1796103273.2   17865 calculator_graph.cc:9] a real native error"

SCRIPT = textwrap.dedent("""
    import logging, os, subprocess, sys
    from pipeline.common.log import run_main, setup_logging
    NOISE = {noise!r}
    def main(argv):
        log = setup_logging("stage")
        log.info("first message")
        for line in NOISE[:2]:
            os.write(2, (line + "\\n").encode())            # C-level writes, as absl does
        subprocess.run(["sh", "-c", "echo '" + NOISE[2] + "' >&2; echo 'child says hi' >&2"], check=True)
        os.write(2, (NOISE[3] + "\\n{kept}\\n").encode())
        log.warning("second message")
        return 0
    sys.exit(run_main(main))
""")


def _run(env=None):
    code = SCRIPT.format(noise=NOISE, kept=KEPT_ERROR)
    return subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True,
                          timeout=60, env={**os.environ, **(env or {})})


def test_noise_hidden_everything_else_kept_in_order():
    proc = _run()
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    assert not any(n in proc.stderr for n in NOISE)
    kept = [ln for ln in lines if "first message" in ln or "child says hi" in ln or "real native error" in ln
            or "second message" in ln]
    assert [k.split(": ")[-1] if "message" in k else k for k in kept] == [
        "first message", "child says hi", KEPT_ERROR, "second message"]
    assert lines[-1].endswith("4 start-up lines of native libraries (absl, TensorFlow Lite) hidden; "
                              "TALKING_NERF_NATIVE_LOGS=1 shows them")


def test_env_switch_shows_the_native_lines():
    proc = _run({"TALKING_NERF_NATIVE_LOGS": "1"})
    assert proc.returncode == 0 and all(n in proc.stderr for n in NOISE)
    assert "hidden" not in proc.stderr


def test_real_stage_log_starts_with_our_message(tmp_path):
    """The probe stage on the sample: MediaPipe's start-up lines do not reach the log."""
    proc = subprocess.run([sys.executable, "-m", "pipeline.preprocess.probe", "--video", str(SAMPLE_VIDEO),
                           "--out", str(tmp_path / "probe.json"), "--cfg", '{"sample_frames": 2}'],
                          cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stderr.splitlines()
    assert " INFO probe: " in lines[0] and "faces in 2/2 sampled frames" in lines[0]
    assert "absl::InitializeLog" not in proc.stderr and "TensorFlow Lite XNNPACK" not in proc.stderr
    assert len(lines) == 2
    assert "hidden; TALKING_NERF_NATIVE_LOGS=1 shows them" in lines[-1]
