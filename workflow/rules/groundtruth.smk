# Generated recordings with known spike trains (the demo) and their scorecards: the ground-truth
# tooling of kilosnake.groundtruth.


rule demo_recording:
    output:
        dat="resources/demo/{preset}.bin",
        probe="resources/demo/{preset}.probe.json",
        gt="resources/demo/{preset}_gt.npz",
        meta="resources/demo/{preset}.meta.json",
    log:
        "resources/demo/{preset}.log",
    conda:
        "../../envs/cpu.yaml"
    params:
        seed=config["seed"],
    script:
        "../../scripts/demo_recording.py"


rule scorecard:
    input:
        phy=out("phy"),
        gt=lookup(dpath="{recording}/gt", within=RECORDINGS),
    output:
        whole_out("scorecard.txt"),
    log:
        log_path("scorecard"),
    benchmark:
        bench_path("scorecard")
    conda:
        "../../envs/cpu.yaml"
    script:
        "../../scripts/scorecard.py"
