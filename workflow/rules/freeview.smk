# Free-view protocol (config render.free_view; pipeline/render/freeview.py, pipeline/metrics/freeview.py):
# every trained method's self-driven test rendered from the frontal camera and from yaw / pitch
# offsets about the head centre (results/renders/{method}/{identity}/freeview/{view}/, protocol
# free_view), scored without ground truth: CSIM against the frontal render and CPBD per view
# (results/metrics/{method}/{identity}/free_view/summary.json), one table results/tables/free_view.md.

FREEVIEW_METHODS = list(config["train"]["methods"]) if config["render"]["free_view"]["enabled"] else []
FREEVIEW_METRICS = "results/metrics/{method}/{identity}/free_view/summary.json"
# baselines (2D renders, no 3D model): listed in the table as n/a with the reason
FREEVIEW_NA = {
    m: "no free-view render: a 2D baseline or an external video has no 3D model to render from another camera"
    for m in sorted({run[0] for run in BASELINE_RUNS} - set(FREEVIEW_METHODS))
}


rule render_freeview:
    input:
        model="results/models/{method}/{identity}/train_manifest.json",
        data=f"{DATA}/manifest.json",
    output:
        index="results/renders/{method}/{identity}/freeview/manifest.json",
    wildcard_constraints:
        method=_alternation(FREEVIEW_METHODS),
    params:
        cfg=cfg_arg("render", "free_view", drop=("enabled",)),
        device=config["train"]["device"],
        model=input_dir("model"),
        data=input_dir("data"),
        out=output_dir("index"),
    conda:
        "../../envs/nerf.yaml"
    log:
        f"{LOGS}/render_freeview/{{method}}/{{identity}}.log",
    benchmark:
        f"{BENCH}/render_freeview/{{method}}/{{identity}}.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=120,
        gpu=1 if config["train"]["profile"] == "paper" else 0,
    shell:
        "python -m pipeline.render.freeview --model {params.model:q} --data {params.data:q}"
        " --method {wildcards.method} --identity {wildcards.identity} --out {params.out:q} --cfg {params.cfg}"
        " --device {params.device} --threads {threads} > {log:q} 2>&1"


rule freeview_metrics:
    input:
        index="results/renders/{method}/{identity}/freeview/manifest.json",
        weights=stage_weight_files("metrics.csim"),  # ArcFace and FAN, when present
    output:
        json=FREEVIEW_METRICS,
    wildcard_constraints:
        method=_alternation(FREEVIEW_METHODS),
    params:
        renders=input_dir("index"),
        weights=str(_weights_dir(config)),
    conda:
        "../../envs/metrics.yaml"
    log:
        f"{LOGS}/freeview_metrics/{{method}}/{{identity}}.log",
    benchmark:
        f"{BENCH}/freeview_metrics/{{method}}/{{identity}}.tsv"
    threads: 1
    resources:
        mem_mb=3000,
        runtime=30,
    shell:
        "python -m pipeline.metrics.freeview metrics --renders {params.renders:q} --out {output.json:q}"
        " --weights-dir {params.weights:q} > {log:q} 2>&1"


rule freeview_table:
    input:
        metrics=expand(FREEVIEW_METRICS, method=FREEVIEW_METHODS, identity=IDENTITIES),
    output:
        md="results/tables/free_view.md",
        csv="results/tables/free_view.csv",
    params:
        na=shlex.quote(json.dumps(FREEVIEW_NA, sort_keys=True)),
    conda:
        "../../envs/metrics.yaml"
    log:
        f"{LOGS}/freeview_table/all.log",
    benchmark:
        f"{BENCH}/freeview_table/all.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    shell:
        "python -m pipeline.metrics.freeview table --out-md {output.md:q} --out-csv {output.csv:q}"
        " --not-rendered {params.na} {input.metrics:q}"
        " > {log:q} 2>&1"


if FREEVIEW_METHODS:
    ALL_TARGETS.append("results/tables/free_view.md")
