"""Table columns: the metric registry and the paper-table presets (config ``report.preset``).

A preset chooses the columns of the self-driven and the cross-driven table and which published
tables of ``resources/reported_numbers.csv`` are shown under the measured rows. Column sets follow
the seed papers' tables:

- ``livenerf_table2``: LiveNeRF (Vu et al., arXiv 2511.07552) Table II (self-driven: PSNR, LPIPS,
  FID, LMD, AUE, Sync, training time, FPS) with Table III as the cross-driven table (LMD and Sync
  per test set).
- ``rad_nerf``: RAD-NeRF (Tang et al., arXiv 2211.12368) self-driven comparison (PSNR, LPIPS, LMD,
  FID, AUE, Sync, training time, FPS).
- ``er_nerf``: ER-NeRF (Li et al., ICCV 2023, arXiv 2307.09323) Table 1 (head reconstruction, i.e.
  self-driven: PSNR, LPIPS, FID, LMD, AUE, Sync, training time, FPS) and Table 2 (lip
  synchronization, i.e. cross-driven: LMD and Sync per test set).
- ``aed_nerf``: AED-NeRF (Lu et al., ZTE Communications 24(1), 2026) Tables 1/2 (PSNR, LPIPS, LMD,
  Sync-C, Sync-D, training time/h, inference fps).
- ``nerf3dtalker_table1``: NeRF-3DTalker (Liu et al., ICASSP 2025, arXiv 2502.14178) Table I (SSIM,
  LPIPS, AU accuracy, LMD-79, SyncNet confidence per test group), with its ablation Tables II/III.
- ``nerffacespeech_table1``: NeRFFaceSpeech (Kim et al., arXiv 2405.05749) Table 1 (FID, CSIM, CPBD,
  LSE-D, LSE-C per data set; one-shot), with its ablation Table 5.
- ``nerffacespeech_table2``: NeRFFaceSpeech Table 2 (the same columns, input vs flipped pose).
- ``one_shot``: the one-shot face-replacement table (:mod:`pipeline.oneshot.table`): identity
  (CSIM vs the reference photo), sharpness, lip sync, motion fidelity vs the driving video
  (expression and pose error, mouth-opening correlation), FPS of the one-shot stage and of the
  audio -> NeRF -> photo chain; reported rows of LiveNeRF Tables II/III and NeRFFaceSpeech
  (Kim et al., arXiv 2405.05749) Tables 1/2.
- ``all``: every metric this pipeline measures.

"Sync" in the papers is the SyncNet confidence (LSE-C, Sync-C); "Sync-D" is LSE-D.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from pipeline.common.errors import InputError


def short_backend(backend: str) -> str:
    """Short name of a metric JSON's backend: the text before its first ``" ("`` or ``";"``
    (``"dlib-68 (face_recognition_models ...); FAN unavailable"`` -> ``"dlib-68"``)."""
    return backend.split(";")[0].split(" (")[0].strip()


def compared_against(backend: str) -> str:
    """What a metric compared each frame with, from a metric JSON's backend: the text of its
    ``"; reference: X"`` or ``"; vs X"`` part, without a trailing parenthesis. CSIM of the self- and
    cross-driven protocols (``pipeline.metrics.compute``): ``"mean embedding of 16 training
    frames"``; one-shot CSIM / FID (``pipeline.oneshot.metrics``): ``"the reference photo"``,
    ``"16 frames of results/data/May/gt_imgs"``. ``""`` when the backend names none (the metric compares with the
    ground-truth frames)."""
    for part in backend.split(";")[1:]:
        part = part.strip()
        for prefix in ("reference: ", "vs "):
            if part.startswith(prefix):
                return re.sub(r"\s*\([^()]*\)$", "", part[len(prefix):]).strip()
    return ""


@dataclass(frozen=True)
class Column:
    """One table column.

    Attributes:
        key: column id, used as the CSV header and in ``reported_numbers.csv``'s ``metric`` column.
        label: printed header (without the arrow).
        higher_is_better: direction of "best" (True: higher is better, shown with an up arrow).
        metric: name of the metric in the metric JSONs / tidy table that fills the column (None:
            this pipeline does not measure it; measured rows show n/a).
        scale: factor applied to the measured value (e.g. 1/3600 for seconds -> hours).
        digits: decimals printed.
        unmeasured_reason: the n/a footnote for columns with ``metric`` None.
        reference: the backend the papers measure this column with (``FAN``, ``OpenFace``,
            ``ArcFace``); a measured cell whose backend does not name it is marked (footnote and
            header variant). Empty: any backend is the reference.
        unit: unit shown in the header of measured tables (``px @512``: pixels at the 512 px
            reference resolution), empty for unitless metrics.
        measured_note: footnote on every measured cell when the pipeline's metric differs from the
            paper's column by definition (e.g. LMD-79), empty otherwise.
    """

    key: str
    label: str
    higher_is_better: bool
    metric: str | None
    scale: float = 1.0
    digits: int = 3
    unmeasured_reason: str = ""
    reference: str = ""
    measured_note: str = ""
    unit: str = ""

    def off_reference(self, backend: str | None) -> bool:
        """True when ``backend`` (a metric JSON's backend string) is not this column's reference
        backend: the reference's name (case-insensitive) is not in the backend's name, the text
        before its first ``" ("`` or ``";"`` (so ``"dlib-68 (...); FAN unavailable"`` is off
        FAN). False without a reference or a backend."""
        if not (self.reference and backend):
            return False
        return self.reference.lower() not in short_backend(backend).lower()

    @property
    def arrow(self) -> str:
        """Unicode arrow: ↑ higher is better, ↓ lower is better."""
        return "↑" if self.higher_is_better else "↓"


#: LMD unit: pixels rescaled to a 512 px frame height (pipeline.metrics.landmarks.REFERENCE_HEIGHT)
LMD_UNIT = "px @512"

#: every column any preset uses, by key
COLUMNS: dict[str, Column] = {c.key: c for c in [
    Column("psnr", "PSNR", True, "psnr", digits=2),
    Column("ssim", "SSIM", True, "ssim", digits=3),
    Column("lpips", "LPIPS", False, "lpips", digits=4),
    Column("fid", "FID", False, "fid", digits=2),
    Column("lmd", "LMD", False, "lmd", digits=3, reference="FAN", unit=LMD_UNIT),
    Column("lmd_face", "LMD (face)", False, "lmd_face", digits=3, reference="FAN", unit=LMD_UNIT),
    Column("lmd79", "LMD-79", False, "lmd_lips", digits=3, unit=LMD_UNIT,
           measured_note="measured here: lip landmark distance over the 40 MediaPipe FACEMESH_LIPS points, px at "
                         "512 (NeRF-3DTalker's LMD-79 uses 79 lip landmarks whose detector and point set its text "
                         "does not give, so they cannot be reproduced; not comparable)"),
    Column("aue", "AUE", False, "aue", digits=3, reference="OpenFace"),
    Column("aue_lower", "AUE-L", False, "aue_lower", digits=3, reference="OpenFace"),
    Column("aue_upper", "AUE-U", False, "aue_upper", digits=3, reference="OpenFace"),
    Column("lse_c", "Sync-C (LSE-C)", True, "lse_c", digits=3),
    Column("lse_d", "Sync-D (LSE-D)", False, "lse_d", digits=3),
    Column("csim", "CSIM", True, "csim", digits=3, reference="ArcFace"),
    Column("cpbd", "CPBD", True, "cpbd", digits=3),
    Column("au_acc", "AU acc.", True, "au_acc", scale=100, digits=1, unit="%",
           measured_note="measured here: presence agreement (AU_r >= 1) per frame and AU over AU10, AU14, AU20, "
                         "AU25, AU26; detector: the AUE extractor of this run (OpenFace 2 when "
                         "preprocess.aus.openface_bin is set, else pyfaceau when installed, else the AU estimate "
                         "from MediaPipe blendshapes; the metric JSON's backend names it). NeRF-3DTalker does not "
                         "name its detector"),
    Column("training_time_h", "Training time (h)", False, "training_time_s", scale=1 / 3600, digits=2),
    Column("fps", "FPS", True, "fps", digits=1),
    # one-shot protocol (pipeline/oneshot/metrics.py)
    Column("expr_l1", "Expression error (blendshape L1)", False, "expr_l1", digits=4),
    Column("pose_err_deg", "Pose error (deg)", False, "pose_err_deg", digits=2),
    Column("mouth_corr", "Mouth-opening corr.", True, "mouth_corr", digits=3),
    Column("fps_chain", "FPS audio->NeRF->photo", True, "fps_chain", digits=2),
]}


@dataclass(frozen=True)
class Preset:
    """A column preset.

    Attributes:
        name: config value of ``report.preset``.
        title: human title (shown above the tables).
        self_driven: column keys of the self-driven table.
        cross_driven: column keys of the cross-driven table (repeated for every test).
        reported: ``(source, table)`` pairs of ``reported_numbers.csv`` shown as reported rows,
            keyed by protocol (``self_driven`` / ``cross_driven`` / ``one_shot``).
        one_shot: column keys of the one-shot table (``results/tables/one_shot.md``,
            :mod:`pipeline.oneshot.table`); empty: :data:`ONE_SHOT_COLUMNS`.
    """

    name: str
    title: str
    self_driven: tuple[str, ...]
    cross_driven: tuple[str, ...]
    reported: dict[str, tuple[tuple[str, str], ...]] = field(default_factory=dict)
    one_shot: tuple[str, ...] = ()


ER_NERF = "ER-NeRF (Li et al., ICCV 2023, arXiv 2307.09323)"
LIVENERF = "LiveNeRF (Vu et al., arXiv 2511.07552)"
RAD_NERF = "RAD-NeRF (Tang et al., arXiv 2211.12368)"
AED_NERF = "AED-NeRF (Lu et al., ZTE Communications 24(1):72-80, 2026)"
NERF3DTALKER = "NeRF-3DTalker (Liu et al., ICASSP 2025, arXiv 2502.14178)"
NERFFACESPEECH = "NeRFFaceSpeech (Kim et al., arXiv 2405.05749)"

#: columns of the one-shot table (protocol ``one_shot``)
ONE_SHOT_COLUMNS = ("csim", "cpbd", "lse_c", "lse_d", "fid", "expr_l1", "pose_err_deg", "mouth_corr", "fps",
                    "fps_chain")

PRESETS: dict[str, Preset] = {p.name: p for p in [
    Preset("livenerf_table2", "LiveNeRF Table II (self-driven) / Table III (cross-driven)",
           ("psnr", "lpips", "fid", "lmd", "aue", "lse_c", "training_time_h", "fps"),
           ("lmd", "lse_c"),
           {"self_driven": ((LIVENERF, "Table II"), (ER_NERF, "Table 1"), (AED_NERF, "Table 1")),
            "cross_driven": ((LIVENERF, "Table III"), (ER_NERF, "Table 2"))}),
    Preset("rad_nerf", "RAD-NeRF self-driven comparison",
           ("psnr", "lpips", "lmd", "fid", "aue", "lse_c", "training_time_h", "fps"),
           ("lse_c", "lse_d"),
           {"self_driven": ((RAD_NERF, "Table 1"), (ER_NERF, "Table 1"))}),
    Preset("er_nerf", "ER-NeRF Table 1 (head reconstruction, self-driven) / Table 2 (lip synchronization)",
           ("psnr", "lpips", "fid", "lmd", "aue", "lse_c", "training_time_h", "fps"),
           ("lmd", "lse_c"),
           {"self_driven": ((ER_NERF, "Table 1"),), "cross_driven": ((ER_NERF, "Table 2"),)}),
    Preset("aed_nerf", "AED-NeRF Table 1 (self-driven) / Table 2",
           ("psnr", "lpips", "lmd", "lse_c", "lse_d", "training_time_h", "fps"),
           ("lse_c", "lse_d"),
           {"self_driven": ((AED_NERF, "Table 1"),), "cross_driven": ((AED_NERF, "Table 2"),)}),
    Preset("nerf3dtalker_table1", "NeRF-3DTalker Table I (with its ablation Tables II/III)",
           ("ssim", "lpips", "au_acc", "lmd79", "lse_c"),
           ("lse_c", "lse_d"),
           {"self_driven": ((NERF3DTALKER, "Table I"), (NERF3DTALKER, "Table II"), (NERF3DTALKER, "Table III"))}),
    Preset("nerffacespeech_table1", "NeRFFaceSpeech Table 1 (with its ablation Table 5)",
           ("fid", "csim", "cpbd", "lse_d", "lse_c"),
           ("fid", "csim", "cpbd", "lse_d", "lse_c"),
           {"self_driven": ((NERFFACESPEECH, "Table 1"), (NERFFACESPEECH, "Table 5"))}),
    Preset("nerffacespeech_table2", "NeRFFaceSpeech Table 2 (internal differences under pose conditions)",
           ("fid", "csim", "cpbd", "lse_d", "lse_c"),
           ("fid", "csim", "cpbd", "lse_d", "lse_c"),
           {"self_driven": ((NERFFACESPEECH, "Table 2"),)}),
    Preset("one_shot", "One-shot face replacement (LiveNeRF Tables II/III, NeRFFaceSpeech Tables 1/2)",
           ("psnr", "lpips", "fid", "lmd", "lse_c", "csim", "cpbd", "fps"),
           ("lse_c", "lse_d", "csim", "cpbd"),
           {"one_shot": ((LIVENERF, "Table II"), (LIVENERF, "Table III"), (NERFFACESPEECH, "Table 1"),
                         (NERFFACESPEECH, "Table 2"))},
           ONE_SHOT_COLUMNS),
    Preset("all", "All measured metrics",
           ("psnr", "ssim", "lpips", "fid", "lmd", "lmd_face", "aue", "aue_lower", "aue_upper",
            "lse_c", "lse_d", "csim", "cpbd", "training_time_h", "fps"),
           ("lse_c", "lse_d", "csim", "cpbd"),
           {"self_driven": ((ER_NERF, "Table 1"), (AED_NERF, "Table 1"))}),
]}


def get_preset(name: str) -> Preset:
    """The preset called ``name``.

    Raises:
        InputError: unknown preset (naming config.yaml's ``report.preset`` and the known names).
    """
    try:
        return PRESETS[name]
    except KeyError:
        raise InputError("config.yaml", f"report.preset {name!r} is not one of {sorted(PRESETS)}") from None
