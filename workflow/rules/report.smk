# Comparison tables, plots and the HTML report (pipeline/report/). Inputs: every metric JSON of
# the trained methods (config train.methods) and of the baselines (workflow/rules/baselines/*.smk
# register their (method, identity, test) runs in BASELINE_RUNS).

from pipeline.report.presets import get_preset

# an unknown report.preset stops the workflow at start-up (InputError naming the known presets)
get_preset(config["report"]["preset"])

REPORT_TABLES = "results/tables"
REPORT_DIR = "results/report"
REPORT_TESTS = [SELF_DRIVEN_TEST, *config["render"]["cross_driven"]]


# (method, identity, test) of every compared run: trained methods on every test, then the
# baselines' runs (the baselines' .smk files are included before this file).
REPORT_RUNS = list(
    dict.fromkeys(
        [(m, i, t) for m in config["train"]["methods"] for i in IDENTITIES for t in REPORT_TESTS]
        + [tuple(r) for r in BASELINE_RUNS]
    )
)
# row order of the tables: trained methods, then baselines
REPORT_METHODS = " ".join(dict.fromkeys(m for m, _, _ in REPORT_RUNS))
METRIC_JSONS = [f"results/metrics/{m}/{i}/{t}.json" for m, i, t in REPORT_RUNS]
RENDER_VIDEOS = [f"results/renders/{m}/{i}/{t}/video.mp4" for m, i, t in REPORT_RUNS]


rule aggregate:
    input:
        metrics=METRIC_JSONS,
    output:
        csv=f"{REPORT_TABLES}/metrics_long.csv",
        parquet=f"{REPORT_TABLES}/metrics_long.parquet",
    conda:
        "../../envs/report.yaml"
    log:
        f"{LOGS}/report/aggregate.log",
    benchmark:
        f"{BENCH}/report/aggregate.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "python -m pipeline.report.aggregate --metrics {input.metrics:q} --out-csv {output.csv:q}"
        " --out-parquet {output.parquet:q} > {log:q} 2>&1"


rule tables:
    input:
        long=rules.aggregate.output.parquet,
        reported=reported_inputs,
    output:
        **{
            f"{protocol}_{ext}": f"{REPORT_TABLES}/{protocol}.{ext}"
            for protocol in ("self_driven", "cross_driven")
            for ext in ("md", "csv", "tex")
        },
        self_per_identity=f"{REPORT_TABLES}/self_driven_per_identity.csv",
        cross_per_identity=f"{REPORT_TABLES}/cross_driven_per_identity.csv",
        json=f"{REPORT_TABLES}/tables.json",
    params:
        cfg=cfg_arg("report"),
        methods=REPORT_METHODS,
        reported=reported_arg,
        out=output_dir("json"),
    conda:
        "../../envs/report.yaml"
    log:
        f"{LOGS}/report/tables.log",
    benchmark:
        f"{BENCH}/report/tables.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "python -m pipeline.report.tables --long {input.long:q} {params.reported} --cfg {params.cfg}"
        " --methods {params.methods} --out-dir {params.out:q} > {log:q} 2>&1"


rule plots:
    input:
        long=rules.aggregate.output.parquet,
        metrics=METRIC_JSONS,
    output:
        plots=directory(f"{REPORT_DIR}/plots"),
    params:
        methods=REPORT_METHODS,
    conda:
        "../../envs/report.yaml"
    log:
        f"{LOGS}/report/plots.log",
    benchmark:
        f"{BENCH}/report/plots.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "python -m pipeline.report.plots --long {input.long:q} --methods {params.methods}"
        " --out-dir {output.plots:q} > {log:q} 2>&1"


rule report:
    input:
        tables=rules.tables.output.json,
        plots=rules.plots.output.plots,
        videos=RENDER_VIDEOS,
        data=expand(f"{DATA}/gt_imgs", identity=IDENTITIES),
        val=expand(f"{DATA}/transforms_val.json", identity=IDENTITIES),
        audio=expand(f"{DATA}/aud.wav", identity=IDENTITIES),
        driving=[str(resolve_path(p)) for p in config["render"]["cross_driven"].values()],
        edits=expand("results/renders/{method}/{identity}/emotion_edit", method=EMOTION_EDIT_METHODS,
                     identity=IDENTITIES),
        oneshot_table=["results/tables/one_shot.md"] if ONESHOT_PLAN.runs else [],
        oneshot_videos=ONESHOT_PLAN.sidebyside_videos if ONESHOT_PLAN.runs else [],
        val_frames=expand(rules.train_torso.output.val_frame, method=TRAIN_METHODS, identity=IDENTITIES),
        free_view_table=["results/tables/free_view.md"] if FREEVIEW_METHODS else [],
        quality_doc=(
            [str(resolve_path(config["report"]["quality_doc"]))] if config["report"].get("quality_doc") else []
        ),
    output:
        html=f"{REPORT_DIR}/index.html",
        media=directory(f"{REPORT_DIR}/media"),
    params:
        data=input_dirs("data"),
        audio=" ".join(
            shlex.quote(f"{test}={resolve_path(path)}") for test, path in config["render"]["cross_driven"].items()
        ),
        methods=REPORT_METHODS,
    conda:
        "../../envs/report.yaml"
    log:
        f"{LOGS}/report/report.log",
    benchmark:
        f"{BENCH}/report/report.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=20,
    shell:
        "python -m pipeline.report.html --tables {input.tables:q} --plots {input.plots:q}"
        " --videos {input.videos:q} --data {params.data:q} --audio {params.audio}"
        " --methods {params.methods} --edits {input.edits:q} --one-shot-table {input.oneshot_table:q}"
        " --one-shot-videos {input.oneshot_videos:q} --val-frames {input.val_frames:q}"
        " --free-view-table {input.free_view_table:q} --quality-doc {input.quality_doc:q}"
        " --media {output.media:q} --out {output.html:q} > {log:q} 2>&1"


ALL_TARGETS.extend(
    [
        f"{REPORT_TABLES}/{protocol}.{ext}"
        for protocol in ("self_driven", "cross_driven")
        for ext in ("md", "csv", "tex")
    ]
    + [f"{REPORT_TABLES}/metrics_long.csv", f"{REPORT_TABLES}/metrics_long.parquet", f"{REPORT_DIR}/index.html"]
)
