# Rules of the unit-test study (Aubin et al. 2021, arXiv:2102.10867): one training job
# per task (every method, each batched over all trials and data seeds), then model
# selection, the results table and the figure. Benchmark files are named unittests_*
# (the report groups run times by the first "_"-separated token).

UT = config["unit_tests"]
UT_DIR = f"{RESULTS}/unit_tests"
UT_TABLE = f"{RESULTS}/tables/unit_tests.csv"
UT_SELECTION = f"{RESULTS}/tables/unit_tests_selection.csv"
UT_FIGURES = [
    f"{RESULTS}/figures/unit_tests.png",
    f"{RESULTS}/figures/unit_tests.pdf",
]
UNIT_TESTS_TARGETS = [UT_TABLE, UT_SELECTION] + UT_FIGURES if UT["enabled"] else []


wildcard_constraints:
    ut_task="Example[123]s?",


rule unit_tests_train:
    output:
        runs=f"{UT_DIR}/runs/{{ut_task}}.csv",
    log:
        f"{LOGS}/unit_tests_train_{{ut_task}}.log",
    benchmark:
        f"{BENCH}/unittests_train_{{ut_task}}.tsv"
    conda:
        "../envs/irm-bench.yaml"
    threads: 1
    resources:
        runtime=60 if UT["preset"] == "quick" else 24 * 60,
        mem_mb=2000 if UT["preset"] == "quick" else 16000,
        gpu=TRAIN_GPUS,
    params:
        section=UT,
    script:
        "../scripts/unit_tests_train.py"


rule unit_tests_aggregate:
    input:
        runs=expand(f"{UT_DIR}/runs/{{ut_task}}.csv", ut_task=UT["tasks"]),
    output:
        table=UT_TABLE,
        selection=UT_SELECTION,
        png=UT_FIGURES[0],
        pdf=UT_FIGURES[1],
    log:
        f"{LOGS}/unit_tests_aggregate.log",
    benchmark:
        f"{BENCH}/unittests_aggregate.tsv"
    conda:
        "../envs/irm-bench.yaml"
    threads: 1
    resources:
        runtime=10,
        mem_mb=2000,
    params:
        rules=UT["selection"]["rules"],
    script:
        "../scripts/unit_tests_aggregate.py"
