"""Headless Chromium (Debian ``chromium``) for checking and screenshotting the HTML report.

Installed by ``scripts/bootstrap.sh`` (``apt-get install chromium``). Flags keep it offline and
profile-free: ``--headless --no-sandbox --disable-gpu --disable-background-networking
--disable-component-update --disable-sync --no-first-run --user-data-dir=<temporary folder>``.
"""
from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from pipeline.common.errors import PipelineError

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
         "--mute-audio"]


def chromium_binary() -> str | None:
    """Path of the Chromium executable (``chromium``, ``chromium-browser``), or None."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def _run(args: list[str], timeout: int) -> subprocess.CompletedProcess:
    exe = chromium_binary()
    if exe is None:
        raise PipelineError("chromium not found: install it with scripts/bootstrap.sh (apt-get install chromium)")
    with tempfile.TemporaryDirectory(prefix="chromium") as profile:
        proc = subprocess.run([exe, *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True,
                              text=True, timeout=timeout)
    if proc.returncode != 0:
        raise PipelineError(f"chromium failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
    return proc


def dump_dom(page: str | Path, timeout: int = 120) -> str:
    """The DOM of ``page`` after loading, serialised by ``chromium --dump-dom``.

    Raises:
        PipelineError: chromium missing or failing.
    """
    return _run(["--dump-dom", Path(page).resolve().as_uri()], timeout).stdout


def screenshot(page: str | Path, png: str | Path, size: tuple[int, int] = (1280, 2000),
               timeout: int = 120) -> Path:
    """Save a PNG screenshot of ``page`` at ``size`` (width, height) pixels.

    Raises:
        PipelineError: chromium missing or failing, or no PNG written.
    """
    png = Path(png).resolve()
    png.parent.mkdir(parents=True, exist_ok=True)
    _run([f"--screenshot={png}", f"--window-size={size[0]},{size[1]}",
          Path(page).resolve().as_uri()], timeout)
    if not png.is_file() or png.stat().st_size == 0:
        raise PipelineError(f"{png}: chromium wrote no screenshot")
    return png
