"""One GPU per job on a multi-GPU workstation (profiles/workstation).

Snakemake's global ``resources: gpu=N`` (the workstation profile) caps how many GPU jobs run at
once, but it does not say *which* device each job gets: without help, every job would start on
``cuda:0``. :func:`claim_gpu` picks a free device from a pool and sets ``CUDA_VISIBLE_DEVICES`` to
it, so the job sees exactly one GPU (as ``cuda:0``). A device is "free" when no other process holds
its lock file (``fcntl.flock`` on ``<lock dir>/gpu-<id>.lock``); the lock is held until the claim is
released or the process exits, and the kernel drops it when a process dies, so a crashed job never
leaves a stale lock.

The GPU entry points (training, rendering) call it first thing, before anything initialises CUDA::

    from pipeline.common.gpu import claim_gpu
    claim = claim_gpu()          # sets CUDA_VISIBLE_DEVICES; claim.device is None on a CPU machine

Pool (first that applies):
  1. ``TALKING_NERF_GPUS``: comma-separated device ids or UUIDs (``"0,1,3"``); empty or ``none``:
     no GPU;
  2. ``CUDA_VISIBLE_DEVICES`` as set by the user (e.g. ``"2,3"`` to leave 0 and 1 to others);
  3. the GPUs ``nvidia-smi`` lists;
  4. none: the claim is a no-op and the job runs on CPU.

Under SLURM (``SLURM_JOB_ID`` set) the scheduler has already bound the job's GPUs and set
``CUDA_VISIBLE_DEVICES``: the claim keeps that binding and takes no lock.

Run ``python -m pipeline.common.gpu`` to list the pool and which devices are claimed now.
"""
from __future__ import annotations

import argparse
import errno
import fcntl
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.common.errors import PipelineError

log = logging.getLogger(__name__)

ENV_POOL = "TALKING_NERF_GPUS"
ENV_LOCK_DIR = "TALKING_NERF_GPU_LOCK_DIR"
DEFAULT_LOCK_DIR = Path(tempfile.gettempdir()) / "talking-nerf-gpu-locks"


def _split_devices(value: str) -> list[str]:
    if value.strip().lower() in ("", "none", "-1"):
        return []
    return [d.strip() for d in value.split(",") if d.strip()]


