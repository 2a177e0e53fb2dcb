# Baseline "static_frame": the first training frame repeated for every output frame, with the
# test's driving audio. Writes the render contract (pipeline/render/contract.py) for the
# self-driven test and every config render.cross_driven test, so the metrics and report stages
# treat it like a trained method. Switched off with config baselines.static_frame: false.

if config.get("baselines", {}).get("static_frame", True):

    rule static_frame:
        input:
            train=f"{DATA}/transforms_train.json",
            val=f"{DATA}/transforms_val.json",
            gt=f"{DATA}/gt_imgs",
            audio=f"{DATA}/aud.wav",
            driving=driving_audio,
        output:
            video="results/renders/static_frame/{identity}/{test}/video.mp4",
            manifest="results/renders/static_frame/{identity}/{test}/manifest.json",
        wildcard_constraints:
            test=_alternation([SELF_DRIVEN_TEST, *config["render"]["cross_driven"]]),
        params:
            data=input_dir("train"),
            out=output_dir("manifest"),
            audio=driving_arg,
        conda:
            "../../../envs/report.yaml"
        log:
            f"{LOGS}/static_frame/{{identity}}/{{test}}.log",
        benchmark:
            f"{BENCH}/static_frame/{{identity}}/{{test}}.tsv"
        threads: 1
        resources:
            mem_mb=2000,
            runtime=15,
        shell:
            "python -m pipeline.baselines.static_frame --data {params.data:q} --identity {wildcards.identity}"
            " --test {wildcards.test} {params.audio} --out {params.out:q} > {log:q} 2>&1"

    BASELINE_RUNS.extend(
        ("static_frame", identity, test)
        for identity in IDENTITIES
        for test in [SELF_DRIVEN_TEST, *config["render"]["cross_driven"]]
    )
