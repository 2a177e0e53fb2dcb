"""Make torchvision importable on a CPU-only torch.

The PyPI torchvision wheels are CUDA builds. On a CPU torch their C extension does not load, and
``import torchvision`` then fails in ``torchvision/_meta_registrations.py`` with
"operator torchvision::nms does not exist", because two fake-kernel registrations (``nms`` and
``qnms``) run unconditionally. lpips, pytorch-fid and syncnet-python only use torchvision's
pure-Python model definitions (AlexNet, Inception v3), so declaring those two operator schemas
(without any kernel) is enough. Calling the ops would still fail loudly; nothing here does.

When torchvision imports normally (a matching CUDA or CPU build), nothing is changed.
"""
from __future__ import annotations

import importlib

_DONE = False


def import_torchvision():
    """Import and return :mod:`torchvision`, declaring the missing op schemas first if needed.

    Raises:
        ImportError: torchvision is not installed.
    """
    global _DONE
    import torch

    if not _DONE:
        try:
            _ = torch.ops.torchvision.nms  # present when the C extension is loaded
        except (AttributeError, RuntimeError):
            try:
                importlib.import_module("torchvision.extension")
            except Exception:
                pass
            try:
                _ = torch.ops.torchvision.nms
            except (AttributeError, RuntimeError):
                lib = torch.library.Library("torchvision", "FRAGMENT")
                for op in ("nms", "qnms"):
                    try:
                        getattr(torch.ops.torchvision, op)
                    except (AttributeError, RuntimeError):
                        if op == "nms":
                            lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
                        else:
                            lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
                globals()["_LIB"] = lib  # keep the library object alive
        _DONE = True
    return importlib.import_module("torchvision")
