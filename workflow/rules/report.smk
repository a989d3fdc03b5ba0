# Rules of the report part of the workflow.

REPORT_TARGETS = []
