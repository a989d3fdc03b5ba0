# Rules of the minimal part of the workflow.

MINIMAL_TARGETS = []
