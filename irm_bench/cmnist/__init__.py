"""Colored MNIST study (IRM paper, Section 5.2, Table 1): presets, model, training."""
