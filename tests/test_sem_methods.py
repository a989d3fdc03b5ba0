"""ERM, ICP and the method registry of the SEM study."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from irm_bench.envs import LinearMoments
from irm_bench.methods import ERM, ICP, METHODS, get_method, methods_for
from irm_bench.methods.base import hparams_from_mapping
from irm_bench.methods.icp import ICPConfig, all_subsets, icp_subset_pvalues
from irm_bench.sem.study import SEMStudyConfig, draw_environments


def _shifted_case(rng, noise=0.01, n=400):
    """x1, x2 cause y (coefficients 1, 1, small noise); z1, z2 are effects of y whose
    mechanism shifts strongly between environments."""
    envs = []
    for scale, shift in ((0.5, 1.0), (1.0, 4.0), (2.0, -3.0)):
        x = rng.normal(size=(n, 2)) * scale
        y = x.sum(1) + noise * rng.normal(size=n)
        z = shift * y[:, None] + rng.normal(size=(n, 2))
        envs.append((np.column_stack([x, z]), y))
    return envs


def test_erm_equals_normal_equations_on_pooled_samples():
    _, envs, _ = draw_environments("FES", 0, SEMStudyConfig(n_per_env=300))
    x = np.vstack([e for e, _ in envs])
    y = np.concatenate([t for _, t in envs])
    expected = np.linalg.solve(x.T @ x, x.T @ y)
    fit = ERM().fit(LinearMoments.stack([LinearMoments.from_samples(envs)]))
    np.testing.assert_allclose(fit.coefficients[0, 0], expected, rtol=1e-9)


def test_icp_returns_exactly_the_causal_parents():
    envs = _shifted_case(np.random.default_rng(0))
    fit = ICP().fit(LinearMoments.stack([LinearMoments.from_samples(envs)]))
    coef = fit.coefficients[0, 0]
    assert np.all(coef[2:] == 0)
    np.testing.assert_allclose(coef[:2], 1.0, atol=0.01)


def test_icp_pvalues_stay_finite_with_zero_variance_residuals():
    envs = _shifted_case(np.random.default_rng(1), noise=0.0)  # y = x1 + x2 exactly
    moments = LinearMoments.stack([LinearMoments.from_samples(envs)])
    masks = all_subsets(4)
    p = icp_subset_pvalues(moments, masks)
    assert np.all(np.isfinite(p))
    parents = np.flatnonzero((masks == [True, True, False, False]).all(1))[0]
    # p_mean = p_var = 1, so p_e = 2 min(1, 1) = 2 and the subset p-value is 2 * 3 envs.
    assert p[0, parents] == pytest.approx(6.0)
    coef = ICP().fit(moments).coefficients[0, 0]
    np.testing.assert_allclose(coef, [1, 1, 0, 0], atol=1e-9)


def _reference_pvalue(envs, subset):
    """Straightforward per-subset ICP test on raw residuals (scipy.stats.ttest_ind)."""
    x = np.vstack([e for e, _ in envs])
    y = np.concatenate([t for _, t in envs])
    env = np.repeat(np.arange(len(envs)), [len(t) for _, t in envs])
    beta = np.linalg.lstsq(x[:, subset], y, rcond=None)[0]
    res = y - x[:, subset] @ beta
    p_env = []
    for e in range(len(envs)):
        a, b = res[env == e], res[env != e]
        p_mean = stats.ttest_ind(a, b, equal_var=False).pvalue
        ratio = np.var(a, ddof=1) / np.var(b, ddof=1)
        dfs = (len(a) - 1, len(b) - 1)
        p_var = 2 * min(stats.f.sf(ratio, *dfs), stats.f.cdf(ratio, *dfs))
        p_env.append(2 * min(p_mean, p_var))
    return min(p_env) * len(envs)


def test_icp_from_moments_matches_per_subset_scipy_tests():
    rng = np.random.default_rng(2)
    envs = _shifted_case(rng, noise=0.5, n=60)
    masks = all_subsets(4)
    p = icp_subset_pvalues(LinearMoments.stack([LinearMoments.from_samples(envs)]), masks)[0]
    expected = [_reference_pvalue(envs, np.flatnonzero(m)) for m in masks]
    np.testing.assert_allclose(p, expected, rtol=1e-6, atol=1e-200)
    assert max(expected) > 0.05  # the case exercises both accepted and rejected subsets


def test_registry_lookup_errors_list_known_methods():
    assert get_method("icp").linear_fit is ICP
    with pytest.raises(KeyError, match=r"did you mean 'irmv1'.*erm, icp, irmv1, vrex"):
        get_method("irm1")


def test_hyperparameters_reject_unknown_keys():
    assert hparams_from_mapping(ICPConfig, {"alpha": 0.1}, "sem.icp").alpha == 0.1
    with pytest.raises(ValueError, match=r"'sem.icp.alpah' \(did you mean 'alpha'"):
        hparams_from_mapping(ICPConfig, {"alpah": 0.1}, "sem.icp")
    with pytest.raises(ValueError, match="alpha"):
        ICPConfig(alpha=1.5)


@pytest.mark.parametrize("name", list(methods_for("sem")))
def test_every_method_honours_the_contract(name):
    section = {
        "n_per_env": 40, "methods": [name],
        "irmv1": {"reg_grid": [0.0, 0.1], "steps": 20},
        **({name: {"steps": 20}} if METHODS[name].linear_fit is None else {}),
    }  # fmt: skip
    config = SEMStudyConfig.from_mapping(section)
    envs = [draw_environments("FOU", k, config)[1] for k in range(3)]
    moments = LinearMoments.stack([LinearMoments.from_samples(e, fourth=True) for e in envs])
    method = config.build(name)
    fit = method.fit(moments)
    n_grid = len(fit.grid)
    assert fit.coefficients.shape == (3, n_grid, 10)
    assert fit.diverged.shape == fit.diverged_step.shape == (3, n_grid)
    assert np.all((fit.selected >= 0) & (fit.selected < n_grid))
    assert np.all(np.isfinite(fit.coefficients))
    if n_grid > 1:  # a method with a grid names its hyper-parameter and its values
        assert fit.hparam and len(fit.grid_columns[fit.hparam]) == n_grid


def test_a_method_that_cannot_run_in_the_sem_study_is_named_with_the_study(monkeypatch):
    import dataclasses

    only_cmnist = dataclasses.replace(
        METHODS["vrex"], name="mlp_only", studies=frozenset({"cmnist"})
    )
    monkeypatch.setitem(METHODS, "mlp_only", only_cmnist)
    with pytest.raises(
        ValueError, match=r"'sem\.methods\[1\]': method 'mlp_only' cannot run in the sem"
    ):
        SEMStudyConfig(methods=("erm", "mlp_only"))
    with pytest.raises(ValueError, match=r"'sem\.methods\[0\]'.*did you mean 'vrex'"):
        SEMStudyConfig(methods=("vrx",))
