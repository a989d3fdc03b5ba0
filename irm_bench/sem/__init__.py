"""The linear SEM study of the IRM paper (Section 5.1): jobs, aggregation, figures."""
