# Rendering: every trained model x identity x test into the render contract
# results/renders/{method}/{identity}/{test}/{frames/, video.mp4, manifest.json}
# (pipeline/render/contract.py). Tests: "self" (self-driven, the validation split) and one
# cross-driven test per entry of config render.cross_driven (test name -> driving audio).

RENDER_METHODS = list(config["train"]["methods"])
RENDER_TESTS = [SELF_DRIVEN_TEST] + list(config["render"]["cross_driven"])
RENDERS = "results/renders/{method}/{identity}/{test}"
# only what changes the pixels: adding a cross-driven test must not re-render the others
RENDER_CFG = shlex.quote(json.dumps({k: config["render"][k] for k in ("compositing", "controls")}, sort_keys=True))


rule render:
    input:
        model="results/models/{method}/{identity}/train_manifest.json",
        data=f"{DATA}/manifest.json",
        # the driving audio of a cross-driven test; none for the self-driven test
        audio=driving_audio,
        background=background_control,
    output:
        manifest=f"{RENDERS}/manifest.json",
        video=f"{RENDERS}/video.mp4",
    wildcard_constraints:
        method=_alternation(RENDER_METHODS),
        test=_alternation(RENDER_TESTS),
    params:
        cfg=RENDER_CFG,
        audio_cfg=render_audio_cfg,
        device=config["train"]["device"],
        audio=audio_arg,
        model=input_dir("model"),
        data=input_dir("data"),
        out=output_dir("manifest"),
    conda:
        "../../envs/nerf.yaml"
    log:
        f"{LOGS}/render/{{method}}/{{identity}}/{{test}}.log",
    benchmark:
        f"{BENCH}/render/{{method}}/{{identity}}/{{test}}.tsv"
    threads: 1
    priority: RENDER_PRIORITY
    resources:
        mem_mb=4000,
        runtime=60,
        gpu=1 if config["train"]["profile"] == "paper" else 0,
    shell:
        "python -m pipeline.render --model {params.model:q} --data {params.data:q}"
        " --method {wildcards.method} --identity {wildcards.identity} --test {wildcards.test}"
        " {params.audio} --out {params.out:q} --cfg {params.cfg} --audio-cfg {params.audio_cfg}"
        " --device {params.device} --threads {threads} > {log:q} 2>&1"


ALL_TARGETS.extend(
    expand(f"{RENDERS}/manifest.json", method=RENDER_METHODS, identity=IDENTITIES, test=RENDER_TESTS)
)


# emotion_edit: the self-driven test under every emotion label the model was trained with
# (methods with an emotion condition, config render.emotion_edit; pipeline/render/emotion_edit.py)


rule render_emotion_edit:
    input:
        model="results/models/{method}/{identity}/train_manifest.json",
        data=f"{DATA}/manifest.json",
    output:
        out=directory("results/renders/{method}/{identity}/emotion_edit"),
    wildcard_constraints:
        method=_alternation(EMOTION_EDIT_METHODS),
    params:
        cfg=RENDER_CFG,
        device=config["train"]["device"],
        model=input_dir("model"),
        data=input_dir("data"),
    conda:
        "../../envs/nerf.yaml"
    log:
        f"{LOGS}/render_emotion_edit/{{method}}/{{identity}}.log",
    benchmark:
        f"{BENCH}/render_emotion_edit/{{method}}/{{identity}}.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=120,
        gpu=1 if config["train"]["profile"] == "paper" else 0,
    shell:
        "python -m pipeline.render.emotion_edit --model {params.model:q} --data {params.data:q}"
        " --method {wildcards.method} --identity {wildcards.identity} --out {output.out:q} --cfg {params.cfg}"
        " --device {params.device} --threads {threads} > {log:q} 2>&1"


ALL_TARGETS.extend(
    expand("results/renders/{method}/{identity}/emotion_edit", method=EMOTION_EDIT_METHODS,
           identity=IDENTITIES)
)
