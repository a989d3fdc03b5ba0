"""Build the template context of the report from the tables (numbers, figures, captions).

Sections follow the paper: summary, SEM study (Section 5.1), Colored MNIST (Section
5.2), the motivating example (Example 1, Section 2) and the appendix minimal example, the
reproduction scorecard, and provenance. Every printed number goes through
:mod:`irm_bench.report.formatting`.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

import numpy as np
import pandas as pd
import yaml

from irm_bench import scorecard as sc
from irm_bench.appendix.motivating import closed_form
from irm_bench.cmnist.selection import CMNIST_NO_LEAVE_ONE_OUT, DOMAINBED_ERM
from irm_bench.provenance import Provenance
from irm_bench.report import figures
from irm_bench.report import formatting as f
from irm_bench.report.blocks import Figure, Note, Section, Table, plus_minus, protocols_of
from irm_bench.report.selection import selection_section
from irm_bench.report.studies import _cmnist_section, _sem_section
from irm_bench.report.tables import MinimalTables, ReportTables
from irm_bench.selection import RULES
from irm_bench.sem.study import SEM_NO_LEAVE_ONE_OUT

METHOD_LABELS = figures.METHOD_LABELS
method_label = figures.method_label
METRIC_LABELS = {
    "causal_error": "causal",
    "noncausal_error": "non-causal",
    "train_acc": "train %",
    "test_acc": "test %",
    "gray_test_acc": "gray test %",
}


def _examples_section(motivating: pd.DataFrame | None, minimal: MinimalTables | None) -> Section:
    top = Section(
        "examples", "The motivating example (Example 1, Section 2) and the appendix example"
    )
    if motivating is not None:
        sec = Section("motivating-example", "The motivating example (Example 1)")
        top.subsections.append(sec)
        ls = motivating[motivating["source"] == "least_squares"]
        irm = motivating[motivating["source"] == "irmv1"]
        n = ", ".join(map(str, sorted(set(ls["n_samples"].astype(int)))))
        sec.add(
            Note(
                "One environment per σ: X₁ ~ N(0, σ²), Y = X₁ + N(0, σ²), X₂ = Y + N(0, 1). "
                "Least squares gives α̂₁ = 1 on X₁ for every σ, α̂₂ = σ²/(σ² + ½) on X₂, and "
                "α̂ = (1/(σ² + 1), σ²/(σ² + 1)) on (X₁, X₂): only the first is invariant. "
                f"Protocol {protocols_of(motivating)}."
            )
        )
        irm_sigmas = ", ".join(f"{s:g}" for s in dict.fromkeys(irm["sigma"]))
        paper_sigma2 = [10.0, 20.0]
        if not irm.empty and sorted(round(s * s, 9) for s in set(irm["sigma"])) != paper_sigma2:
            sec.add(
                Note(
                    f"IRMv1 is trained on σ ∈ {{{irm_sigmas}}}, not on the paper's "
                    "σ² ∈ {10, 20}: there the two environments' penalty curves differ by "
                    "only 0.05·φ₂² near (1, 0), and IRMv1 on 10,000 samples per environment "
                    "ends far from it (irm_bench/appendix/motivating.py gives the numbers)."
                )
            )
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
                f"Protocol {protocols_of(traj)}. Two environments, features (x, z) ∈ R⁴, "
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


#: Study cell of the scorecard's Colored MNIST rows, by protocol tag.
_CMNIST_TABLES = {sc.CMNIST_TABLE2_PROTOCOL: "CMNIST (Fishr T2)"}


def _scorecard_table(scores: list[sc.Score], study_notes: dict[str, str]) -> Table:
    """The scorecard; ``study_notes`` (study → text) is appended to that study's notes."""
    rows = []
    for s in scores:
        if s.status == "not run":
            continue
        p, o = s.published, s.ours
        fmt = f.points if p.study == "cmnist" else f.err
        diff_fmt = (lambda v: f.points(v, True)) if p.study == "cmnist" else f.signed_err
        pub = fmt(p.value) if p.spread is None else plus_minus(fmt(p.value), fmt(p.spread))
        ours = f.MISSING if o is None else plus_minus(fmt(o.mean), fmt(o.std))
        rows.append([
            "SEM" if p.study == "sem" else _CMNIST_TABLES.get(p.protocol, "CMNIST"),
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
        "results (no spread given), Colored MNIST from the paper's Table 1 and the Fishr "
        "paper's Table 2, IRM setup (CMNIST (Fishr T2); mean ± std). "
        "Ours: mean ± std over non-diverged draws / restarts (n). Metrics: mean causal and "
        "non-causal coefficient error (SEM), train, test and gray-test accuracy in % "
        "(Colored MNIST).",
        ["study", "setup", "method", "metric", "published", "ours", "n", "difference",
         "tolerance", "reproduced", "note"],
        rows,
    )  # fmt: skip


def _sem_grid_text(method: str, section: dict) -> str:
    """``IRMv1 λ grid {∞, 999}, 100000 Adam steps``: one SEM method's grid from the config
    (IRMv1's reg as λ = (1 − reg)/reg; others their ``<name>_grid``); "" without one."""
    block = section.get(method) or {}
    if "reg_grid" in block:
        values = [math.inf if r == 0 else (1 - r) / r for r in block["reg_grid"]]
        name = "λ"
    else:
        key = next((k for k in block if k.endswith("_grid")), None)
        if key is None:
            return ""
        values = block[key]
        name = {"lambda_grid": "λ", "eta_grid": "η"}.get(key, key.removesuffix("_grid"))
    grid = ", ".join(f.lam(v) for v in values)
    return f"{method_label(method)} {name} grid {{{grid}}}, {block.get('steps')} Adam steps"


#: Which rule each study's published comparison uses (stated in its selection section).
SEM_PUBLISHED_RULE = (
    "Figure 4's reference values and the scorecard use last_environment under "
    "irm-paper-sem, the reference code's rule (fits on all samples, per draw the grid point "
    "with the lowest MSE on the third environment). Leave-one-out is not run: "
    + SEM_NO_LEAVE_ONE_OUT
    + "."
)
CMNIST_PUBLISHED_RULE = (
    "Table 1's hyper-parameters were chosen with access to the test environment (as "
    "DomainBed, Gulrajani & Lopez-Paz 2021, notes of the IRM paper's Colored "
    "MNIST search): it is test-domain-selected, comparable with the test_domain column "
    "only; the scorecard compares Table 1 as trained. Each restart "
    "chooses its own setting (IRMv1: a point of its λ sweep; other methods have one "
    "setting). Values: accuracy (%) on test_rest, the test environment alone. "
    "Leave-one-out is not run: " + CMNIST_NO_LEAVE_ONE_OUT + "."
)
#: DomainBed's Colored MNIST ERM, a different protocol: a reference line, never scored.
CMNIST_DOMAINBED_REFERENCE = (
    "Cross-protocol reference, not comparable and not scored against the rows above: "
    "DomainBed's Colored MNIST ERM (its own network and random hyper-parameter search, "
    "accuracy averaged over its three test environments, as the Fishr authors' README "
    "lists it) is "
    + " and ".join(
        f"{m:.1f} ± {s:.1f} % under {RULES[rule].label} ({rule})"
        for rule, (m, s) in DOMAINBED_ERM.items()
    )
    + "."
)
UNIT_TESTS_PUBLISHED_RULE = (
    "Aubin et al. (2021)'s numbers are compared with training_domain only, their rule "
    "(the trial with the lowest validation error summed over training environments, "
    "averaged over data seeds). Leave-one-out is not run (it would retrain every model "
    "once per environment)."
)


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
        if "sem" in tables.selection:
            sections[-1].subsections.append(
                selection_section("sem", tables.selection["sem"], SEM_PUBLISHED_RULE)
            )
    else:
        disabled.append("The SEM study was not run (sem.enabled is false); its section and "
                        "scorecard rows are left out.")  # fmt: skip
    if tables.cmnist is not None:
        sections.append(_cmnist_section(tables.cmnist))
        if "cmnist" in tables.selection:
            sections[-1].subsections.append(
                selection_section(
                    "cmnist",
                    tables.selection["cmnist"],
                    CMNIST_PUBLISHED_RULE,
                    reference=CMNIST_DOMAINBED_REFERENCE,
                )
            )
    else:
        disabled.append("Colored MNIST was not run (cmnist.enabled is false); its section and "
                        "scorecard rows are left out.")  # fmt: skip
    if tables.motivating is not None or tables.minimal is not None:
        sections.append(_examples_section(tables.motivating, tables.minimal))
    if tables.minimal is None:
        disabled.append("The appendix minimal example was not run (minimal.enabled is false).")
    if tables.unit_tests is not None:
        from irm_bench.unit_tests.report import unit_tests_section

        sections.append(unit_tests_section(tables.unit_tests))
        if "unit_tests" in tables.selection:
            sections[-1].subsections.append(
                selection_section(
                    "unit_tests", tables.selection["unit_tests"], UNIT_TESTS_PUBLISHED_RULE
                )
            )
    counts = {"figure": 0, "table": 0}
    for sec in sections:
        for block in sec.walk():
            if block.kind in counts:
                counts[block.kind] += 1
                block.number = counts[block.kind]

    study_notes = {}
    if tables.cmnist is not None and "preset" in tables.cmnist.runs.columns:
        # paper and methods are the published protocols (IRM Table 1, Fishr Table 2)
        presets = sorted(set(tables.cmnist.runs["preset"].astype(str)) - {"paper", "methods"})
        runs = tables.cmnist.runs
        reduced = set(runs["precision"].astype(str)) - {"fp32"} if "precision" in runs else set()
        notes = [f"preset {', '.join(presets)}"] if presets else []
        notes += [f"{p} precision option" for p in sorted(reduced)]
        if notes:
            study_notes["cmnist"] = "; ".join(notes)
    scorecard = _scorecard_table(scores, study_notes) if scores else None
    if scorecard is not None:
        scorecard.number = counts["table"] + 1

    summary = []
    if tables.sem is not None:
        s = cfg.get("sem", {})
        grids = "; ".join(filter(None, (_sem_grid_text(m, s) for m in s.get("methods", []))))
        summary.append(
            ("SEM (Section 5.1)",
             f"setups {', '.join(s.get('setups', []))}; methods "
             f"{', '.join(method_label(m) for m in s.get('methods', []))}; "
             f"{s.get('n_draws')} draws per setup, base seed {s.get('seed')}; {grids}; "
             f"device setting {cfg.get('device')}")
        )  # fmt: skip
    if tables.cmnist is not None:
        c = cfg.get("cmnist", {})
        devices = ", ".join(sorted(set(tables.cmnist.runs["device"].astype(str))))
        runs = tables.cmnist.runs
        precisions = sorted(set(runs["precision"].astype(str))) if "precision" in runs else []
        devices += f"; precision: {', '.join(precisions or ['fp32'])}"
        lams = ", ".join(f.lam(v) for v in sorted(set(tables.cmnist.lambda_sweep["lambda"])))
        grid = f"λ grid {{{lams}}}" if lams else "no λ sweep"
        restarts = ", ".join(map(str, sorted(set(tables.cmnist.accuracy["n_restarts"]))))
        cm_methods = dict.fromkeys(tables.cmnist.accuracy["method"])
        summary.append(
            ("Colored MNIST (Section 5.2)",
             f"preset {c.get('preset')}; methods "
             f"{', '.join(method_label(m) for m in cm_methods)}; "
             f"{restarts} restarts per method, base seed {c.get('seed')}; {grid}; "
             f"device(s) recorded: {devices}")
        )  # fmt: skip
    if tables.unit_tests is not None:
        from irm_bench.unit_tests.report import summary_line

        summary.append(summary_line(tables.unit_tests))
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
