"""Render the report: Jinja2 → one self-contained HTML file, WeasyPrint → PDF.

The PDF is printed from the very same HTML (so both carry the same content); figures
are inline SVG, which WeasyPrint draws as vector graphics. WeasyPrint needs the Pango
library at run time (Debian: ``libpango-1.0-0 libpangoft2-1.0-0``); its absence is
reported with that hint instead of a bare ``OSError``.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jinja2
import matplotlib.pyplot as plt

from irm_bench.appendix.motivating import MotivatingSettings, run_motivating
from irm_bench.io import atomic_open, atomic_path, save_figure, write_csv
from irm_bench.provenance import collect_provenance
from irm_bench.report.context import build_context
from irm_bench.report.figures import plot_motivating
from irm_bench.report.tables import REQUIRED_COLUMNS, load_tables

log = logging.getLogger(__name__)

#: Names of the report's table inputs (the Snakemake rule's named inputs).
TABLE_INPUTS: tuple[str, ...] = (*REQUIRED_COLUMNS, "minimal_final")


def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("irm_bench.report", "templates"),
        autoescape=jinja2.select_autoescape(["html", "j2"]),
        undefined=jinja2.StrictUndefined,
        trim_blocks=False,
        lstrip_blocks=False,
    )


def render_html(context: dict[str, Any]) -> str:
    """The report as one HTML document (CSS inlined, figures inline SVG)."""
    env = _environment()
    css = env.loader.get_source(env, "report.css")[0]  # type: ignore[union-attr]
    return env.get_template("report.html.j2").render(css=css, **context)


def write_pdf(html: str, path: str | Path) -> None:
    """Print ``html`` to a PDF at ``path`` with WeasyPrint, atomically.

    Raises ``RuntimeError`` with the system packages to install when WeasyPrint cannot
    load Pango.
    """
    try:
        import weasyprint
    except OSError as err:  # missing shared libraries
        raise RuntimeError(
            "WeasyPrint could not load its system libraries (Pango); on Debian/Ubuntu "
            "install them with `apt-get install -y libpango-1.0-0 libpangoft2-1.0-0 "
            f"fonts-dejavu-core`: {err}"
        ) from err
    with atomic_path(path) as tmp:
        # No base_url: the document references nothing outside itself.
        weasyprint.HTML(string=html).write_pdf(tmp)


def build_report(
    tables: dict[str, str | Path | None],
    config: dict[str, Any],
    repo: str | Path,
    benchmark_dir: str | Path,
    html_path: str | Path,
    pdf_path: str | Path | None,
    mnist_checksums: str | Path | None = None,
    now: dt.datetime | None = None,
) -> dict[str, Any]:
    """Build the paper-style report from the result tables.

    Parameters
    ----------
    tables : table name → CSV/JSON path (see :func:`irm_bench.report.tables.load_tables`);
        the tables of a disabled study are ``None`` or absent.
    config : the validated workflow configuration (shown in full, hashed).
    repo : the workflow's base directory (for the git commit).
    benchmark_dir : Snakemake's benchmark folder, for per-rule run times.
    html_path, pdf_path : outputs; ``pdf_path=None`` skips the PDF.
    mnist_checksums : the MNIST checksum JSON when Colored MNIST ran.
    now : end time shown in the report (default: now, UTC).

    Returns
    -------
    The template context (for tests and logs).
    """
    loaded = load_tables(tables)
    log.info("tables read: %s", ", ".join(sorted(k for k, v in tables.items() if v)))
    devices = {}
    if loaded.cmnist is not None:
        devices["cmnist"] = sorted(set(loaded.cmnist.runs["device"].astype(str)))
    provenance = collect_provenance(
        config, repo, benchmark_dir, mnist_checksums if loaded.cmnist else None, devices, now
    )
    context = build_context(loaded, provenance)
    html = render_html(context)
    with atomic_open(html_path) as fh:
        fh.write(html)
    log.info("wrote %s (%d bytes); scorecard %s", html_path, len(html), context["headline"])
    if pdf_path is not None:
        write_pdf(html, pdf_path)
        log.info("wrote %s", pdf_path)
    return context


def build_motivating(
    table_path: str | Path,
    figure_paths: Sequence[str | Path],
    settings: MotivatingSettings | None = None,
) -> None:
    """Run the motivating example (Example 1, Section 2); write its long table and figure(s).

    The figure format follows each path's suffix (``.png``, ``.pdf``, ``.svg``).
    """
    frame = run_motivating(settings or MotivatingSettings())
    irm = frame[frame["source"] == "irmv1"].drop_duplicates("feature")
    log.info("IRMv1 solution: %s", dict(zip(irm["feature"], irm["value"], strict=True)))
    write_csv(frame, table_path)
    fig = plot_motivating(frame)
    for path in figure_paths:
        save_figure(fig, path, dpi=200)
    plt.close(fig)
