"""The method registry: one module per method in this package, registered once.

A method module ``pipeline/models/methods/{name}.py`` defines

* a config dataclass (subclass of :class:`pipeline.models.configs.TrainConfig`, one docstring per
  field; profiles and ``train.overrides`` set fields by name),
* its head field (subclass of :class:`pipeline.models.fields.HeadField`; its regulariser and
  :meth:`~pipeline.models.fields.HeadField.ray_loss` are the method's losses beyond the shared
  photometric / lips-LPIPS / torso terms),
* ``SPEC = MethodSpec(...)`` and ``register(SPEC)`` at import: conditions, torso module, the
  papers' step counts of the ``paper`` profile, the values it sets in another profile.

Method names are the module names of this package (found without importing them, so the
Snakefile can refuse an unknown method at start-up without torch); :func:`get_method` imports the
module on first use. A method defined elsewhere (a plug-in, a test) calls :func:`register` itself.
See docs/adding-a-method.md.
"""
from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.common.errors import InputError

__all__ = ["MethodSpec", "register", "unregister", "get_method", "method_names", "check_method"]


@dataclass(frozen=True)
class MethodSpec:
    """Everything the trainer, the data provider and the renderer need to know about a method.

    Attributes:
        name: registered method name (``train.methods``, ``results/models/{method}``).
        config: config dataclass (subclass of ``TrainConfig``) with ``method`` defaulting to ``name``.
        field: head field class, built as ``field(cfg, audio_dim)``.
        torso: torso module class, built as ``torso(cfg)`` (see :mod:`pipeline.models.torso`).
        conditions: names of the per-frame conditions the field consumes, in
            :data:`pipeline.models.conditions.CONDITIONS` (``audio`` first).
        paper_steps: ``head_steps``/``lips_steps``/``torso_steps`` of the ``paper`` profile.
        profile_values: config values this method sets in a named profile, by profile name (for
            example ``{"quick": {"frames_per_step": 4}}``), applied over the profile and under
            ``train.overrides`` (:func:`pipeline.train.profiles.resolve_config`); each one is a
            measured choice of this project, not the paper's, documented where it is declared.
        summary: one line for docs and listings (paper, what it conditions on).
    """

    name: str
    config: type
    field: type
    torso: type
    conditions: tuple[str, ...] = ("audio", "eye")
    paper_steps: dict[str, int] = field(default_factory=dict)
    profile_values: dict[str, dict] = field(default_factory=dict)
    summary: str = ""


_REGISTRY: dict[str, MethodSpec] = {}


def _module_names() -> list[str]:
    return sorted(m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)]) if not m.name.startswith("_"))


def register(spec: MethodSpec) -> MethodSpec:
    """Register ``spec`` under ``spec.name`` (replacing an earlier registration of that name).

    Raises:
        KeyError: a condition of ``spec.conditions`` is not declared, or a profile named in
            ``spec.profile_values`` does not exist (:data:`pipeline.train.profiles.PROFILES`).
    """
    from pipeline.models.conditions import get_condition
    from pipeline.train.profiles import PROFILES

    for c in spec.conditions:
        get_condition(c)          # KeyError for an undeclared condition
    unknown = sorted(set(spec.profile_values) - set(PROFILES))
    if unknown:                   # a misspelt profile would otherwise be ignored without a word
        raise KeyError(f"method {spec.name}: profile_values names unknown profile(s) {unknown} "
                       f"(one of {', '.join(PROFILES)})")
    _REGISTRY[spec.name] = spec
    return spec


def model_conditions(cfg) -> tuple[str, ...]:
    """The per-frame conditions a model of config ``cfg`` consumes: its method's
    (:attr:`MethodSpec.conditions`), plus ``body_pose`` for the torso when
    ``cfg.torso_body_pose`` is on and ``body_flow`` when ``cfg.torso_body_flow`` is on
    (:class:`pipeline.models.configs.TrainConfig`).

    Raises:
        KeyError: ``cfg.method`` is not a registered method.
    """
    conds = tuple(get_method(cfg.method).conditions)
    if getattr(cfg, "torso_body_pose", False) and "body_pose" not in conds:
        conds += ("body_pose",)
    if getattr(cfg, "torso_body_flow", False) and "body_flow" not in conds:
        conds += ("body_flow",)
    return conds


def unregister(name: str) -> None:
    """Remove a registration made with :func:`register` (tests)."""
    _REGISTRY.pop(name, None)


def method_names() -> list[str]:
    """Every method name: the modules of this package plus methods registered at run time."""
    return sorted(set(_module_names()) | set(_REGISTRY))


def check_method(name: str, source: str = "config.yaml") -> str:
    """``name`` if it is a method, else InputError naming ``source`` and the registered names."""
    if name not in method_names():
        raise InputError(source, f"unknown method {name!r} in train.methods (registered: {', '.join(method_names())})")
    return name


def get_method(name: str, source: str = "config.yaml") -> MethodSpec:
    """The :class:`MethodSpec` of ``name`` (imports its module on first use).

    Raises:
        InputError: unknown method (naming ``source``).
    """
    if name not in _REGISTRY:
        check_method(name, source)
        importlib.import_module(f"{__name__}.{name}")
        if name not in _REGISTRY:
            raise InputError(source, f"method module {__name__}.{name} does not register a method {name!r}")
    return _REGISTRY[name]