def _nvidia_smi_devices() -> list[str]:
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return []
    try:
        out = subprocess.run([exe, "--query-gpu=index", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=30, check=True).stdout
    except (subprocess.SubprocessError, OSError) as exc:
        log.warning("nvidia-smi failed (%s): no GPU pool", exc)
        return []
    return [line.strip() for line in out.splitlines() if line.strip()]


def gpu_pool(env: dict | None = None) -> list[str]:
    """Device ids a job may claim, in order (see the module docstring for the sources).

    Args:
        env: environment to read (default ``os.environ``).
    Returns:
        list of device ids or UUIDs as strings; empty when no GPU is available.
    """
    env = os.environ if env is None else env
    if ENV_POOL in env:
        return _split_devices(env[ENV_POOL])
    if "CUDA_VISIBLE_DEVICES" in env:
        return _split_devices(env["CUDA_VISIBLE_DEVICES"])
    return _nvidia_smi_devices()


def lock_dir(env: dict | None = None) -> Path:
    """Folder of the per-device lock files: ``TALKING_NERF_GPU_LOCK_DIR`` or
    ``<tmp>/talking-nerf-gpu-locks`` (shared by all users of the machine)."""
    env = os.environ if env is None else env
    return Path(env.get(ENV_LOCK_DIR) or DEFAULT_LOCK_DIR)


def _lock_name(device: str) -> str:
    return "gpu-" + "".join(c if c.isalnum() or c in "-_" else "_" for c in device) + ".lock"


def _try_lock(folder: Path, device: str, record: bool = True) -> int | None:
    """Open and non-blockingly lock ``folder/gpu-<device>.lock``; the fd on success, else None.
    With ``record`` the holder's PID is written into the file (for people looking)."""
    path = folder / _lock_name(device)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
            return None
        raise
    if record:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
    return fd


@dataclass
class GpuClaim:
    """A device held by this process (release it with :meth:`release`, or let the process exit).

    Usable as a context manager.
    """

    device: str | None
    """Claimed device id/UUID (as in the pool); ``None``: no GPU, run on CPU."""
    source: str
    """``"lock"`` (claimed from the pool), ``"scheduler"`` (kept SLURM's binding) or ``"none"``."""
    _fd: int | None = field(default=None, repr=False)

    def release(self) -> None:
        """Drop the lock (idempotent). ``CUDA_VISIBLE_DEVICES`` is left as it is."""
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor releases the flock
            self._fd = None

    def __enter__(self) -> "GpuClaim":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def claim_gpu(pool: list[str] | None = None, lock_folder: str | Path | None = None,
              timeout_s: float | None = None, poll_s: float = 1.0, env: dict | None = None) -> GpuClaim:
    """Claim one free GPU for this process and make it the only visible one.

    Sets ``env["CUDA_VISIBLE_DEVICES"]`` (default ``os.environ``) to the claimed device. Must be
    called before CUDA is initialised in this process (torch reads the variable once).

    Args:
        pool: device ids to choose from (default :func:`gpu_pool`).
        lock_folder: where the lock files live (default :func:`lock_dir`).
        timeout_s: give up after this many seconds when every device stays claimed (None: wait).
        poll_s: seconds between attempts while all devices are claimed.
        env: environment to read and update (default ``os.environ``).
    Returns:
        the :class:`GpuClaim`; ``device`` is None when the pool is empty.
    Raises:
        PipelineError: CUDA is already initialised in this process, or ``timeout_s`` passed.
    """
    env = os.environ if env is None else env
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        raise PipelineError("claim_gpu() called after CUDA was initialised: call it before any torch.cuda use")
    if env.get("SLURM_JOB_ID") and env.get("CUDA_VISIBLE_DEVICES"):
        log.info("GPU: keeping SLURM's binding CUDA_VISIBLE_DEVICES=%s", env["CUDA_VISIBLE_DEVICES"])
        return GpuClaim(env["CUDA_VISIBLE_DEVICES"], "scheduler")
    devices = gpu_pool(env) if pool is None else list(pool)
    if not devices:
        return GpuClaim(None, "none")
    folder = Path(lock_folder) if lock_folder is not None else lock_dir(env)
    folder.mkdir(parents=True, exist_ok=True)
    try:
        os.chmod(folder, 0o1777)  # other users' jobs share the same locks
    except PermissionError:
        pass
    start = time.monotonic()
    # start at a different device per process, so concurrent jobs rarely race for the same lock
    offset = os.getpid() % len(devices)
    order = devices[offset:] + devices[:offset]
    waited_logged = False
    while True:
        for device in order:
            fd = _try_lock(folder, device)
            if fd is not None:
                env["CUDA_VISIBLE_DEVICES"] = device
                log.info("GPU: claimed device %s (lock %s)", device, folder / _lock_name(device))
                return GpuClaim(device, "lock", fd)
        waited = time.monotonic() - start
        if timeout_s is not None and waited >= timeout_s:
            raise PipelineError(f"no free GPU among {','.join(devices)} after {waited:.0f} s (locks in {folder})")
        if not waited_logged:
            log.info("GPU: all of %s are claimed, waiting", ",".join(devices))
            waited_logged = True
        time.sleep(poll_s)


def claimed_devices(devices: list[str], lock_folder: str | Path | None = None) -> dict[str, bool]:
    """Which of ``devices`` another process holds now (device -> True when claimed)."""
    folder = Path(lock_folder) if lock_folder is not None else lock_dir()
    out = {}
    for device in devices:
        if not (folder / _lock_name(device)).exists():
            out[device] = False
            continue
        fd = _try_lock(folder, device, record=False)
        out[device] = fd is None
        if fd is not None:
            os.close(fd)
    return out


def main(argv=None) -> int:
    """``python -m pipeline.common.gpu``: print the GPU pool and which devices are claimed."""
    from pipeline.common.log import setup_logging

    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args(argv)
    setup_logging("gpu")
    devices = gpu_pool()
    if not devices:
        print("GPU pool: empty (no TALKING_NERF_GPUS, CUDA_VISIBLE_DEVICES or nvidia-smi GPUs): jobs run on CPU")
        return 0
    print(f"GPU pool: {','.join(devices)}   locks: {lock_dir()}")
    for device, busy in claimed_devices(devices).items():
        print(f"  {device}: {'claimed' if busy else 'free'}")
    return 0


if __name__ == "__main__":
    from pipeline.common.log import run_main

    sys.exit(run_main(main))
