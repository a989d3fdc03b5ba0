"""Config validation: defaults are filled in, and bad values name their key."""

from __future__ import annotations

import pytest
import yaml

from irm_bench.config import ConfigError, validate_config


@pytest.fixture
def default_config(repo_root):
    with open(repo_root / "config.yaml") as fh:
        return yaml.safe_load(fh)


def test_default_config_is_valid_and_unchanged(default_config):
    out = validate_config(default_config, check_paths=False)
    assert out["sem"]["n_draws"] == 50
    assert out["sem"]["selection"]["holdout_draws"] == 25
    assert out["sem"]["irmv1"]["reg_grid"] == [0.0, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1]


def test_paper_config_sets_the_full_protocols(default_config, repo_root):
    """config/paper.yaml over config.yaml (Snakemake merges mappings key by key): the
    reference code's 200 SEM draws, Table 1's paper preset, Aubin et al.'s full sizes."""
    from irm_bench.config import _merge

    with open(repo_root / "config" / "paper.yaml") as fh:
        _merge(default_config, yaml.safe_load(fh))
    out = validate_config(default_config, check_paths=False)
    assert out["sem"]["n_draws"] == 200
    assert out["sem"]["selection"]["holdout_draws"] == 50
    assert out["sem"]["selection"]["validation_fraction"] == 0.2  # kept from config.yaml
    assert out["cmnist"]["preset"] == "paper"
    assert out["unit_tests"]["preset"] == "full"
    assert out["results_dir"] == "results/paper"


def test_defaults_fill_missing_sections():
    out = validate_config({}, check_paths=False)
    assert out["sem"]["setups"] == ["FOU", "FOS", "FEU", "FES", "POU", "POS", "PEU", "PES"]
    assert out["minimal"]["steps"] == 50000
    assert out["device"] == "auto"


@pytest.mark.parametrize(
    ("patch", "key"),
    [
        ({"sem": {"n_drws": 3}}, "sem.n_drws"),
        ({"sem": {"n_per_env": -5}}, "sem.n_per_env"),
        ({"sem": {"irmv1": {"reg_grid": []}}}, "sem.irmv1.reg_grid"),
        ({"sem": {"n_draws": "many"}}, "sem.n_draws"),
    ],
)
def test_bad_value_names_key(patch, key):
    with pytest.raises(ConfigError, match=f"'{key}'"):
        validate_config(patch, check_paths=False)
