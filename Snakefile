# irm-bench: regenerate the results of Invariant Risk Minimization (arXiv:1907.02893).
# Run `snakemake --cores 8`; see README.md.

from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/sem.smk"
include: "workflow/rules/minimal.smk"
include: "workflow/rules/cmnist.smk"
include: "workflow/rules/unit_tests.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        SEM_TARGETS
        + MINIMAL_TARGETS
        + CMNIST_TARGETS
        + UNIT_TESTS_TARGETS
        + REPORT_TARGETS,
