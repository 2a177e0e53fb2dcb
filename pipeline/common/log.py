"""Logging set-up shared by every ``python -m pipeline.<stage>`` entry point."""
from __future__ import annotations

import logging
import os
import re
import sys


def setup_logging(name: str, level: int = logging.INFO) -> logging.Logger:
    """Configure root logging to stderr (Snakemake redirects it to the rule's ``log:`` file).

    Returns the named logger.
    """
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
        force=True,
    )
    return logging.getLogger(name)


#: start-up chatter that native libraries write straight to the C stderr (file descriptor 2),
#: bypassing Python logging: absl's pre-InitializeLog notice and its INFO/WARNING lines
#: (``I0000 00:00:... task_runner.cc:85] ...``; MediaPipe's graphs) and TensorFlow Lite's delegate line.
#: absl ERROR/FATAL lines (``E``/``F``) are kept.
NATIVE_NOISE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|[IW]\d{4} \d\d:\d\d:\d+\.\d+\s+\d+ [\w./-]+:\d+\] .*"
    r"|INFO: Created TensorFlow Lite \w+ delegate for \w+\.)$")
#: set to 1 to see the native start-up lines unfiltered
NATIVE_LOGS_ENV = "TALKING_NERF_NATIVE_LOGS"


class NativeStderrFilter:
    """Drop :data:`NATIVE_NOISE` lines from everything written to file descriptor 2.

    MediaPipe (absl) and TensorFlow Lite print a handful of start-up lines from C++ straight to
    fd 2, where they bury the stage's own messages in the rule log. While installed, fd 2 is a pipe
    read by a thread that passes every other line on unchanged and in order (Python logging, tracebacks,
    ffmpeg children) and counts the dropped ones; :meth:`uninstall` restores fd 2 and writes one line
    saying how many were hidden. ``TALKING_NERF_NATIVE_LOGS=1`` disables the filter.
    """

    def __init__(self) -> None:
        self.hidden = 0
        self._orig: int | None = None
        self._thread = None

    def _pump(self, rfd: int, out: int) -> None:
        buf = b""
        with os.fdopen(rfd, "rb", buffering=0) as pipe:
            while chunk := pipe.read(65536):
                buf += chunk
                *lines, buf = buf.split(b"\n")
                self._emit(lines, out)
        if buf:
            self._emit([buf], out, newline=False)

    def _emit(self, lines: list[bytes], out: int, newline: bool = True) -> None:
        keep = []
        for ln in lines:
            if NATIVE_NOISE.match(ln.decode("utf-8", "replace").rstrip("\r")):
                self.hidden += 1
            else:
                keep.append(ln)
        if keep:
            data = b"\n".join(keep) + (b"\n" if newline else b"")
            while data:
                data = data[os.write(out, data):]

    def install(self) -> "NativeStderrFilter":
        """Route fd 2 through the filter (no-op when ``TALKING_NERF_NATIVE_LOGS=1``)."""
        import threading

        if os.environ.get(NATIVE_LOGS_ENV) == "1" or self._orig is not None:
            return self
        sys.stderr.flush()
        self._orig = os.dup(2)
        rfd, wfd = os.pipe()
        os.dup2(wfd, 2)
        os.close(wfd)
        self._thread = threading.Thread(target=self._pump, args=(rfd, self._orig), daemon=True)
        self._thread.start()
        return self

    def uninstall(self) -> None:
        """Restore fd 2, pass on what is still in the pipe, report the hidden count."""
        if self._orig is None:
            return
        sys.stderr.flush()
        os.dup2(self._orig, 2)  # closes this process's write end of the pipe
        self._thread.join(timeout=5.0)  # a still-running child may hold the pipe open
        os.close(self._orig)
        self._orig = None
        if self.hidden:
            logging.getLogger("pipeline").info(
                "%d start-up lines of native libraries (absl, TensorFlow Lite) hidden; %s=1 shows them",
                self.hidden, NATIVE_LOGS_ENV)


def run_main(main, argv=None) -> int:
    """Run a CLI ``main(argv)``; a :class:`PipelineError` prints one clear line and exits 1.

    Native libraries' start-up chatter is filtered from stderr meanwhile (:class:`NativeStderrFilter`).
    Any other exception keeps its traceback (it is a bug, not a user error).
    """
    from pipeline.common.errors import PipelineError

    noise = NativeStderrFilter().install()
    try:
        rc = main(argv)
        return 0 if rc is None else int(rc)
    except PipelineError as exc:
        logging.getLogger("pipeline").error("%s", exc)
        print(f"ERROR: {exc}", file=sys.stderr)
        return 1
    finally:
        noise.uninstall()
