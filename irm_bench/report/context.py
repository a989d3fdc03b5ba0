"""Build the template context of the report from the tables (numbers, figures, captions).

Sections follow the paper: summary, SEM study (Section 5.1), Colored MNIST (Section
5.2), the introduction's motivating example and the appendix minimal example, the
reproduction scorecard, and provenance. Every printed number goes through
:mod:`irm_bench.report.formatting`.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import yaml

from irm_bench import scorecard as sc
from irm_bench.motivating import closed_form
from irm_bench.provenance import Provenance
from irm_bench.report import figures
from irm_bench.report import formatting as f
from irm_bench.report.tables import CmnistTables, MinimalTables, ReportTables, SemTables

METHOD_LABELS = figures.METHOD_LABELS
METRIC_LABELS = {
    "causal_error": "causal",
    "noncausal_error": "non-causal",
    "train_acc": "train %",
    "test_acc": "test %",
}


@dataclass
class Table:
    """A table to render: an id, a caption, header cells and rows of cell strings."""

    id: str
    caption: str
    header: list[str]
    rows: list[list[str]]
    number: int = 0
    kind: ClassVar[str] = "table"


@dataclass
class Figure:
    """An inline-SVG figure with its number and caption."""

    id: str
    svg: str
    caption: str
    number: int = 0
    kind: ClassVar[str] = "figure"


@dataclass
class Note:
    """A paragraph of text."""

    text: str
    kind: ClassVar[str] = "note"


@dataclass
class Section:
    """One section (or subsection) of the report: blocks in reading order."""

    id: str
    title: str
    blocks: list[Note | Figure | Table] = field(default_factory=list)
    subsections: list[Section] = field(default_factory=list)

    def add(self, block: Note | Figure | Table) -> None:
        self.blocks.append(block)

    def walk(self) -> list[Note | Figure | Table]:
        """Blocks of this section and its subsections, in reading order."""
        out = list(self.blocks)
        for sub in self.subsections:
            out += sub.walk()
        return out


def _add_figure(sec: Section, frame: pd.DataFrame, what: str, build: Callable[[], Figure]) -> None:
    """Add the figure ``build()`` draws, or a note when its table has no rows."""
    if frame.empty:
        sec.add(Note(f"No {what} in this run: its table has no rows."))
    else:
        sec.add(build())


def _pm(mean: str, std: str) -> str:
    return mean if std == f.MISSING else f"{mean} ± {std}"


def _protocols(frame: pd.DataFrame) -> str:
    return ", ".join(sorted(set(frame["protocol"].astype(str))))


def _sem_section(sem: SemTables) -> Section:
    errors = sem.errors
    published = {(p.setup, p.method, p.metric): p for p in sc.PUBLISHED if p.study == "sem"}
    sec = Section("sem", "The linear SEM study (paper Section 5.1, Figure 3)")
    n_draws = sorted(set(errors["n_draws"].astype(int)))
    n_div = int(errors["n_diverged"].sum())
    sec.add(
        Note(
            f"Protocol {_protocols(errors)}. {', '.join(map(str, n_draws))} SEM draws per setup; "
            "ERM and ICP use all three environments, IRMv1 trains on the first two and selects "
            "λ on the third (e = 5). Errors are mean squared coefficient errors over the causal "
            "and the non-causal coordinates, in the unscrambled basis. "
            f"Diverged fits: {n_div} (counted per setup and method below, excluded from means)."
        )
    )
    _add_figure(
        sec,
        errors,
        "SEM errors",
        lambda: Figure(
            "fig-sem-errors",
            figures.to_svg(figures.plot_sem_errors(errors), "fsem"),
            "Figure 3 of the paper regenerated: mean causal (top) and non-causal (bottom) "
            "error per setup and method (IRMv1 at the λ selected on the third environment), "
            f"over {', '.join(map(str, n_draws))} SEM draws per setup; error bars are ± one "
            "standard deviation over draws (lower ends clipped at 10⁻⁶, the floor of the log "
            "axis, where zero errors are drawn). Black ticks: the reference code's means over "
            "200 draws.",
        ),
    )
    rows = []
    for _, r in errors.iterrows():
        comparable = r["protocol"] == sc.SEM_PROTOCOL
        cells = [r["setup"], METHOD_LABELS.get(r["method"], r["method"]), r["protocol"]]
        cells += [f.integer(r["n_draws"]), f.integer(r["n_diverged"])]
        for metric in ("causal_error", "noncausal_error"):
            cells.append(_pm(f.err(r[f"{metric}_mean"]), f.err(r[f"{metric}_std"])))
            p = published.get((r["setup"], r["method"], metric))
            cells.append(f.err(p.value) if (p and comparable) else f.MISSING)
        rows.append(cells)
    sec.add(
        Table(
            "sem-errors",
            "Errors per setup and method: ours (mean ± std over non-diverged draws) beside the "
            "reference code's mean (200 draws; shown only for rows of the same protocol).",
            ["setup", "method", "protocol", "draws", "diverged", "causal error",
             "reference", "non-causal error", "reference"],
            rows,
        )
    )  # fmt: skip

    sel = sem.selected_lambda
    lambdas = sorted(set(sel["lambda"].astype(float)))
    sel_rows = []
    for setup in dict.fromkeys(sel["setup"]):
        sub = sel[sel["setup"] == setup]
        counts = {float(k): int(v) for k, v in sub.groupby("lambda")["count"].sum().items()}
        sel_rows.append([setup, *[str(counts.get(lv, 0)) for lv in lambdas]])
    sec.add(
        Table(
            "sem-selected-lambda",
            "IRMv1: how often each λ = (1 − reg)/reg was selected (lowest MSE on the third "
            "environment), SEM draws per setup; ∞ is the penalty-only objective (reg = 0).",
            ["setup", *[f"λ = {f.lam(lv)}" for lv in lambdas]],
            sel_rows,
        )
    )
    sweep = sem.lambda_sweep.sort_values(["setup", "lambda"], kind="stable")
    sweep_draws = ", ".join(map(str, sorted(set(sweep["n_draws"].astype(int)))))
    _add_figure(
        sec,
        sweep,
        "IRMv1 λ sweep",
        lambda: Figure(
            "fig-sem-sweep",
            figures.to_svg(figures.plot_sem_lambda_sweep(sweep), "fsweep"),
            "IRMv1 causal and non-causal error at every λ of the grid (not only the selected "
            f"one), mean over {sweep_draws} SEM draws per setup with ± one standard deviation "
            "shaded; diverged fits excluded. λ = (1 − reg)/reg; ∞ is reg = 0.",
        ),
    )
    sec.add(
        Table(
            "sem-lambda-sweep",
            "IRMv1 errors at every λ (mean ± std over non-diverged draws).",
            ["setup", "λ", "draws", "diverged", "causal error", "non-causal error"],
            [
                [
                    r["setup"],
                    f.lam(r["lambda"]),
                    f.integer(r["n_draws"]),
                    f.integer(r["n_diverged"]),
                    _pm(f.err(r["causal_error_mean"]), f.err(r["causal_error_std"])),
                    _pm(f.err(r["noncausal_error_mean"]), f.err(r["noncausal_error_std"])),
                ]
                for _, r in sweep.iterrows()
            ],
        )
    )
    div = sem.draws[sem.draws["diverged"]]
    sec.add(
        Table(
            "sem-diverged",
            f"Diverged fits ({len(div)}): non-finite loss or parameters; stopped early and "
            "left out of every mean.",
            ["setup", "draw", "seed", "method", "λ", "diverged at step"],
            [
                [r["setup"], f.integer(r["draw"]), f.integer(r["seed"]),
                 METHOD_LABELS.get(r["method"], r["method"]), f.lam(r["lambda"]),
                 f.integer(r["diverged_step"])]
                for _, r in div.iterrows()
            ],
        )
    )  # fmt: skip
    return sec


def _anneal_steps(runs: pd.DataFrame) -> dict[str, float]:
    for col in ("penalty_anneal_steps", "anneal_steps"):
        if col in runs.columns:
            steps = runs.groupby("method")[col].max()
            return {m: float(s) for m, s in steps.items() if pd.notna(s) and s > 0}
    return {}


def _preset_note(runs: pd.DataFrame) -> str:
    if "preset" not in runs.columns:
        return ""
    presets = sorted(set(runs["preset"].astype(str)))
    text = f" Preset: {', '.join(presets)}."
    if presets != ["paper"]:
        text += (
            " This is not the paper's preset (fewer restarts, and for smoke runs fewer steps "
            "and images); the scorecard still compares it with the paper, and says so."
        )
    return text


def _cmnist_section(cm: CmnistTables) -> Section:
    acc = cm.accuracy
    published = {(p.method, p.metric): p for p in sc.PUBLISHED if p.study == "cmnist"}
    sec = Section("cmnist", "Colored MNIST (paper Section 5.2, Table 1)")
    n_div = int(acc["n_diverged"].sum())
    sec.add(
        Note(
            f"Protocol {_protocols(acc)}. Train accuracy is the mean over the two training "
            "environments (colour-flip probability 0.2 and 0.1), test accuracy is on the third "
            "(0.9), reported separately, never averaged with train. "
            f"Diverged restarts: {n_div} (listed below, excluded from means)."
            + _preset_note(cm.runs)
        )
    )
    rows = []
    for _, r in acc.iterrows():
        comparable = r["protocol"] == sc.CMNIST_PROTOCOL
        cells = [METHOD_LABELS.get(r["method"], r["method"]), r["protocol"], f.lam(r["lambda"])]
        cells += [f.integer(r["n_restarts"]), f.integer(r["n_diverged"])]
        for metric in ("train_acc", "test_acc"):
            mean, std = 100 * float(r[f"{metric}_mean"]), 100 * float(r[f"{metric}_std"])
            cells.append(_pm(f.points(mean), f.points(std)))
            p = published.get((r["method"], metric))
            if p and comparable:
                cells += [
                    _pm(f.points(p.value), f.points(p.spread)),
                    f.points(mean - p.value, True),
                ]
            else:
                cells += [f.MISSING, f.MISSING]
        rows.append(cells)
    for name, (train, test) in sc.CMNIST_REFERENCE_ROWS.items():
        blank = [f.MISSING] * 5
        rows.append(
            [name, *blank, f.points(train), f.MISSING, f.MISSING, f.points(test), f.MISSING]
        )
    sec.add(
        Table(
            "cmnist-table1",
            "Table 1 regenerated: accuracy (%) as mean ± std over non-diverged restarts "
            "(ddof = 0), the paper's value (mean ± std over 10 restarts) and our difference.",
            ["method", "protocol", "λ", "restarts", "diverged", "train (ours)",
             "train (paper)", "Δ train", "test (ours)", "test (paper)", "Δ test"],
            rows,
        )
    )  # fmt: skip
    sweep = cm.lambda_sweep.sort_values("lambda")
    restarts = ", ".join(map(str, sorted(set(sweep["n_restarts"].astype(int)))))
    _add_figure(
        sec,
        sweep,
        "Colored MNIST λ sweep",
        lambda: Figure(
            "fig-cmnist-sweep",
            figures.to_svg(figures.plot_cmnist_lambda_sweep(sweep), "fcsweep"),
            "IRMv1 train and test accuracy against the penalty weight λ (the paper's other "
            f"IRMv1 hyper-parameters), mean over {restarts} restarts per λ with ± one "
            "standard deviation as error bars; diverged restarts excluded. λ = 0 is IRMv1 "
            "without its penalty.",
        ),
    )
    sec.add(
        Table(
            "cmnist-lambda-sweep",
            "λ sweep: accuracy (%) as mean ± std over non-diverged restarts.",
            ["λ", "restarts", "diverged", "train", "test"],
            [
                [f.lam(r["lambda"]), f.integer(r["n_restarts"]), f.integer(r["n_diverged"]),
                 _pm(f.pct(r["train_acc_mean"]), f.pct(r["train_acc_std"])),
                 _pm(f.pct(r["test_acc_mean"]), f.pct(r["test_acc_std"]))]
                for _, r in sweep.iterrows()
            ],
        )
    )  # fmt: skip
    curves = cm.curves
    studies = list(dict.fromkeys(curves["study"]))
    study = next((s for s in studies if s in ("table1", "table")), studies[0] if studies else "")
    curves = curves[curves["study"] == study]
    anneal = _anneal_steps(cm.runs)
    n_curve = curves.groupby("method")["restart"].nunique()
    _add_figure(
        sec,
        curves,
        "training curves",
        lambda: Figure(
            "fig-cmnist-curves",
            figures.to_svg(figures.plot_cmnist_curves(curves, anneal), "fcurves"),
            f"Training curves of the {study} runs: per-environment accuracy, risk and penalty "
            "against the step, mean over "
            + ", ".join(f"{n} ({METHOD_LABELS.get(m, m)})" for m, n in n_curve.items())
            + " restarts with ± one standard deviation shaded. "
            + (
                "Dashed vertical line: the anneal step, after which the penalty weight is λ "
                + "("
                + ", ".join(f"{METHOD_LABELS.get(m, m)}: {s:g}" for m, s in anneal.items())
                + ")."
                if anneal
                else "No anneal step is recorded in runs.csv."
            ),
        ),
    )
    div = cm.runs[cm.runs["diverged"]]
    sec.add(
        Table(
            "cmnist-diverged",
            f"Diverged restarts ({len(div)}): non-finite loss or parameters; stopped early, "
            "left out of every mean.",
            ["method", "study", "λ", "restart", "seed", "diverged at step"],
            [
                [METHOD_LABELS.get(r["method"], r["method"]), r["study"], f.lam(r["lambda"]),
                 f.integer(r["restart"]), f.integer(r["seed"]), f.integer(r["diverged_step"])]
                for _, r in div.iterrows()
            ],
        )
    )  # fmt: skip
    return sec


def _examples_section(motivating: pd.DataFrame | None, minimal: MinimalTables | None) -> Section:
    top = Section("examples", "The motivating example (Section 1) and the appendix example")
    if motivating is not None:
        sec = Section("motivating-example", "The motivating example of the introduction")
        top.subsections.append(sec)
        ls = motivating[motivating["source"] == "least_squares"]
        irm = motivating[motivating["source"] == "irmv1"]
        n = ", ".join(map(str, sorted(set(ls["n_samples"].astype(int)))))
        sec.add(
            Note(
                "One environment per σ: X₁ ~ N(0, σ²), Y = X₁ + N(0, σ²), X₂ = Y + N(0, 1). "
                "Least squares gives α̂₁ = 1 on X₁ for every σ, α̂₂ = σ²/(σ² + ½) on X₂, and "
                "α̂ = (1/(σ² + 1), σ²/(σ² + 1)) on (X₁, X₂): only the first is invariant. "
                f"Protocol {_protocols(motivating)}."
            )
        )
        irm_sigmas = ", ".join(f"{s:g}" for s in dict.fromkeys(irm["sigma"]))
        sec.add(
            Figure(
                "fig-motivating",
                figures.to_svg(figures.plot_motivating(motivating), "fmot"),
                "Fitted coefficients against σ: closed forms (lines), least squares on "
                f"generated data (dots, n = {n} samples per σ, one draw each, so no error "
                f"bars), and IRMv1 (linear Φ, w = 1) trained on σ ∈ {{{irm_sigmas}}} "
                "(crosses; dotted: its coefficients).",
            )
        )
        rows = []
        for _, r in ls.iterrows():
            exact = closed_form(float(r["sigma"]), r["regression"])
            j = 0 if (r["regression"] != "x1x2" or r["feature"] == "x1") else 1
            rows.append([f"{r['sigma']:g}", r["regression"], r["feature"], f.coef(exact[j]),
                         f.coef(r["value"]), f.coef(r["value"] - exact[j])])  # fmt: skip
        seen = set()
        for _, r in irm.iterrows():
            if r["feature"] in seen:
                continue
            seen.add(r["feature"])
            target = 1.0 if r["feature"] == "x1" else 0.0
            rows.append([f"IRMv1 on {irm_sigmas}", "x1x2", r["feature"], f.coef(target),
                         f.coef(r["value"]), f.coef(r["value"] - target)])  # fmt: skip
        sec.add(
            Table(
                "motivating",
                "Least-squares coefficients: closed form, fit on generated data, difference; "
                "last rows: IRMv1's solution against the invariant (1, 0).",
                ["σ", "regressors", "coefficient of", "closed form", "fitted", "difference"],
                rows,
            )
        )
    if minimal is not None:
        sec = Section("minimal-example", "The appendix minimal example")
        top.subsections.append(sec)
        traj = minimal.trajectory
        phi_cols = sorted(c for c in traj.columns if c.startswith("phi_"))
        final = minimal.final.get("phi")
        usable = isinstance(final, list) and len(final) == len(phi_cols)
        if not usable or not all(isinstance(v, int | float) and math.isfinite(v) for v in final):
            finite = traj[np.isfinite(traj[phi_cols]).all(axis=1)]
            final = [float(finite[c].iloc[-1]) if len(finite) else math.nan for c in phi_cols]
        target = [1.0] * (len(phi_cols) // 2) + [0.0] * (len(phi_cols) - len(phi_cols) // 2)
        steps = minimal.final.get("steps", int(traj["step"].max()))
        seed = minimal.final.get("seed", "?")
        sec.add(
            Note(
                f"Protocol {_protocols(traj)}. Two environments, features (x, z) ∈ R⁴, "
                "φ trained by SGD with the split-batch IRMv1 penalty; the invariant solution "
                "is φ = (1, 1, 0, 0)."
            )
        )
        if minimal.final.get("diverged"):
            sec.add(
                Note(
                    f"This run diverged at step {minimal.final.get('diverged_step')} "
                    "(non-finite loss or φ) and stopped there; the final φ below is the "
                    "last finite one logged."
                )
            )
        sec.add(
            Figure(
                "fig-minimal",
                figures.to_svg(figures.plot_minimal_trajectory(traj), "fmin"),
                f"Appendix example: φ over {steps} SGD steps, one run (seed {seed}), so no "
                "error bars; dashed: 1 (x coordinates), dotted: 0 (z coordinates).",
            )
        )
        sec.add(
            Table(
                "minimal-final",
                "Final φ of the appendix example against the invariant solution.",
                ["coordinate", "final φ", "invariant", "difference"],
                [
                    [c, f.coef(v), f.coef(t), f.coef(v - t)]
                    for c, v, t in zip(phi_cols, final, target, strict=True)
                ],
            )
        )
    return top


def _scorecard_table(scores: list[sc.Score], study_notes: dict[str, str]) -> Table:
    """The scorecard; ``study_notes`` (study → text) is appended to that study's notes."""
    rows = []
    for s in scores:
        if s.status == "not run":
            continue
        p, o = s.published, s.ours
        fmt = f.points if p.study == "cmnist" else f.err
        diff_fmt = (lambda v: f.points(v, True)) if p.study == "cmnist" else f.signed_err
        pub = fmt(p.value) if p.spread is None else _pm(fmt(p.value), fmt(p.spread))
        ours = f.MISSING if o is None else _pm(fmt(o.mean), fmt(o.std))
        rows.append([
            "SEM" if p.study == "sem" else "CMNIST",
            p.setup or f.MISSING,
            METHOD_LABELS.get(p.method, p.method),
            METRIC_LABELS[p.metric],
            pub,
            ours,
            f.MISSING if o is None else str(o.n),
            diff_fmt(s.difference),
            fmt(s.tolerance) if s.tolerance is not None else f.MISSING,
            s.status,
            "; ".join(n for n in (s.note, study_notes.get(p.study, "")) if n),
        ])  # fmt: skip
    return Table(
        "scorecard",
        "One row per published number. Published: SEM from the reference code's committed "
        "results (no spread given), Colored MNIST from the paper's Table 1 (mean ± std). "
        "Ours: mean ± std over non-diverged draws / restarts (n). Metrics: mean causal and "
        "non-causal coefficient error (SEM), train and test accuracy in % (Colored MNIST).",
        ["study", "setup", "method", "metric", "published", "ours", "n", "difference",
         "tolerance", "reproduced", "note"],
        rows,
    )  # fmt: skip


