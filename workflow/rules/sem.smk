# Rules of the sem part of the workflow: the linear SEM study of Section 5.1 (Figure 4).
# One sem_fit job per (setup, block of draws_per_job draws); all models of each
# gradient method of a job train together as one batched tensor program,
# single-threaded (tiny tensors gain nothing from threads, so jobs run side by side).

from irm_bench.sem.study import fit_runtime_minutes

SEM = config["sem"]
SEM_DIR = f"{RESULTS}/sem"
SEM_CHUNKS = list(range(-(-SEM["n_draws"] // SEM["draws_per_job"])))
SEM_TABLES = {
    "draws": f"{RESULTS}/tables/sem_draws.csv",
    "coefficients": f"{RESULTS}/tables/sem_coefficients.csv",
    "errors": f"{RESULTS}/tables/sem_errors.csv",
    "selected_lambda": f"{RESULTS}/tables/sem_selected_lambda.csv",
    "lambda_sweep": f"{RESULTS}/tables/sem_lambda_sweep.csv",
    "selection_records": f"{RESULTS}/tables/sem_selection_records.csv",
    "selection": f"{RESULTS}/tables/sem_selection.csv",
}
SEM_FIGURES = {
    "errors_png": f"{RESULTS}/figures/sem_errors.png",
    "errors_pdf": f"{RESULTS}/figures/sem_errors.pdf",
    "sweep_png": f"{RESULTS}/figures/sem_lambda_sweep.png",
    "sweep_pdf": f"{RESULTS}/figures/sem_lambda_sweep.pdf",
}
SEM_TARGETS = (
    list(SEM_TABLES.values()) + list(SEM_FIGURES.values()) if SEM["enabled"] else []
)


# Scheduler time limit (minutes) of one sem_fit job, from each configured method's
# model-steps (irm_bench.sem.study.fit_runtime_minutes: measured costs, 5x margin).
SEM_FIT_RUNTIME = fit_runtime_minutes(SEM)


wildcard_constraints:
    setup="[FP][OE][SU]",
    chunk=r"\d+",


rule sem_fit:
    output:
        draws=f"{SEM_DIR}/draws/{{setup}}_chunk{{chunk}}.csv",
        coefficients=f"{SEM_DIR}/draws/{{setup}}_chunk{{chunk}}_coefficients.csv",
        holdout=f"{SEM_DIR}/draws/{{setup}}_chunk{{chunk}}_holdout.csv",
        info=f"{SEM_DIR}/draws/{{setup}}_chunk{{chunk}}.json",
    log:
        f"{LOGS}/sem_fit_{{setup}}_{{chunk}}.log",
    benchmark:
        f"{BENCH}/sem_fit_{{setup}}_{{chunk}}.tsv"
    conda:
        "../envs/irm-bench.yaml"
    threads: 1
    resources:
        runtime=SEM_FIT_RUNTIME,
        mem_mb=2000,
        gpu=TRAIN_GPUS,
    params:
        sem=SEM,
        device=config["device"],
    script:
        "../scripts/sem_fit.py"


rule sem_aggregate:
    input:
        draws=expand(
            f"{SEM_DIR}/draws/{{setup}}_chunk{{chunk}}.csv",
            setup=SEM["setups"],
            chunk=SEM_CHUNKS,
        ),
        coefficients=expand(
            f"{SEM_DIR}/draws/{{setup}}_chunk{{chunk}}_coefficients.csv",
            setup=SEM["setups"],
            chunk=SEM_CHUNKS,
        ),
        holdout=expand(
            f"{SEM_DIR}/draws/{{setup}}_chunk{{chunk}}_holdout.csv",
            setup=SEM["setups"],
            chunk=SEM_CHUNKS,
        ),
    output:
        draws=report(
            SEM_TABLES["draws"],
            caption="../report/sem_draws.rst",
            category="SEM study",
        ),
        coefficients=SEM_TABLES["coefficients"],
        errors=report(
            SEM_TABLES["errors"],
            caption="../report/sem_errors_table.rst",
            category="SEM study",
        ),
        selected_lambda=report(
            SEM_TABLES["selected_lambda"],
            caption="../report/sem_selected_lambda.rst",
            category="SEM study",
        ),
        lambda_sweep=report(
            SEM_TABLES["lambda_sweep"],
            caption="../report/sem_lambda_sweep_table.rst",
            category="SEM study",
        ),
        selection_records=SEM_TABLES["selection_records"],
        selection=report(
            SEM_TABLES["selection"],
            caption="../report/sem_selection.rst",
            category="SEM study",
        ),
    log:
        f"{LOGS}/sem_aggregate.log",
    benchmark:
        f"{BENCH}/sem_aggregate.tsv"
    conda:
        "../envs/irm-bench.yaml"
    threads: 1
    resources:
        runtime=10,
        mem_mb=2000,
    params:
        methods=SEM["methods"],
        rules=SEM["selection"]["rules"],
    script:
        "../scripts/sem_aggregate.py"


rule sem_figures:
    input:
        draws=SEM_TABLES["draws"],
    output:
        errors_png=report(
            SEM_FIGURES["errors_png"],
            caption="../report/sem_errors.rst",
            category="SEM study",
        ),
        errors_pdf=SEM_FIGURES["errors_pdf"],
        sweep_png=report(
            SEM_FIGURES["sweep_png"],
            caption="../report/sem_lambda_sweep.rst",
            category="SEM study",
        ),
        sweep_pdf=SEM_FIGURES["sweep_pdf"],
    log:
        f"{LOGS}/sem_figures.log",
    benchmark:
        f"{BENCH}/sem_figures.tsv"
    conda:
        "../envs/irm-bench.yaml"
    threads: 1
    resources:
        runtime=10,
        mem_mb=2000,
    script:
        "../scripts/sem_figures.py"
