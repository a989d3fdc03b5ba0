"""Environment families: data generators for the studies of the IRM paper."""
