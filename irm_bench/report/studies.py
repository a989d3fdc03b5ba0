"""The report's two study sections: the linear SEM (paper Section 5.1) and Colored
MNIST (Section 5.2), built from their tables."""

from __future__ import annotations

import pandas as pd

from irm_bench import scorecard as sc
from irm_bench.cmnist.presets import method_label
from irm_bench.envs.cmnist import SELECTION_ENVS
from irm_bench.report import figures
from irm_bench.report import formatting as f
from irm_bench.report.blocks import (
    Figure,
    Note,
    Section,
    Table,
    add_figure,
    plus_minus,
    protocols_of,
)
from irm_bench.report.tables import CmnistTables, SemTables

METHOD_LABELS = figures.METHOD_LABELS

#: The O/E convention of the setup codes, stated in the SEM section (tests read it).
SEM_CONVENTION = (
    "Setup codes use the reference code's O/E labels, which are swapped relative to the "
    "paper's text: E means σ_y² = e², σ₂² = 1 (Y's noise scales with the environment, the "
    "code's hetero=1) and O means σ_y² = 1, σ₂² = e²."
)

#: Where the SEM follows the reference code rather than the paper's text (README list).
SEM_CODE_NOT_TEXT = (
    "As in the reference code and unlike the paper's text: in the F setups W_hx = I (not "
    "0), so x has variance 2e²; x, z and the confounder h are 5-dimensional each (not 10); "
    "y is a 5-dimensional vector whose sum is the target, with z built from y coordinate by "
    "coordinate; the non-causal error is the mean squared error over the non-causal "
    "coordinates (not the norm of M̂_{y→2})."
)

#: Said where a run has no Colored MNIST λ sweep (preset ``methods``, ``sweep_restarts: 0``).
NO_CMNIST_SWEEP = (
    "No λ sweep in this run: IRMv1 trains at the paper's λ only. Preset paper "
    "sweeps 9 values of λ with 10 restarts each; the config keys cmnist.lambda_grid and "
    "cmnist.sweep_restarts set a sweep for any preset."
)


def _grid_point(name: str, value: float) -> str:
    """``λ = 99999``, ``η = 0.1``: one SEM grid point as a table cell."""
    return f"{_SYMBOLS.get(name, name)} = {f.lam(value)}"


_SYMBOLS = {"lambda": "λ", "eta": "η"}


