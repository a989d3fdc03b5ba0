"""The linear unit tests for invariance (Aubin et al. 2021, arXiv:2102.10867) as a study.

:mod:`~irm_bench.unit_tests.protocol` (methods, search, seeds, one job),
:mod:`~irm_bench.unit_tests.trainer` (the batched linear trainer),
:mod:`~irm_bench.unit_tests.aggregate` (model selection, the table),
:mod:`~irm_bench.unit_tests.figures`, :mod:`~irm_bench.unit_tests.report` (report
section), :mod:`~irm_bench.unit_tests.reference` (published numbers),
:mod:`~irm_bench.unit_tests.loop` (the one-model reference loop), and
:mod:`~irm_bench.unit_tests.pipeline` (Snakemake entry points). The tasks live in
:mod:`irm_bench.envs.unit_tests`.
"""
