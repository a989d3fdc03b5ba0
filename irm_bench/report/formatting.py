"""How numbers are printed in the report (one place, so tests can parse them back).

Every printed number is a plain decimal or ``e`` notation that ``float()`` reads, except
``∞`` (an infinite λ) and ``—`` (no value). Each formatter keeps enough digits that the
printed value is within half a unit of its last digit of the table's value.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from irm_bench.report.figures import lambda_label

MISSING = "—"


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def err(value: Any) -> str:
    """A SEM error (mean squared coefficient error): 3 significant digits."""
    if _missing(value):
        return MISSING
    return "0" if float(value) == 0 else f"{float(value):.3g}"


def pct(fraction: Any) -> str:
    """An accuracy given as a fraction, printed in % with one decimal."""
    return MISSING if _missing(fraction) else f"{100.0 * float(fraction):.1f}"


def points(value: Any, signed: bool = False) -> str:
    """A value already in % (or points), one decimal; ``signed`` adds ``+``."""
    if _missing(value):
        return MISSING
    text = f"{float(value):.1f}"
    if text in ("0.0", "-0.0"):
        return "0.0"  # no sign on a difference that rounds to zero
    return f"{float(value):+.1f}" if signed else text


def signed_err(value: Any) -> str:
    """A signed SEM error difference, 3 significant digits."""
    if _missing(value):
        return MISSING
    return "0" if float(value) == 0 else f"{float(value):+.3g}"


def lam(value: Any) -> str:
    """A penalty weight λ (``∞`` for the penalty-only objective)."""
    return MISSING if _missing(value) else lambda_label(float(value))


def integer(value: Any) -> str:
    """A count or a step; missing values (e.g. a run that never diverged) as ``—``."""
    if value is None or pd.isna(value):
        return MISSING
    try:
        return str(int(value))
    except (TypeError, ValueError):
        return MISSING


def coef(value: Any) -> str:
    """A regression coefficient or φ entry: 4 decimals."""
    return MISSING if _missing(value) else f"{float(value):.4f}"


def seconds(value: float) -> str:
    """A duration as ``h:mm:ss`` (with the seconds to one decimal below a minute)."""
    if value < 60:
        return f"{value:.1f} s"
    whole = round(value)
    return f"{whole // 3600}:{whole % 3600 // 60:02d}:{whole % 60:02d}"
