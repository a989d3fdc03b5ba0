"""The IRM paper's small worked examples: the motivating example (Section 2) and the
appendix minimal example."""
