"""irm-bench: a reproducible benchmark pipeline for Invariant Risk Minimization.

Reproduces Arjovsky, Bottou, Gulrajani and Lopez-Paz (2019), "Invariant Risk
Minimization", arXiv:1907.02893: the linear SEM study (Section 5.1), the appendix
minimal example, and Colored MNIST (Section 5.2).
"""

__version__ = "0.1.0"
