# One-shot face replacement (LiveNeRF path, pipeline/oneshot/, docs/oneshot.md): every reference
# photo of config oneshot.references is driven by the cross-driven renders of
# oneshot.driving_method (tests oneshot.driving_tests, named {method}-{identity}-{test}) and by the
# videos of oneshot.driving; also on the mirrored photo ({reference}-flipped, NeRFFaceSpeech's
# internal differences) and with the bounds still_photo / driving_video beside it.
# Outputs: results/renders/{method}/{reference}/{test}/ (render contract, protocol one_shot),
# results/metrics/one_shot/{method}/{reference}/{test}.json, results/tables/one_shot.{md,csv},
# side-by-side videos results/report/one_shot/{reference}/{test}.mp4 (photo | driving | output).
# The runs and the input functions: pipeline/oneshot/workflow.py (OneshotPlan).

from pipeline.oneshot import BOUND_METHODS
from pipeline.oneshot.workflow import OneshotPlan

ONESHOT_PLAN = OneshotPlan(config, list(IDENTITIES))
ONESHOT_RENDER = "results/renders/{method}/{reference}/{test}"

if ONESHOT_PLAN.runs:

    rule oneshot:
        input:
            photo=ONESHOT_PLAN.photo,
            driving=ONESHOT_PLAN.driving_files,
        output:
            manifest=f"{ONESHOT_RENDER}/manifest.json",
            video=f"{ONESHOT_RENDER}/video.mp4",
        wildcard_constraints:
            method=ONESHOT_PLAN.method,
            reference=_alternation(ONESHOT_PLAN.reference_names),
            test=_alternation(ONESHOT_PLAN.drivers),
        params:
            backend=config["oneshot"]["backend"],
            weights=ONESHOT_PLAN.weights,
            driving=ONESHOT_PLAN.driving_arg,
            flip=ONESHOT_PLAN.flip_arg,
            size=ONESHOT_PLAN.size_arg,
            anchor=ONESHOT_PLAN.anchor_arg,
            out=ONESHOT_PLAN.out_dir,
        # MediaPipe, scikit-image, OpenCV and torch (the PyPI build: CUDA on Linux, for liveportrait)
        conda:
            "../../envs/preprocess.yaml"
        log:
            f"{LOGS}/oneshot/{{method}}/{{reference}}/{{test}}.log",
        benchmark:
            f"{BENCH}/oneshot/{{method}}/{{reference}}/{{test}}.tsv"
        threads: 1
        resources:
            mem_mb=3000,
            runtime=30,
        shell:
            "python -m pipeline.oneshot --reference {wildcards.reference} --photo {input.photo:q}"
            " --driving {params.driving} --test {wildcards.test} --backend {params.backend}"
            " --method {wildcards.method} --weights-dir {params.weights:q} {params.size} {params.anchor}"
            " {params.flip} --threads {threads} --out {params.out:q} > {log:q} 2>&1"

    rule oneshot_bound:
        input:
            photo=ONESHOT_PLAN.photo,
            driving=ONESHOT_PLAN.driving_files,
        output:
            manifest=f"{ONESHOT_RENDER}/manifest.json",
            video=f"{ONESHOT_RENDER}/video.mp4",
        wildcard_constraints:
            method=_alternation(BOUND_METHODS),
            reference=_alternation(ONESHOT_PLAN.references),
            test=_alternation(ONESHOT_PLAN.drivers),
        params:
            driving=ONESHOT_PLAN.driving_arg,
            size=ONESHOT_PLAN.size_arg,
            out=ONESHOT_PLAN.out_dir,
        conda:
            "../../envs/report.yaml"
        log:
            f"{LOGS}/oneshot_bound/{{method}}/{{reference}}/{{test}}.log",
        benchmark:
            f"{BENCH}/oneshot_bound/{{method}}/{{reference}}/{{test}}.tsv"
        threads: 1
        resources:
            mem_mb=2000,
            runtime=15,
        shell:
            "python -m pipeline.oneshot.bounds --kind {wildcards.method} --reference {wildcards.reference}"
            " --photo {input.photo:q} --driving {params.driving} --test {wildcards.test} {params.size}"
            " --out {params.out:q} > {log:q} 2>&1"

    rule oneshot_metrics:
        input:
            manifest=f"{ONESHOT_RENDER}/manifest.json",
            video=f"{ONESHOT_RENDER}/video.mp4",
            photo=ONESHOT_PLAN.photo,
            driving=ONESHOT_PLAN.driving_files,
            identity=ONESHOT_PLAN.identity_frames,
        output:
            json="results/metrics/one_shot/{method}/{reference}/{test}.json",
            frames="results/metrics/one_shot/{method}/{reference}/{test}.frames.csv",
        wildcard_constraints:
            method=_alternation([ONESHOT_PLAN.method, *BOUND_METHODS]),
            reference=_alternation(ONESHOT_PLAN.reference_names),
            test=_alternation(ONESHOT_PLAN.drivers),
        params:
            weights=ONESHOT_PLAN.weights,
            render=ONESHOT_PLAN.render_of_input,
            stride=config["oneshot"]["metric_stride"],
            identity=ONESHOT_PLAN.identity_frames_arg,
        conda:
            "../../envs/metrics.yaml"
        log:
            f"{LOGS}/oneshot_metrics/{{method}}/{{reference}}/{{test}}.log",
        benchmark:
            f"{BENCH}/oneshot_metrics/{{method}}/{{reference}}/{{test}}.tsv"
        threads: 1
        resources:
            mem_mb=3000,
            runtime=30,
        shell:
            "python -m pipeline.oneshot.metrics --render {params.render:q}"
            " --out {output.json:q} --out-frames {output.frames:q} --weights-dir {params.weights:q}"
            " --stride {params.stride} {params.identity}"
            " --threads {threads} > {log:q} 2>&1"

    rule oneshot_tables:
        input:
            metrics=ONESHOT_PLAN.metric_jsons,
            reported=ONESHOT_PLAN.reported_files(),
        output:
            md="results/tables/one_shot.md",
            csv="results/tables/one_shot.csv",
            internal="results/tables/one_shot_internal_differences.csv",
            tex="results/tables/one_shot.tex",
        params:
            reported=ONESHOT_PLAN.reported_arg,
            methods=" ".join(dict.fromkeys(m for m, _, _ in ONESHOT_PLAN.runs)),
        conda:
            "../../envs/report.yaml"
        log:
            f"{LOGS}/oneshot_tables.log",
        benchmark:
            f"{BENCH}/oneshot_tables.tsv"
        threads: 1
        resources:
            mem_mb=2000,
            runtime=10,
        shell:
            "python -m pipeline.oneshot.table --metrics {input.metrics:q} {params.reported}"
            " --methods {params.methods} --out-md {output.md:q} --out-csv {output.csv:q}"
            " --out-internal {output.internal:q} --out-tex {output.tex:q} > {log:q} 2>&1"

    rule oneshot_sidebyside:
        input:
            manifests=ONESHOT_PLAN.sidebyside_manifests,
        output:
            video="results/report/one_shot/{reference}/{test}.mp4",
        wildcard_constraints:
            reference=_alternation(ONESHOT_PLAN.references),
            test=_alternation(ONESHOT_PLAN.drivers),
        params:
            renders=ONESHOT_PLAN.render_args,
        conda:
            "../../envs/report.yaml"
        log:
            f"{LOGS}/oneshot_sidebyside/{{reference}}/{{test}}.log",
        benchmark:
            f"{BENCH}/oneshot_sidebyside/{{reference}}/{{test}}.tsv"
        threads: 1
        resources:
            mem_mb=2000,
            runtime=10,
        shell:
            "python -m pipeline.oneshot.sidebyside {params.renders} --out {output.video:q} > {log:q} 2>&1"

    ALL_TARGETS.extend(ONESHOT_PLAN.metric_jsons)
    ALL_TARGETS.extend(ONESHOT_PLAN.sidebyside_videos)
    ALL_TARGETS.append("results/tables/one_shot.md")
