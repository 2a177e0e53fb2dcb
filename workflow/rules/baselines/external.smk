# Baseline "external": videos produced by any other system, listed in config baselines.external
# as {method, identity, test, video}, ingested into the render contract: re-encoded to 25 fps,
# scaled to the dataset frame size, frame count aligned with the test, audio from the video.

EXTERNAL_RUNS = {
    (e["method"], e["identity"], e["test"]): e["video"]
    for e in config.get("baselines", {}).get("external", [])
}

if EXTERNAL_RUNS:

    rule external_baseline:
        input:
            video=external_video,
            train=f"{DATA}/transforms_train.json",
            val=f"{DATA}/transforms_val.json",
            gt=f"{DATA}/gt_imgs",
            audio=f"{DATA}/aud.wav",
            driving=driving_audio,
        output:
            video="results/renders/{method}/{identity}/{test}/video.mp4",
            manifest="results/renders/{method}/{identity}/{test}/manifest.json",
        wildcard_constraints:
            method=_alternation({m for m, _, _ in EXTERNAL_RUNS}),
            test=_alternation({t for _, _, t in EXTERNAL_RUNS}),
        params:
            data=input_dir("train"),
            out=output_dir("manifest"),
            audio=driving_arg,
        conda:
            "../../../envs/report.yaml"
        log:
            f"{LOGS}/external_baseline/{{method}}/{{identity}}/{{test}}.log",
        benchmark:
            f"{BENCH}/external_baseline/{{method}}/{{identity}}/{{test}}.tsv"
        threads: 1
        resources:
            mem_mb=2000,
            runtime=15,
        shell:
            "python -m pipeline.baselines.external --video {input.video:q} --method {wildcards.method}"
            " --identity {wildcards.identity} --test {wildcards.test} --data {params.data:q}"
            " {params.audio} --out {params.out:q} > {log:q} 2>&1"

    BASELINE_RUNS.extend(EXTERNAL_RUNS)