def build_context(
    tables: ReportTables, provenance: Provenance, title: str = "irm-bench report"
) -> dict[str, Any]:
    """Everything the Jinja2 template needs, with figures numbered in reading order."""
    cfg = provenance.config
    scores = sc.build_scorecard(
        tables.sem.errors if tables.sem else None,
        tables.cmnist.accuracy if tables.cmnist else None,
    )
    head = sc.headline(scores)
    sections = []
    disabled = []
    if tables.sem is not None:
        sections.append(_sem_section(tables.sem))
    else:
        disabled.append("The SEM study was not run (sem.enabled is false); its section and "
                        "scorecard rows are left out.")  # fmt: skip
    if tables.cmnist is not None:
        sections.append(_cmnist_section(tables.cmnist))
    else:
        disabled.append("Colored MNIST was not run (cmnist.enabled is false); its section and "
                        "scorecard rows are left out.")  # fmt: skip
    if tables.motivating is not None or tables.minimal is not None:
        sections.append(_examples_section(tables.motivating, tables.minimal))
    if tables.minimal is None:
        disabled.append("The appendix minimal example was not run (minimal.enabled is false).")
    counts = {"figure": 0, "table": 0}
    for sec in sections:
        for block in sec.walk():
            if block.kind in counts:
                counts[block.kind] += 1
                block.number = counts[block.kind]

    study_notes = {}
    if tables.cmnist is not None and "preset" in tables.cmnist.runs.columns:
        presets = sorted(set(tables.cmnist.runs["preset"].astype(str)) - {"paper"})
        if presets:
            study_notes["cmnist"] = f"preset {', '.join(presets)}"
    scorecard = _scorecard_table(scores, study_notes) if scores else None
    if scorecard is not None:
        scorecard.number = counts["table"] + 1

    summary = []
    if tables.sem is not None:
        s = cfg.get("sem", {})
        grid = s.get("irmv1", {}).get("reg_grid", [])
        lams = ", ".join(f.lam(math.inf if r == 0 else (1 - r) / r) for r in grid)
        summary.append(
            ("SEM (Section 5.1)",
             f"setups {', '.join(s.get('setups', []))}; methods "
             f"{', '.join(METHOD_LABELS.get(m, m) for m in s.get('methods', []))}; "
             f"{s.get('n_draws')} draws per setup, base seed {s.get('seed')}; IRMv1 λ grid "
             f"{{{lams}}}, {s.get('irmv1', {}).get('steps')} Adam steps; device "
             f"setting {cfg.get('device')}")
        )  # fmt: skip
    if tables.cmnist is not None:
        c = cfg.get("cmnist", {})
        devices = ", ".join(sorted(set(tables.cmnist.runs["device"].astype(str))))
        lams = ", ".join(f.lam(v) for v in sorted(set(tables.cmnist.lambda_sweep["lambda"])))
        restarts = ", ".join(map(str, sorted(set(tables.cmnist.accuracy["n_restarts"]))))
        summary.append(
            ("Colored MNIST (Section 5.2)",
             f"preset {c.get('preset')}; methods "
             f"{', '.join(METHOD_LABELS.get(m, m) for m in c.get('methods', []))}; "
             f"{restarts} restarts per method, base seed {c.get('seed')}; λ grid {{{lams}}}; "
             f"device(s) recorded: {devices}")
        )  # fmt: skip
    if tables.minimal is not None:
        m = cfg.get("minimal", {})
        summary.append(("Appendix example", f"{m.get('steps')} SGD steps, seed {m.get('seed')}"))
    for st in provenance.studies:
        summary.append(
            (f"time: {st.study}",
             f"{f.seconds(st.job_seconds)} of job time over {st.n_jobs} jobs, "
             f"{f.seconds(st.span_seconds)} from first start to last end")
        )  # fmt: skip

    return {
        "title": title,
        "generated": provenance.end.strftime("%Y-%m-%d %H:%M UTC"),
        "headline": head,
        "summary": summary,
        "disabled": disabled,
        "sections": sections,
        "scorecard": scorecard,
        "tolerance_rule": sc.TOLERANCE_RULE_TEXT,
        "provenance": _provenance_context(provenance),
    }


