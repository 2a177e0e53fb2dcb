# Metrics: one JSON + per-frame CSV per render (pipeline/metrics/, docs/metrics.md).
# results/metrics/{method}/{identity}/{test}.json and {test}.frames.csv, from the render contract
# folder results/renders/{method}/{identity}/{test}/ and the identity's dataset. Which metrics:
# config metrics.self_driven / metrics.cross_driven. Missing pretrained weights make the metrics
# that need them n/a with the reason (never a stand-in number).

from pipeline.common.config import weights_dir as _weights_dir

METRICS = "results/metrics/{method}/{identity}/{test}"
METRICS_RENDER = "results/renders/{method}/{identity}/{test}"


# Metric JSONs of every rendered (method, identity, test): config train.methods on the
# self-driven and every cross-driven test, plus the runs the baselines registered so far
# (report.smk collects the same list for the tables).
METRICS_TARGETS = [
    f"results/metrics/{m}/{i}/{t}.json"
    for m, i, t in dict.fromkeys(
        [
            (m, i, t)
            for m in config["train"]["methods"]
            for i in IDENTITIES
            for t in [SELF_DRIVEN_TEST, *config["render"]["cross_driven"]]
        ]
        + [tuple(r) for r in BASELINE_RUNS]
    )
]


rule metrics:
    input:
        render=f"{METRICS_RENDER}/manifest.json",
        video=f"{METRICS_RENDER}/video.mp4",
        data=f"{DATA}/manifest.json",
        # the training manifest (training time) of trained methods; baselines have none
        model=trained_model_manifest,
        # the pretrained files these metrics use (only those present; see metric_weight_files)
        weights=metric_weight_files,
    output:
        json=f"{METRICS}.json",
        frames=f"{METRICS}.frames.csv",
    wildcard_constraints:
        method="[A-Za-z0-9_-]+",
        test="[A-Za-z0-9_-]+",
    params:
        cfg=metrics_cfg,
        weights=str(_weights_dir(config)),
        openface=(
            f"--openface-bin {shlex.quote(str(resolve_path(config['preprocess']['aus']['openface_bin'])))}"
            if config["preprocess"]["aus"].get("openface_bin")
            else ""
        ),
        render=input_dir("render"),
        data=input_dir("data"),
        model=model_dir_arg,
    conda:
        "../../envs/metrics.yaml"
    log:
        f"{LOGS}/metrics/{{method}}/{{identity}}/{{test}}.log",
    benchmark:
        f"{BENCH}/metrics/{{method}}/{{identity}}/{{test}}.tsv"
    # one core: the per-frame metrics hardly gain from a second thread (33.5 s wall on one, 36.1 on
    # two, the default job's 105-frame cross-driven render at 128 px; same outputs), and with two
    # no other job could start beside it on a 2-core machine (docs/performance.md)
    threads: 1
    resources:
        mem_mb=6000,
        runtime=60,
    shell:
        "python -m pipeline.metrics --render {params.render:q} --data {params.data:q} {params.model}"
        " --out {output.json:q} --out-frames {output.frames:q} --cfg {params.cfg}"
        " --weights-dir {params.weights:q} {params.openface} --threads {threads} > {log:q} 2>&1"


ALL_TARGETS.extend(METRICS_TARGETS)


# SFM expression distance of the emotion_edit renders (methods in render.emotion_edit;
# pipeline/metrics/emotion_expr.py): n/a with the reason when the SFM files are not in the weights folder
rule metrics_emotion_expr:
    input:
        edit="results/renders/{method}/{identity}/emotion_edit",
        data=f"{DATA}/manifest.json",
        weights=stage_weight_files("metrics.emotion_expr"),  # the Surrey Face Model files, when present
    output:
        json="results/metrics/{method}/{identity}/emotion_edit/sfm_expression.json",
    wildcard_constraints:
        method=_alternation(EMOTION_EDIT_METHODS),
    params:
        weights=str(_weights_dir(config)),
        data=input_dir("data"),
    conda:
        "../../envs/metrics.yaml"
    log:
        f"{LOGS}/metrics_emotion_expr/{{method}}/{{identity}}.log",
    benchmark:
        f"{BENCH}/metrics_emotion_expr/{{method}}/{{identity}}.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    shell:
        "python -m pipeline.metrics.emotion_expr --edit {input.edit:q} --data {params.data:q}"
        " --weights-dir {params.weights:q} --out {output.json:q} > {log:q} 2>&1"


ALL_TARGETS.extend(
    expand("results/metrics/{method}/{identity}/emotion_edit/sfm_expression.json", method=EMOTION_EDIT_METHODS,
           identity=IDENTITIES)
)