def _sem_section(sem: SemTables) -> Section:
    errors = sem.errors
    published = {(p.setup, p.method, p.metric): p for p in sc.PUBLISHED if p.study == "sem"}
    sec = Section("sem", "The linear SEM study (paper Section 5.1, Figure 4)")
    n_draws = sorted(set(errors["n_draws"].astype(int)))
    n_div = int(errors["n_diverged"].sum())
    sec.add(
        Note(
            f"Protocol {protocols_of(errors)}. "
            f"{', '.join(map(str, n_draws))} SEM draws per setup; "
            "ERM and ICP use all three environments; the gradient methods (IRMv1 and every "
            "other registered one) train on the first two and select their grid point (λ, "
            "or GroupDRO's η) on the third (e = 5). Errors are mean squared coefficient errors "
            "over the causal and the non-causal coordinates, in the unscrambled basis. "
            f"Diverged fits: {n_div} (counted per setup and method below, excluded from means)."
        )
    )
    sec.add(Note(f"{SEM_CONVENTION} {SEM_CODE_NOT_TEXT}"))
    unpublished = [
        figures.method_label(m)
        for m in dict.fromkeys(errors["method"])
        if not any(k[1] == m for k in published)
    ]
    if unpublished:
        sec.add(
            Note(
                f"No published numbers exist for {', '.join(unpublished)} in this study: the "
                "IRM paper and its reference code report ERM, ICP and IRMv1 only, so these rows "
                "have no reference value and no scorecard entry."
            )
        )
    add_figure(
        sec,
        errors,
        "SEM errors",
        lambda: Figure(
            "fig-sem-errors",
            figures.to_svg(figures.plot_sem_errors(errors), "fsem"),
            "Figure 4 of the paper regenerated: mean causal (top) and non-causal (bottom) "
            "error per setup and method (gradient methods at the grid point selected on the "
            "third environment), "
            f"over {', '.join(map(str, n_draws))} SEM draws per setup; error bars are ± one "
            "standard deviation over draws (lower ends clipped at 10⁻⁶, the floor of the log "
            "axis, where zero errors are drawn). Black ticks: the reference code's means over "
            "200 draws.",
        ),
    )
    rows = []
    for _, r in errors.iterrows():
        comparable = r["protocol"] == sc.SEM_PROTOCOL
        cells = [r["setup"], figures.method_label(r["method"]), r["protocol"]]
        cells += [f.integer(r["n_draws"]), f.integer(r["n_diverged"])]
        for metric in ("causal_error", "noncausal_error"):
            cells.append(plus_minus(f.err(r[f"{metric}_mean"]), f.err(r[f"{metric}_std"])))
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
    if "method" not in sel:  # tables of IRMv1 alone, written before the method column
        sel = sel.assign(method="irmv1", hparam="lambda", hparam_value=sel["lambda"])
    for method in dict.fromkeys(sel["method"]):
        msel = sel[sel["method"] == method]
        name = str(msel["hparam"].iloc[0])
        symbol = _SYMBOLS.get(name, name)
        values = list(dict.fromkeys(msel["hparam_value"].astype(float)))
        sel_rows = []
        for setup in dict.fromkeys(msel["setup"]):
            sub = msel[msel["setup"] == setup]
            counts = {
                float(k): int(v) for k, v in sub.groupby("hparam_value")["count"].sum().items()
            }
            sel_rows.append([setup, *[str(counts.get(v, 0)) for v in values]])
        how = (
            "λ = (1 − reg)/reg; ∞ is the penalty-only objective (reg = 0)"
            if method == "irmv1"
            else f"its own {symbol} grid (sem.{method} in the config)"
        )
        sec.add(
            Table(
                f"sem-selected-{method}",
                f"{figures.method_label(method)}: how often each {symbol} was selected (lowest "
                f"MSE on the third environment), SEM draws per setup; {how}.",
                ["setup", *[f"{symbol} = {f.lam(v)}" for v in values]],
                sel_rows,
            )
        )
    sweep = sem.lambda_sweep
    if "method" not in sweep:
        sweep = sweep.assign(method="irmv1", hparam="lambda", hparam_value=sweep["lambda"])
    # Rows per method (table order), then setup, then grid order as written.
    order = {m: k for k, m in enumerate(dict.fromkeys(sweep["method"]))}
    sweep = sweep.sort_values("method", key=lambda m: m.map(order), kind="stable")
    sweep_draws = ", ".join(map(str, sorted(set(sweep["n_draws"].astype(int)))))
    add_figure(
        sec,
        sweep,
        "SEM grid sweeps",
        lambda: Figure(
            "fig-sem-sweep",
            figures.to_svg(figures.plot_sem_lambda_sweep(sweep), "fsweep"),
            "Causal and non-causal error of each gradient method at every point of its grid "
            f"(not only the selected one), mean over {sweep_draws} SEM draws per setup with ± "
            "one standard deviation shaded; diverged fits excluded. IRMv1: λ = (1 − reg)/reg, "
            "∞ is reg = 0; GroupDRO's grid is its step size η.",
        ),
    )
    sec.add(
        Table(
            "sem-lambda-sweep",
            "Errors of each gradient method at every grid point (mean ± std over non-diverged "
            "draws).",
            ["setup", "method", "grid point", "draws", "diverged", "causal error",
             "non-causal error"],
            [
                [
                    r["setup"],
                    figures.method_label(r["method"]),
                    _grid_point(r["hparam"], r["hparam_value"]),
                    f.integer(r["n_draws"]),
                    f.integer(r["n_diverged"]),
                    plus_minus(f.err(r["causal_error_mean"]), f.err(r["causal_error_std"])),
                    plus_minus(f.err(r["noncausal_error_mean"]), f.err(r["noncausal_error_std"])),
                ]
                for _, r in sweep.iterrows()
            ],
        )
    )  # fmt: skip
    div = sem.draws[sem.draws["diverged"]]
    sec.add(
        Table(
            "sem-diverged",
            f"Diverged fits ({len(div)}): non-finite loss or parameters; stopped early and "
            "left out of every mean.",
            ["setup", "draw", "seed", "method", "λ", "diverged at step"],
            [
                [r["setup"], f.integer(r["draw"]), f.integer(r["seed"]),
                 figures.method_label(r["method"]), f.lam(r["lambda"]),
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
    if set(presets) - {"paper", "methods"}:  # the two published protocols
        text += (
            " This is not the paper's preset (fewer restarts, and for smoke runs fewer steps "
            "and images); the scorecard still compares it with the paper, and says so."
        )
    precisions = sorted(set(runs["precision"].astype(str))) if "precision" in runs else []
    if set(precisions) - {"fp32"}:
        text += (
            f" Precision: {', '.join(precisions)}. bf16 rows train the MLP's matmuls under "
            "bfloat16 autocast (an option, not the protocol's float32); their method names "
            "carry '(bf16)'."
        )
    return text


def _cm_label(r: pd.Series) -> str:
    """Method name of a Colored MNIST table row, with its precision when not fp32."""
    precision = str(r.get("precision", "fp32"))
    suffix = "" if precision in ("fp32", "nan") else f" ({precision})"
    return method_label(r["method"]) + suffix


def _acc_cells(r: pd.Series, metric: str, p: sc.Published | None) -> list[str]:
    """Ours (mean ± std in %), and the published value and our difference when ``p``."""
    mean, std = (
        100 * float(r.get(f"{metric}_mean", float("nan"))),
        100 * float(r.get(f"{metric}_std", float("nan"))),
    )
    cells = [plus_minus(f.points(mean), f.points(std))]
    if p is None:
        return [*cells, f.MISSING, f.MISSING]
    return [
        *cells,
        plus_minus(f.points(p.value), f.points(p.spread)),
        f.points(mean - p.value, True),
    ]


def _cmnist_table2(sec: Section, acc: pd.DataFrame) -> None:
    """The Fishr paper's Table 2 block: rows of its protocol tag, every method of the data."""
    published = {
        (p.method, p.metric): p
        for p in sc.PUBLISHED
        if p.study == "cmnist" and p.protocol == sc.CMNIST_TABLE2_PROTOCOL
    }
    rows = acc[acc["protocol"] == sc.CMNIST_TABLE2_PROTOCOL]
    with_number = {m for m, _ in published}
    missing = [method_label(m) for m in dict.fromkeys(rows["method"]) if m not in with_number]
    sec.add(
        Note(
            'Fishr paper (Ramé, Dancette, Cord 2022, Section 6.A), Table 2, "IRM setup": '
            "every method with IRMv1's hyper-parameters (hidden 390, l2 0.00110794568, lr "
            "0.000489854, λ = 91257.19 after 190 anneal steps, loss divided by λ, 501 steps), "
            "protocol tag "
            f"{sc.CMNIST_TABLE2_PROTOCOL}. Gray test: the test environment with the digit in "
            "both colour channels. Published values: mean ± std over 10 restarts."
            + (
                f" No published number exists in that table for: {', '.join(missing)}."
                if missing
                else ""
            )
        )
    )
    table_rows = []
    for _, r in rows.iterrows():
        cells = [_cm_label(r), f.lam(r["lambda"])]
        cells += [f.integer(r["n_restarts"]), f.integer(r["n_diverged"])]
        for metric in ("train_acc", "test_acc", "gray_test_acc"):
            cells += _acc_cells(r, metric, published.get((r["method"], metric)))
        table_rows.append(cells)
    sec.add(
        Table(
            "cmnist-table2",
            "Fishr paper's Table 2 (IRM setup) regenerated: accuracy (%) as mean ± std over "
            "non-diverged restarts (ddof = 0), the published value and our difference.",
            ["method", "λ", "restarts", "diverged", "train (ours)", "train (Fishr)",
             "Δ train", "test (ours)", "test (Fishr)", "Δ test", "gray test (ours)",
             "gray test (Fishr)", "Δ gray test"],
            table_rows,
        )
    )  # fmt: skip


def _cmnist_sweep(sec: Section, sweep: pd.DataFrame) -> None:
    """The λ sweep's figure and table, or one note when the run has no sweep."""
    if sweep.empty:
        sec.add(Note(NO_CMNIST_SWEEP))
        return
    sweep = sweep.sort_values("lambda")
    restarts = ", ".join(map(str, sorted(set(sweep["n_restarts"].astype(int)))))
    sec.add(
        Figure(
            "fig-cmnist-sweep",
            figures.to_svg(figures.plot_cmnist_lambda_sweep(sweep), "fcsweep"),
            "IRMv1 train and test accuracy against the penalty weight λ (the paper's other "
            f"IRMv1 hyper-parameters), mean over {restarts} restarts per λ with ± one "
            "standard deviation as error bars; diverged restarts excluded. λ = 0 is IRMv1 "
            "without its penalty.",
        )
    )
    sec.add(
        Table(
            "cmnist-lambda-sweep",
            "λ sweep: accuracy (%) as mean ± std over non-diverged restarts.",
            ["method", "λ", "restarts", "diverged", "train", "test"],
            [
                [method_label(r.get("method", "irmv1")), f.lam(r["lambda"]),
                 f.integer(r["n_restarts"]), f.integer(r["n_diverged"]),
                 plus_minus(f.pct(r["train_acc_mean"]), f.pct(r["train_acc_std"])),
                 plus_minus(f.pct(r["test_acc_mean"]), f.pct(r["test_acc_std"]))]
                for _, r in sweep.iterrows()
            ],
        )
    )  # fmt: skip


def _cmnist_section(cm: CmnistTables) -> Section:
    acc = cm.accuracy
    published = {
        (p.method, p.metric): p
        for p in sc.PUBLISHED
        if p.study == "cmnist" and p.protocol == sc.CMNIST_PROTOCOL
    }
    sec = Section("cmnist", "Colored MNIST (paper Section 5.2, Table 1; Fishr paper Table 2)")
    n_div = int(acc["n_diverged"].sum())
    sec.add(
        Note(
            f"Protocol {protocols_of(acc)}. Train accuracy is the mean over the two training "
            "environments (colour-flip probability 0.2 and 0.1), test accuracy is on the third "
            "(0.9), reported separately, never averaged with train. "
            f"Diverged restarts: {n_div} (listed below, excluded from means). "
            "The preliminary label is 1 for digits 0–4, as in the reference code (the paper's "
            "text has 0; the mirror labelling leaves every accuracy unchanged)."
            + _preset_note(cm.runs)
        )
    )
    rows = []
    for _, r in acc[acc["protocol"] != sc.CMNIST_TABLE2_PROTOCOL].iterrows():
        comparable = r["protocol"] == sc.CMNIST_PROTOCOL
        cells = [_cm_label(r), r["protocol"], f.lam(r["lambda"])]
        cells += [f.integer(r["n_restarts"]), f.integer(r["n_diverged"])]
        for metric in ("train_acc", "test_acc"):
            p = published.get((r["method"], metric)) if comparable else None
            cells += _acc_cells(r, metric, p)
        cells += _acc_cells(r, "gray_test_acc", None)[:1]
        rows.append(cells)
    for name, (train, test) in sc.CMNIST_REFERENCE_ROWS.items():
        blank = [f.MISSING] * 5
        rows.append(
            [name, *blank, f.points(train), f.MISSING, f.MISSING, f.points(test), f.MISSING,
             f.MISSING]
        )  # fmt: skip
    sec.add(
        Table(
            "cmnist-table1",
            "Table 1 regenerated: accuracy (%) as mean ± std over non-diverged restarts "
            "(ddof = 0), the paper's value (mean ± std over 10 restarts) and our difference; "
            "gray test (not in the paper): the test environment with the digit in both "
            "colour channels.",
            ["method", "protocol", "λ", "restarts", "diverged", "train (ours)",
             "train (paper)", "Δ train", "test (ours)", "test (paper)", "Δ test",
             "gray test (ours)"],
            rows,
        )
    )  # fmt: skip
    _cmnist_table2(sec, acc)
    _cmnist_sweep(sec, cm.lambda_sweep)
    curves = cm.curves
    studies = list(dict.fromkeys(curves["study"]))
    study = next((s for s in studies if s in ("table1", "table")), studies[0] if studies else "")
    # the model-selection environments have their own subsection (a table, no curves)
    curves = curves[(curves["study"] == study) & ~curves["environment"].isin(SELECTION_ENVS)]
    anneal = _anneal_steps(cm.runs)
    n_curve = curves.groupby("method")["restart"].nunique()
    add_figure(
        sec,
        curves,
        "training curves",
        lambda: Figure(
            "fig-cmnist-curves",
            figures.to_svg(figures.plot_cmnist_curves(curves, anneal), "fcurves"),
            f"Training curves of the {study} runs: per-environment accuracy, risk and penalty "
            "against the step, mean over "
            + ", ".join(f"{n} ({method_label(m)})" for m, n in n_curve.items())
            + " restarts with ± one standard deviation shaded. "
            + (
                "Dashed vertical line: the anneal step, after which the penalty weight is λ "
                + "("
                + ", ".join(f"{method_label(m)}: {s:g}" for m, s in anneal.items())
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
                [method_label(r["method"]), r["study"], f.lam(r["lambda"]),
                 f.integer(r["restart"]), f.integer(r["seed"]), f.integer(r["diverged_step"])]
                for _, r in div.iterrows()
            ],
        )
    )  # fmt: skip
    return sec
