"""The SEM study and the appendix example reproduce the numbers recorded before the
generic SEM trainer (``tests/fixtures/make_baseline.py``, same seeds): every column of
every (setup, draw, method, grid point) row to float rounding."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

FIXTURES = Path(__file__).resolve().parent / "fixtures"
sys.path.insert(0, str(FIXTURES))
import make_baseline  # noqa: E402

# IRMv1 trains in float32; the recorded values are float64 text of the same run.
RTOL, ATOL = 1e-6, 1e-12


def _compare(actual: pd.DataFrame, expected: pd.DataFrame) -> None:
    # Every recorded column, in order (columns added since, e.g. hparam, may follow).
    assert list(actual.columns[: len(expected.columns)]) == list(expected.columns)
    assert len(actual) == len(expected)
    for col in expected.columns:
        a, e = actual[col], expected[col]
        if pd.api.types.is_numeric_dtype(e) and not pd.api.types.is_bool_dtype(e):
            np.testing.assert_allclose(
                a.to_numpy(float), e.to_numpy(float), rtol=RTOL, atol=ATOL, err_msg=col
            )
        else:
            assert a.astype(str).tolist() == e.astype(str).tolist(), col


@pytest.fixture(scope="module")
def sem_frames():
    return make_baseline.sem_frames()


def test_sem_errors_match_the_recorded_baseline(sem_frames):
    rows, _ = sem_frames
    expected = pd.read_csv(FIXTURES / "baseline/sem_draws.csv")
    baseline_methods = set(expected["method"])
    rows = rows[rows["method"].isin(baseline_methods)].reset_index(drop=True)
    rows = pd.read_csv(pd.io.common.StringIO(rows.to_csv(index=False)))
    _compare(rows, expected)


def test_sem_coefficients_match_the_recorded_baseline(sem_frames):
    _, coefs = sem_frames
    expected = pd.read_csv(FIXTURES / "baseline/sem_coefficients.csv")
    coefs = coefs[coefs["method"].isin(set(expected["method"]))].reset_index(drop=True)
    coefs = pd.read_csv(pd.io.common.StringIO(coefs.to_csv(index=False)))
    _compare(coefs, expected)


def test_appendix_trajectory_matches_the_recorded_baseline():
    expected = pd.read_csv(FIXTURES / "baseline/minimal_trajectory.csv")
    actual = make_baseline.minimal_frame()
    actual = pd.read_csv(pd.io.common.StringIO(actual.to_csv(index=False)))
    _compare(actual, expected)