def _provenance_context(p: Provenance) -> dict[str, Any]:
    def ts(t: dt.datetime | None) -> str:
        return t.strftime("%Y-%m-%d %H:%M:%S UTC") if t else "unknown (no benchmark files)"

    git = p.git
    dirty = "unknown" if git.dirty is None else ("yes" if git.dirty else "no")
    return {
        "git_commit": git.commit or "unknown (not a git checkout)",
        "git_dirty": dirty,
        "git_changed": list(git.changed),
        "config_hash": p.config_hash,
        "config_yaml": yaml.safe_dump(
            p.config, sort_keys=False, allow_unicode=True, default_flow_style=None, width=88
        ),
        "packages": sorted(p.packages.items()),
        "machine": list(p.machine.items()),
        "start": ts(p.start),
        "end": ts(p.end),
        "benchmarks": Table(
            "benchmarks",
            "Per-job run times from Snakemake's benchmark files (wall-clock seconds, "
            "peak resident memory).",
            ["study", "job", "seconds", "max RSS (MB)"],
            [
                [
                    b.study,
                    b.job,
                    f"{b.seconds:.2f}",
                    f.MISSING if b.max_rss_mb is None else f"{b.max_rss_mb:.0f}",
                ]
                for b in p.benchmarks
            ],
        ),
        "checksums": p.checksums,
        "devices": sorted(p.devices.items()),
    }
