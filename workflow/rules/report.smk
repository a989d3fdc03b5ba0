# Rules of the report part of the workflow: the motivating example (Example 1), and
# the paper-style report (one self-contained HTML file and its PDF) built from every
# enabled study's tables. The report takes each table it shows as an input, so any
# changed table rebuilds it.

REPORT_DIR = f"{RESULTS}/report"


# Named inputs of the report rule: the tables of the enabled studies.
REPORT_INPUTS = {"motivating": f"{RESULTS}/tables/motivating.csv"}
if config["sem"]["enabled"]:
    REPORT_INPUTS.update(
        sem_errors=f"{RESULTS}/tables/sem_errors.csv",
        sem_selected_lambda=f"{RESULTS}/tables/sem_selected_lambda.csv",
        sem_lambda_sweep=f"{RESULTS}/tables/sem_lambda_sweep.csv",
        sem_draws=f"{RESULTS}/tables/sem_draws.csv",
        sem_selection=f"{RESULTS}/tables/sem_selection.csv",
    )
if config["minimal"]["enabled"]:
    REPORT_INPUTS.update(
        minimal_trajectory=f"{RESULTS}/minimal/trajectory.csv",
        minimal_final=f"{RESULTS}/minimal/final.json",
    )
if config["cmnist"]["enabled"]:
    REPORT_INPUTS.update(
        cmnist_accuracy=f"{RESULTS}/tables/cmnist_accuracy.csv",
        cmnist_lambda_sweep=f"{RESULTS}/tables/cmnist_lambda_sweep.csv",
        cmnist_runs=f"{RESULTS}/cmnist/runs.csv",
        cmnist_curves=f"{RESULTS}/cmnist/curves.csv",
        mnist_checksums=f"{RESULTS}/data/mnist_checksums.json",
    )
    if config["cmnist"]["selection"]["enabled"]:
        REPORT_INPUTS.update(cmnist_selection=f"{RESULTS}/tables/cmnist_selection.csv")
if config["unit_tests"]["enabled"]:
    REPORT_INPUTS.update(unit_tests=UT_TABLE, unit_tests_selection=UT_SELECTION)


rule report_motivating:
    output:
        table=report(
            f"{RESULTS}/tables/motivating.csv",
            caption="../report/report_motivating_table.rst",
            category="Motivating example",
        ),
        png=report(
            f"{RESULTS}/figures/motivating.png",
            caption="../report/report_motivating.rst",
            category="Motivating example",
        ),
        pdf=f"{RESULTS}/figures/motivating.pdf",
    log:
        f"{LOGS}/report_motivating.log",
    benchmark:
        f"{BENCH}/report_motivating.tsv"
    conda:
        "../envs/irm-bench.yaml"
    threads: 1
    resources:
        runtime=5,
        mem_mb=1000,
    script:
        "../scripts/report_motivating.py"


rule report:
    input:
        **REPORT_INPUTS,
    output:
        html=report(
            f"{REPORT_DIR}/report.html",
            caption="../report/report_html.rst",
            category="Report",
        ),
        pdf=report(
            f"{REPORT_DIR}/report.pdf",
            caption="../report/report_pdf.rst",
            category="Report",
        ),
    log:
        f"{LOGS}/report.log",
    conda:
        "../envs/irm-bench.yaml"
    threads: 1
    resources:
        runtime=10,
        mem_mb=2000,
    params:
        config=config,
        repo=workflow.basedir,
        benchmarks=BENCH,
    script:
        "../scripts/report_build.py"


REPORT_TARGETS = (
    [f"{REPORT_DIR}/report.html", f"{REPORT_DIR}/report.pdf"]
    if config["report"]["enabled"]
    else []
)
