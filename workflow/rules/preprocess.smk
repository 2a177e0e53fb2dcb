# Dataset builder: raw video -> ER-NeRF-compatible training set under results/data/{identity}/.
# Each rule is one call into pipeline.preprocess.<stage>; the file names come from
# pipeline/common/layout.py (documented there and in README "Dataset layout").


rule probe:
    input:
        video=identity_video,
    output:
        probe=f"{DATA}/probe.json",
    params:
        cfg=cfg_arg("preprocess", "probe"),
    conda:
        "../../envs/preprocess.yaml"
    log:
        f"{LOGS}/probe/{{identity}}.log",
    benchmark:
        f"{BENCH}/probe/{{identity}}.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "python -m pipeline.preprocess.probe --video {input.video:q} --out {output.probe:q}"
        " --cfg {params.cfg} > {log:q} 2>&1"


rule crop:
    input:
        video=identity_video,
        probe=rules.probe.output.probe,
    output:
        video=f"{DATA}/{{identity}}.mp4",
        audio=f"{DATA}/aud.wav",
        track=f"{DATA}/crop.json",
    params:
        cfg=cfg_arg("preprocess", "crop"),
    conda:
        "../../envs/preprocess.yaml"
    log:
        f"{LOGS}/crop/{{identity}}.log",
    benchmark:
        f"{BENCH}/crop/{{identity}}.tsv"
    threads: 2
    resources:
        mem_mb=4000,
        runtime=30,
    shell:
        "python -m pipeline.preprocess.crop --video {input.video:q} --probe {input.probe:q}"
        " --out-video {output.video:q} --out-audio {output.audio:q} --out-track {output.track:q}"
        " --cfg {params.cfg} > {log:q} 2>&1"


rule frames:
    input:
        video=rules.crop.output.video,
    output:
        frames=directory(f"{DATA}/ori_imgs"),
    conda:
        "../../envs/preprocess.yaml"
    log:
        f"{LOGS}/frames/{{identity}}.log",
    benchmark:
        f"{BENCH}/frames/{{identity}}.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    shell:
        "python -m pipeline.preprocess.frames --video {input.video:q} --out {output.frames:q} > {log:q} 2>&1"


# Writes ori_imgs/{i}.lms next to the frames (ER-NeRF layout) before its declared outputs.
rule landmarks:
    input:
        frames=rules.frames.output.frames,
        # the present pretrained files of the stage (FAN); fetching one reruns it (stage_weight_files)
        weights=stage_weight_files("preprocess.landmarks"),
    output:
        mesh=f"{DATA}/face_mesh.npy",
        blendshapes=f"{DATA}/blendshapes.npy",
        pose=f"{DATA}/face_pose_mp.npy",
        report=f"{DATA}/landmarks.json",
    params:
        cfg=cfg_arg("preprocess", "landmarks"),
        weights=config["weights_dir"],
    conda:
        "../../envs/preprocess.yaml"
    log:
        f"{LOGS}/landmarks/{{identity}}.log",
    benchmark:
        f"{BENCH}/landmarks/{{identity}}.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    shell:
        "python -m pipeline.preprocess.landmarks --frames {input.frames:q} --out-mesh {output.mesh:q}"
        " --out-blendshapes {output.blendshapes:q} --out-pose {output.pose:q} --out-report {output.report:q}"
        " --weights-dir {params.weights:q} --cfg {params.cfg} > {log:q} 2>&1"


rule parsing:
    input:
        frames=rules.frames.output.frames,
        mesh=rules.landmarks.output.mesh,
        weights=stage_weight_files("preprocess.parsing"),  # BiSeNet, when present
    output:
        parsing=directory(f"{DATA}/parsing"),
        report=f"{DATA}/parsing.json",
    params:
        cfg=cfg_arg("preprocess", "parsing"),
        weights=config["weights_dir"],
    conda:
        "../../envs/preprocess.yaml"
    log:
        f"{LOGS}/parsing/{{identity}}.log",
    benchmark:
        f"{BENCH}/parsing/{{identity}}.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    shell:
        "python -m pipeline.preprocess.parsing --frames {input.frames:q} --mesh {input.mesh:q}"
        " --out {output.parsing:q} --report {output.report:q} --weights-dir {params.weights:q}"
        " --cfg {params.cfg} > {log:q} 2>&1"


