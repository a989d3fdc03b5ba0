# Rules of the sem part of the workflow.

SEM_TARGETS = []
