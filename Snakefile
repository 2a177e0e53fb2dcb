# talking-nerf-pipeline: raw talking-portrait videos -> ER-NeRF datasets -> audio-driven NeRFs ->
# self-/cross-driven renders -> metrics -> comparison tables and an HTML report.
# Run: snakemake --cores 2      (see README.md)
from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/preprocess.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/render.smk"
# baselines before the metrics and report rules: they register their runs in BASELINE_RUNS
include: "workflow/rules/baselines/static_frame.smk"
include: "workflow/rules/baselines/external.smk"
include: "workflow/rules/oneshot.smk"
include: "workflow/rules/metrics.smk"
include: "workflow/rules/freeview.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        ALL_TARGETS,
    default_target: True