rule background:
    input:
        frames=rules.frames.output.frames,
        parsing=rules.parsing.output.parsing,
    output:
        bc=f"{DATA}/bc.jpg",
        gt=directory(f"{DATA}/gt_imgs"),
        torso=directory(f"{DATA}/torso_imgs"),
        report=f"{DATA}/background.json",
    params:
        cfg=cfg_arg("preprocess", "background"),
    conda:
        "../../envs/preprocess.yaml"
    log:
        f"{LOGS}/background/{{identity}}.log",
    benchmark:
        f"{BENCH}/background/{{identity}}.tsv"
    threads: 1
    resources:
        mem_mb=6000,
        runtime=60,
    shell:
        "python -m pipeline.preprocess.background --frames {input.frames:q} --parsing {input.parsing:q}"
        " --out-bc {output.bc:q} --out-gt {output.gt:q} --out-torso {output.torso:q}"
        " --report {output.report:q} --cfg {params.cfg} > {log:q} 2>&1"


# Per-frame emotion labels from the identities table (AED-NeRF); unlabelled identities get zeros.
rule emotion:
    input:
        frames=rules.frames.output.frames,
    output:
        codes=f"{DATA}/emotion.npy",
        labels=f"{DATA}/emotion.json",
    params:
        label=identity_emotion,
        source=config["identities"],
        fps=config["preprocess"]["crop"]["fps"],
    conda:
        "../../envs/preprocess.yaml"
    log:
        f"{LOGS}/emotion/{{identity}}.log",
    benchmark:
        f"{BENCH}/emotion/{{identity}}.tsv"
    threads: 1
    resources:
        mem_mb=500,
        runtime=5,
    shell:
        "python -m pipeline.preprocess.emotion --frames {input.frames:q} --label={params.label:q}"
        " --source {params.source:q} --fps {params.fps} --out-npy {output.codes:q} --out-json {output.labels:q}"
        " > {log:q} 2>&1"


rule tracking:
    input:
        frames=rules.frames.output.frames,
        mesh=rules.landmarks.output.mesh,
        blendshapes=rules.landmarks.output.blendshapes,
        landmarks=rules.landmarks.output.report,
        au=f"{DATA}/au.csv",
        emotion=rules.emotion.output.labels,
        threedmm=f"{DATA}/threedmm.npz",
    output:
        params=f"{DATA}/track_params.pt",
        train=f"{DATA}/transforms_train.json",
        val=f"{DATA}/transforms_val.json",
        report=f"{DATA}/tracking.json",
    params:
        cfg=cfg_arg("preprocess", "tracking"),
    conda:
        "../../envs/preprocess.yaml"
    log:
        f"{LOGS}/tracking/{{identity}}.log",
    benchmark:
        f"{BENCH}/tracking/{{identity}}.tsv"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    shell:
        "python -m pipeline.preprocess.tracking --frames {input.frames:q} --mesh {input.mesh:q}"
        " --blendshapes {input.blendshapes:q} --landmarks {input.landmarks:q} --au {input.au:q}"
        " --out-params {output.params:q}"
        " --out-train {output.train:q} --out-val {output.val:q} --out-report {output.report:q}"
        " --emotion {input.emotion:q} --threedmm {input.threedmm:q} --cfg {params.cfg} > {log:q} 2>&1"


rule threedmm:
    input:
        frames=rules.frames.output.frames,
        landmarks=rules.landmarks.output.report,
        weights=stage_weight_files("preprocess.threedmm"),  # the Surrey Face Model files, when present
    output:
        params=f"{DATA}/threedmm.npz",
        report=f"{DATA}/threedmm.json",
    params:
        cfg=cfg_arg("preprocess", "threedmm"),
        weights=config["weights_dir"],
    conda:
        "../../envs/preprocess.yaml"
    log:
        f"{LOGS}/threedmm/{{identity}}.log",
    benchmark:
        f"{BENCH}/threedmm/{{identity}}.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=60,
    shell:
        "python -m pipeline.preprocess.threedmm --frames {input.frames:q} --landmarks {input.landmarks:q}"
        " --out {output.params:q} --report {output.report:q} --weights-dir {params.weights:q}"
        " --cfg {params.cfg} > {log:q} 2>&1"


rule teeth_mask:
    input:
        frames=rules.frames.output.frames,
        mesh=rules.landmarks.output.mesh,
        parsing=rules.parsing.output.parsing,
    output:
        masks=directory(f"{DATA}/teeth_mask"),
        parsing_tg=directory(f"{DATA}/parsing_tg"),
        report=f"{DATA}/teeth_mask.json",
    params:
        cfg=cfg_arg("preprocess", "teeth_mask"),
    conda:
        "../../envs/preprocess.yaml"
    log:
        f"{LOGS}/teeth_mask/{{identity}}.log",
    benchmark:
        f"{BENCH}/teeth_mask/{{identity}}.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=60,
    shell:
        "python -m pipeline.preprocess.teeth --frames {input.frames:q} --mesh {input.mesh:q}"
        " --parsing {input.parsing:q} --out-parsing {output.parsing_tg:q}"
        " --out {output.masks:q} --report {output.report:q} --cfg {params.cfg} > {log:q} 2>&1"


