# Audio-driven NeRFs (RAD-NeRF, ER-NeRF) per identity and method: head -> lips fine-tuning -> torso.
# Each rule is one `python -m pipeline.train` call; outputs under results/models/{method}/{identity}/
# (pipeline.common.layout.model_dir). Profiles: config train.profile (quick | paper | smoke).
from pipeline.models.configs import check_method

# An unknown method stops the workflow at start-up with the registered names.
TRAIN_METHODS = [check_method(m, "config.yaml train.methods") and m for m in config["train"]["methods"]]
MODEL = "results/models/{method}/{identity}"
_TRAIN_GPU = 1 if config["train"]["profile"] == "paper" else 0
# minutes per stage: paper runs on a GPU for hours, quick/smoke on CPU for minutes
_TRAIN_RUNTIME = {"paper": {"head": 720, "lips": 240, "torso": 720}}.get(
    config["train"]["profile"], {"head": 60, "lips": 30, "torso": 60}
)
# CPU profiles: one torch thread per job (small per-ray tensors parallelise poorly; with
# --cores 2 the two methods train side by side), paper: a few threads beside the GPU
_TRAIN_THREADS = 4 if config["train"]["profile"] == "paper" else 1
_TRAIN_MEM = 24000 if config["train"]["profile"] == "paper" else 4000
_TRAIN_AUDIO = AUDIO_FEATURE_FILES[config["train"]["audio_feature"]]


wildcard_constraints:
    method=_alternation(TRAIN_METHODS),


rule train_head:
    input:
        manifest=f"{DATA}/manifest.json",
        audio=f"{DATA}/{_TRAIN_AUDIO}",
    output:
        ckpt=f"{MODEL}/head.pt",
        log=f"{MODEL}/train_log_head.csv",
    params:
        cfg=train_cfg("head"),
        data=input_dir("manifest"),
        model_dir=output_dir("ckpt"),
        weights=config["weights_dir"],
    conda:
        "../../envs/nerf.yaml"
    log:
        f"{LOGS}/train_head/{{method}}/{{identity}}.log",
    benchmark:
        f"{BENCH}/train_head/{{method}}/{{identity}}.tsv"
    threads: _TRAIN_THREADS
    priority: TRAIN_PRIORITY
    resources:
        mem_mb=_TRAIN_MEM,
        runtime=_TRAIN_RUNTIME["head"],
        gpu=_TRAIN_GPU,
    shell:
        "python -m pipeline.train --stage head --method {wildcards.method} --data {params.data:q}"
        " --model-dir {params.model_dir:q} --out {output.ckpt:q} --cfg {params.cfg}"
        " --weights-dir {params.weights:q} --threads {threads} > {log:q} 2>&1"


rule train_lips:
    input:
        manifest=f"{DATA}/manifest.json",
        audio=f"{DATA}/{_TRAIN_AUDIO}",
        init=rules.train_head.output.ckpt,
        weights=stage_weight_files("train.lips"),  # LPIPS's AlexNet, when present
    output:
        ckpt=f"{MODEL}/lips.pt",
        log=f"{MODEL}/train_log_lips.csv",
    params:
        cfg=train_cfg("lips"),
        data=input_dir("manifest"),
        model_dir=output_dir("ckpt"),
        weights=config["weights_dir"],
    conda:
        "../../envs/nerf.yaml"
    log:
        f"{LOGS}/train_lips/{{method}}/{{identity}}.log",
    benchmark:
        f"{BENCH}/train_lips/{{method}}/{{identity}}.tsv"
    threads: _TRAIN_THREADS
    priority: TRAIN_PRIORITY
    resources:
        mem_mb=_TRAIN_MEM,
        runtime=_TRAIN_RUNTIME["lips"],
        gpu=_TRAIN_GPU,
    shell:
        "python -m pipeline.train --stage lips --method {wildcards.method} --data {params.data:q}"
        " --model-dir {params.model_dir:q} --init {input.init:q} --out {output.ckpt:q} --cfg {params.cfg}"
        " --weights-dir {params.weights:q} --threads {threads} > {log:q} 2>&1"


rule train_torso:
    input:
        manifest=f"{DATA}/manifest.json",
        audio=f"{DATA}/{_TRAIN_AUDIO}",
        init=rules.train_lips.output.ckpt,
        logs=[rules.train_head.output.log, rules.train_lips.output.log],
    output:
        ckpt=f"{MODEL}/torso.pt",
        log=f"{MODEL}/train_log_torso.csv",
        train_log=f"{MODEL}/train_log.csv",
        val_frame=f"{MODEL}/val_frame.png",
        manifest=f"{MODEL}/train_manifest.json",
    params:
        cfg=train_cfg("torso"),
        data=input_dir("manifest"),
        model_dir=output_dir("ckpt"),
        weights=config["weights_dir"],
    conda:
        "../../envs/nerf.yaml"
    log:
        f"{LOGS}/train_torso/{{method}}/{{identity}}.log",
    benchmark:
        f"{BENCH}/train_torso/{{method}}/{{identity}}.tsv"
    threads: _TRAIN_THREADS
    priority: TRAIN_PRIORITY
    resources:
        mem_mb=_TRAIN_MEM,
        runtime=_TRAIN_RUNTIME["torso"],
        gpu=_TRAIN_GPU,
    shell:
        "python -m pipeline.train --stage torso --method {wildcards.method} --data {params.data:q}"
        " --model-dir {params.model_dir:q} --init {input.init:q} --out {output.ckpt:q} --cfg {params.cfg}"
        " --weights-dir {params.weights:q} --threads {threads} > {log:q} 2>&1"


ALL_TARGETS.extend(
    expand(f"{MODEL}/train_manifest.json", method=TRAIN_METHODS, identity=IDENTITIES)
)
