"""The one-shot runs of a config, and the input / parameter functions of ``workflow/rules/oneshot.smk``.

Kept in Python (not in the ``.smk``) so that the plan is testable without Snakemake.
"""
from __future__ import annotations

import os
import shlex
from dataclasses import dataclass, field

from pipeline.common.config import resolve_path, weights_dir
from pipeline.oneshot import BACKEND_METHODS, BOUND_METHODS, FLIPPED_SUFFIX
from pipeline.oneshot.backends import resolve_backend


@dataclass
class OneshotPlan:
    """Every one-shot run of a (validated) config.

    Attributes:
        references: reference name -> photo path (config ``oneshot.references``).
        drivers: test name -> driving source: ``results/renders/{method}/{identity}/{test}`` for
            the cross-driven renders of ``oneshot.driving_method`` (tests ``oneshot.driving_tests``,
            named ``{method}-{identity}-{test}``), plus ``oneshot.driving`` (videos or folders).
        backend, reason: the backend that runs and why (:func:`resolve_backend`).
        method: its method name (``livenerf`` | ``oneshot_meshwarp``).
        reference_names: references, plus ``{name}-flipped`` when ``oneshot.flipped``.
        runs: ``(method, reference, test)`` of every run, bounds included when ``oneshot.bounds``.
            A ``driving_method`` that is not in ``train.methods`` or ``driving_tests`` that are not
            in ``render.cross_driven`` drive nothing (a config training only rad_nerf still runs).
    """

    config: dict
    identities: list[str]
    references: dict[str, str] = field(init=False)
    drivers: dict[str, str] = field(init=False)

    def __post_init__(self) -> None:
        c = self.config.get("oneshot", {})
        self.c = c
        self.references = dict(c.get("references", {}))
        self.weights = str(weights_dir(self.config))
        self.backend, self.reason = resolve_backend(c.get("backend", "auto"), self.weights)
        self.method = BACKEND_METHODS[self.backend]
        self.drivers = {}
        dm = c.get("driving_method")
        # a driving method that is not trained, or tests that are not rendered, drive nothing (a
        # config that trains only rad_nerf, or has no cross-driven tests, still runs)
        if dm in self.config["train"]["methods"]:
            for identity in self.identities:
                for test in c.get("driving_tests", []):
                    if test in self.config["render"]["cross_driven"]:
                        self.drivers[f"{dm}-{identity}-{test}"] = f"results/renders/{dm}/{identity}/{test}"
        self.drivers.update({n: str(resolve_path(p)) for n, p in c.get("driving", {}).items()})
        self.reference_names = list(self.references) + (
            [f"{r}{FLIPPED_SUFFIX}" for r in self.references] if c.get("flipped", True) else [])
        self.runs = [(self.method, r, t) for r in self.reference_names for t in self.drivers]
        if c.get("bounds", True):
            self.runs += [(b, r, t) for b in BOUND_METHODS for r in self.references for t in self.drivers]

    @property
    def metric_jsons(self) -> list[str]:
        """``results/metrics/one_shot/{method}/{reference}/{test}.json`` of every run."""
        return [f"results/metrics/one_shot/{m}/{r}/{t}.json" for m, r, t in self.runs]

    @property
    def size_arg(self) -> str:
        """``--size N`` (config ``oneshot.size``) or nothing."""
        return f"--size {self.c['size']}" if self.c.get("size") else ""

    @property
    def anchor_arg(self) -> str:
        """``--anchor N`` (config ``oneshot.anchor``) or nothing."""
        return f"--anchor {self.c['anchor']}" if self.c.get("anchor") is not None else ""

    @property
    def sidebyside_videos(self) -> list[str]:
        """``results/report/one_shot/{reference}/{test}.mp4`` per reference (as given) and driver."""
        return [f"results/report/one_shot/{r}/{t}.mp4" for r in self.references for t in self.drivers]

    def sidebyside_manifests(self, wildcards) -> list[str]:
        """The one-shot method's render manifests shown beside the photo and the driver: the photo
        as given, and mirrored when ``oneshot.flipped``."""
        refs = [wildcards.reference] + ([f"{wildcards.reference}{FLIPPED_SUFFIX}"] if self.c.get("flipped", True) else [])
        return [f"results/renders/{self.method}/{r}/{wildcards.test}/manifest.json" for r in refs]

    def identity_frames(self, wildcards) -> list[str]:
        """The dataset ``gt_imgs`` of an identity named like the reference (FID), or none."""
        name = wildcards.reference.removesuffix(FLIPPED_SUFFIX)
        return [f"results/data/{name}/gt_imgs"] if name in self.identities else []

    @staticmethod
    def identity_frames_arg(wildcards, input) -> str:
        """``--identity-frames DIR`` when the reference is also a dataset identity."""
        return f"--identity-frames {shlex.quote(input.identity[0])}" if input.identity else ""

    @staticmethod
    def render_args(wildcards, input) -> str:
        """``--render DIR`` for every input manifest."""
        return " ".join(f"--render {shlex.quote(os.path.dirname(m))}" for m in input.manifests)

    # ---- Snakemake input / params functions (wildcards: method, reference, test)
    def photo(self, wildcards) -> str:
        """The reference photo of a run (the flipped runs read the same file)."""
        return str(resolve_path(self.references[wildcards.reference.removesuffix(FLIPPED_SUFFIX)]))

    def driving_files(self, wildcards) -> list[str]:
        """Input files of a run's driver: a render folder's manifest and video, or the video."""
        src = self.drivers[wildcards.test]
        if src.startswith("results/renders/") or os.path.isdir(src):
            return [f"{src}/manifest.json", f"{src}/video.mp4"]
        return [src]

    def driving_arg(self, wildcards) -> str:
        """The quoted ``--driving`` value: the render folder or the video."""
        return shlex.quote(self.drivers[wildcards.test])

    @staticmethod
    def flip_arg(wildcards) -> str:
        """``--flip`` for a mirrored reference."""
        return "--flip" if wildcards.reference.endswith(FLIPPED_SUFFIX) else ""

    @staticmethod
    def out_dir(wildcards, output) -> str:
        """The render folder a job writes (its output manifest's folder)."""
        return os.path.dirname(output.manifest)

    @staticmethod
    def render_of_input(wildcards, input) -> str:
        """The render folder a metrics job reads (its input manifest's folder)."""
        return os.path.dirname(input.manifest)

    @staticmethod
    def reported_arg(wildcards, input) -> str:
        """``--reported FILE`` when a reported-numbers file is configured."""
        return f"--reported {shlex.quote(input.reported[0])}" if input.reported else ""

    def reported_files(self) -> list[str]:
        """The configured reported-numbers file (config ``report.reported_numbers``) and the
        sources file beside it (:func:`pipeline.report.tables.reported_files`), or none."""
        from pipeline.report.tables import reported_files

        p = self.config.get("report", {}).get("reported_numbers")
        return reported_files(resolve_path(p) if p else None)