rule aus:
    input:
        video=rules.crop.output.video,
        blendshapes=rules.landmarks.output.blendshapes,
        landmarks=rules.landmarks.output.report,
        # pyfaceau's OpenFace model stamp when installed (then AUs by pyfaceau; see aus_cfg)
        weights=stage_weight_files("preprocess.aus"),
    output:
        au=f"{DATA}/au.csv",
        report=f"{DATA}/aus.json",
    params:
        cfg=aus_cfg,
    conda:
        "../../envs/preprocess.yaml"
    log:
        f"{LOGS}/aus/{{identity}}.log",
    benchmark:
        f"{BENCH}/aus/{{identity}}.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=60,
    shell:
        "python -m pipeline.preprocess.aus --video {input.video:q} --blendshapes {input.blendshapes:q}"
        " --landmarks {input.landmarks:q} --out {output.au:q} --out-report {output.report:q}"
        " --cfg {params.cfg} > {log:q} 2>&1"


rule body_pose:
    input:
        frames=rules.frames.output.frames,
    output:
        landmarks=f"{DATA}/body_pose.npy",
        report=f"{DATA}/body_pose.json",
    conda:
        "../../envs/preprocess.yaml"
    log:
        f"{LOGS}/body_pose/{{identity}}.log",
    benchmark:
        f"{BENCH}/body_pose/{{identity}}.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    shell:
        "python -m pipeline.preprocess.body_pose --frames {input.frames:q} --out {output.landmarks:q}"
        " --report {output.report:q} > {log:q} 2>&1"


rule body_flow:
    input:
        frames=rules.frames.output.frames,
        parsing=rules.parsing.output.parsing,
        body_pose=rules.body_pose.output.landmarks,
    output:
        flow=f"{DATA}/body_flow.npy",
        report=f"{DATA}/body_flow.json",
    conda:
        "../../envs/preprocess.yaml"
    log:
        f"{LOGS}/body_flow/{{identity}}.log",
    benchmark:
        f"{BENCH}/body_flow/{{identity}}.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=30,
    shell:
        "python -m pipeline.preprocess.body_flow --frames {input.frames:q} --parsing {input.parsing:q}"
        " --body-pose {input.body_pose:q} --out {output.flow:q} --report {output.report:q} > {log:q} 2>&1"


rule audio_features:
    input:
        audio=rules.crop.output.audio,
        track=rules.crop.output.track,
    output:
        features=[
            f"{DATA}/{AUDIO_FEATURE_FILES[name]}"
            for name in config["preprocess"]["audio"]["features"]
        ],
    params:
        cfg=audio_features_cfg(),
        out_dir=output_dir("features"),
    conda:
        "../../envs/preprocess.yaml"
    log:
        f"{LOGS}/audio_features/{{identity}}.log",
    benchmark:
        f"{BENCH}/audio_features/{{identity}}.tsv"
    threads: audio_features_threads()
    resources:
        mem_mb=4000,
        runtime=60,
    shell:
        "python -m pipeline.preprocess.audio_features --audio {input.audio:q} --track {input.track:q}"
        " --out-dir {params.out_dir:q} --cfg {params.cfg} > {log:q} 2>&1"


rule dataset_manifest:
    input:
        probe=rules.probe.output.probe,
        track=rules.crop.output.track,
        frames=rules.frames.output.frames,
        landmarks=rules.landmarks.output.report,
        parsing=rules.parsing.output.parsing,
        bc=rules.background.output.bc,
        gt=rules.background.output.gt,
        torso=rules.background.output.torso,
        tracking=rules.tracking.output.report,
        transforms=rules.tracking.output.train,
        aus=rules.aus.output.report,
        body_pose=rules.body_pose.output.report,
        body_flow=rules.body_flow.output.report,
        threedmm=rules.threedmm.output.report,
        teeth=teeth_mask_report,
        audio=rules.audio_features.output.features,
        benchmarks=[
            f"{BENCH}/{stage}/{{identity}}.tsv"
            for stage in ("probe", "crop", "frames", "landmarks", "parsing", "background", "tracking", "aus",
                          "body_pose", "body_flow", "threedmm", "audio_features")
        ],
    output:
        manifest=f"{DATA}/manifest.json",
    params:
        cfg=manifest_cfg(),
        data=output_dir("manifest"),
    conda:
        "../../envs/preprocess.yaml"
    log:
        f"{LOGS}/dataset_manifest/{{identity}}.log",
    benchmark:
        f"{BENCH}/dataset_manifest/{{identity}}.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    shell:
        "python -m pipeline.preprocess.manifest --data {params.data:q} --identity {wildcards.identity}"
        " --bench {input.benchmarks:q} --out {output.manifest:q} --cfg {params.cfg} > {log:q} 2>&1"


ALL_TARGETS.extend(expand(f"{DATA}/manifest.json", identity=IDENTITIES))
