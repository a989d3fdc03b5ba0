# Rules of the minimal part of the workflow: the IRM paper appendix's two-environment
# example (IRMv1 with the split penalty estimator, phi in R^4).

MINIMAL = config["minimal"]
MINIMAL_FILES = {
    "trajectory": f"{RESULTS}/minimal/trajectory.csv",
    "final": f"{RESULTS}/minimal/final.json",
    "png": f"{RESULTS}/figures/minimal_trajectory.png",
    "pdf": f"{RESULTS}/figures/minimal_trajectory.pdf",
}
MINIMAL_TARGETS = list(MINIMAL_FILES.values()) if MINIMAL["enabled"] else []


rule minimal_train:
    output:
        trajectory=report(
            MINIMAL_FILES["trajectory"],
            caption="../report/minimal_trajectory_table.rst",
            category="Appendix minimal example",
        ),
        final=MINIMAL_FILES["final"],
    log:
        f"{LOGS}/minimal_train.log",
    benchmark:
        f"{BENCH}/minimal_train.tsv"
    conda:
        "../envs/irm-bench.yaml"
    threads: 1
    resources:
        runtime=max(10, MINIMAL["steps"] // 1000),
        mem_mb=1000,
        gpu=TRAIN_GPUS,
    params:
        minimal=MINIMAL,
    script:
        "../scripts/minimal_train.py"


rule minimal_figure:
    input:
        trajectory=MINIMAL_FILES["trajectory"],
    output:
        png=report(
            MINIMAL_FILES["png"],
            caption="../report/minimal_trajectory.rst",
            category="Appendix minimal example",
        ),
        pdf=MINIMAL_FILES["pdf"],
    log:
        f"{LOGS}/minimal_figure.log",
    benchmark:
        f"{BENCH}/minimal_figure.tsv"
    conda:
        "../envs/irm-bench.yaml"
    threads: 1
    resources:
        runtime=10,
        mem_mb=1000,
    script:
        "../scripts/minimal_figure.py"
