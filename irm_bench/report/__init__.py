"""The paper-style report: tables → context → Jinja2 HTML → WeasyPrint PDF.

Entry point: :func:`build_report`. Figures are drawn from the tables by
:mod:`irm_bench.report.figures`; published numbers and the tolerance rule live in
:mod:`irm_bench.scorecard`; provenance in :mod:`irm_bench.provenance`.
"""

from irm_bench.report.render import (
    TABLE_INPUTS,
    build_motivating,
    build_report,
    render_html,
    write_pdf,
)

__all__ = ["TABLE_INPUTS", "build_motivating", "build_report", "render_html", "write_pdf"]
