# Rules of the cmnist part of the workflow.

CMNIST_TARGETS = []
