"""Bad configurations: each is refused with a message naming the key and what was expected.

One table row per bad input. Each row is a patch deep-merged over ``config.yaml``, the
dotted key the message must name, and a phrase that says what was expected. Relative
paths are resolved against a fresh ``tmp_path`` that holds one regular file, ``a_file``
(root ignores permission bits, so "cannot be written" uses a path under a file).
"""

from __future__ import annotations

import copy
import math
import os
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from irm_bench.config import ConfigError, coerce_cli_overrides, dotted_key, validate_config
from irm_bench.devices import DeviceError, resolve_device

NAN = math.nan
INF = math.inf
SETUPS = "one of FOU, FOS, FEU, FES, POU, POS, PEU, PES"

# (case id, patch over config.yaml, offending key, phrase saying what was expected)
BAD_CONFIGS: list[tuple[str, dict[str, Any], str, str]] = [
    # unknown keys at every level
    ("unknown-top", {"resluts_dir": "x"}, "resluts_dir", "did you mean 'results_dir'?"),
    ("unknown-sem", {"sem": {"n_drws": 3}}, "sem.n_drws", "did you mean 'n_draws'?"),
    ("unknown-sem-irmv1", {"sem": {"irmv1": {"stepz": 3}}}, "sem.irmv1.stepz", "'steps'"),
    ("unknown-sem-icp", {"sem": {"icp": {"alpah": 0.1}}}, "sem.icp.alpah", "'alpha'"),
    ("unknown-minimal", {"minimal": {"step": 10}}, "minimal.step", "expected one of"),
    ("unknown-cmnist", {"cmnist": {"lambda": [1.0]}}, "cmnist.lambda", "expected one of"),
    ("unknown-report", {"report": {"pdf": True}}, "report.pdf", "expected one of enabled"),
    # wrong types
    ("str-for-int", {"sem": {"n_draws": "many"}}, "sem.n_draws", "expected an integer"),
    ("float-for-int", {"sem": {"n_draws": 2.5}}, "sem.n_draws", "expected an integer"),
    ("integral-float", {"sem": {"n_draws": 200.0}}, "sem.n_draws", "expected an integer"),
    ("str-for-bool", {"sem": {"enabled": "yes"}}, "sem.enabled", "expected true or false"),
    ("quoted-bool", {"gpu_jobs": "true"}, "gpu_jobs", "expected true or false"),
    ("list-for-section", {"sem": [1, 2]}, "sem", "expected a mapping of keys to values"),
    ("null-results-dir", {"results_dir": None}, "results_dir", "expected a string"),
    ("str-int-or-null", {"cmnist": {"restarts": "five"}}, "cmnist.restarts", "integer or null"),
    ("int-str-or-null", {"cmnist": {"local_source": 5}}, "cmnist.local_source", "string or null"),
    ("str-for-list", {"sem": {"setups": "FOU"}}, "sem.setups", "expected a list"),
    ("int-device", {"device": 1}, "device", "expected a string"),
    # sizes, steps, restarts: zero or negative
    ("zero-draws", {"sem": {"n_draws": 0}}, "sem.n_draws", "an integer >= 1"),
    ("negative-n-per-env", {"sem": {"n_per_env": -5}}, "sem.n_per_env", "an integer >= 2"),
    ("zero-draws-per-job", {"sem": {"draws_per_job": 0}}, "sem.draws_per_job", ">= 1"),
    ("odd-dim", {"sem": {"dim": 7}}, "sem.dim", "a multiple of 2"),
    ("zero-dim", {"sem": {"dim": 0}}, "sem.dim", "an integer >= 2"),
    ("tiny-minimal-n", {"minimal": {"n_per_env": 1}}, "minimal.n_per_env", ">= 2"),
    ("zero-train", {"cmnist": {"max_train_per_env": 0}}, "cmnist.max_train_per_env", ">= 1"),
    (
        "big-train",
        {"cmnist": {"max_train_per_env": 30000}},
        "cmnist.max_train_per_env",
        "<= 25000",
    ),
    ("zero-sem-steps", {"sem": {"irmv1": {"steps": 0}}}, "sem.irmv1.steps", "an integer >= 1"),
    ("negative-minimal-steps", {"minimal": {"steps": -10}}, "minimal.steps", ">= 1"),
    ("zero-cmnist-steps", {"cmnist": {"steps": 0}}, "cmnist.steps", "an integer >= 1"),
    ("zero-restarts", {"cmnist": {"restarts": 0}}, "cmnist.restarts", "an integer >= 1"),
    ("negative-sweep", {"cmnist": {"sweep_restarts": -1}}, "cmnist.sweep_restarts", ">= 0"),
    ("zero-log-every", {"minimal": {"log_every": 0}}, "minimal.log_every", ">= 1"),
    ("zero-cmnist-log", {"cmnist": {"log_every": 0}}, "cmnist.log_every", ">= 1"),
    # seeds (scalars in this schema: no seed lists)
    ("negative-seed", {"sem": {"seed": -1}}, "sem.seed", "an integer >= 0"),
    ("str-seed", {"cmnist": {"seed": "zero"}}, "cmnist.seed", "expected an integer"),
    ("float-seed", {"minimal": {"seed": 1.5}}, "minimal.seed", "expected an integer"),
    # lists: empty, duplicated, bad item
    ("empty-setups", {"sem": {"setups": []}}, "sem.setups", "a list of at least 1 item"),
    ("dup-setups", {"sem": {"setups": ["FOU", "FOU"]}}, "sem.setups", "without duplicates"),
    ("unknown-setup", {"sem": {"setups": ["FOU", "FOS", "FOX"]}}, "sem.setups[2]", SETUPS),
    ("empty-methods", {"sem": {"methods": []}}, "sem.methods", "at least 1 item"),
    ("dup-methods", {"sem": {"methods": ["erm", "erm"]}}, "sem.methods", "without duplicates"),
    ("unknown-sem-method", {"sem": {"methods": ["vrx"]}}, "sem.methods[0]", "did you mean 'vrex'"),
    (
        "unknown-sem-vrex",
        {"sem": {"vrex": {"lamda_grid": [1]}}},
        "sem.vrex.lamda_grid",
        "lambda_grid",
    ),
    (
        "negative-vrex-lambda",
        {"sem": {"vrex": {"lambda_grid": [-1]}}},
        "sem.vrex.lambda_grid[0]",
        ">= 0",
    ),
    ("zero-fishr-steps", {"sem": {"fishr": {"steps": 0}}}, "sem.fishr.steps", "an integer >= 1"),
    (
        "zero-groupdro-eta",
        {"sem": {"groupdro": {"eta_grid": [0]}}},
        "sem.groupdro.eta_grid[0]",
        "> 0",
    ),
    (
        "lambda-for-groupdro",
        {"sem": {"groupdro": {"lambda_grid": [1]}}},
        "sem.groupdro.lambda_grid",
        "eta_grid",
    ),
    ("unknown-cmnist-method", {"cmnist": {"methods": ["irm"]}}, "cmnist.methods[0]", "'irmv1'?"),
    ("two-env-scales", {"sem": {"env_scales": [0.2, 2.0]}}, "sem.env_scales", "at least 3"),
    ("negative-scale", {"sem": {"env_scales": [0.2, -1, 5]}}, "sem.env_scales[1]", "a number > 0"),
    ("dup-scales", {"minimal": {"env_scales": [1.0, 1.0]}}, "minimal.env_scales", "duplicates"),
    # λ grids
    ("empty-reg-grid", {"sem": {"irmv1": {"reg_grid": []}}}, "sem.irmv1.reg_grid", "at least 1"),
    ("dup-reg-grid", {"sem": {"irmv1": {"reg_grid": [0.1, 0.1]}}}, "sem.irmv1.reg_grid", "dupl"),
    ("negative-reg", {"sem": {"irmv1": {"reg_grid": [-0.1]}}}, "sem.irmv1.reg_grid[0]", ">= 0"),
    ("reg-above-one", {"sem": {"irmv1": {"reg_grid": [0, 1.5]}}}, "sem.irmv1.reg_grid[1]", "<= 1"),
    ("empty-lambdas", {"cmnist": {"lambda_grid": []}}, "cmnist.lambda_grid", "at least 1 item"),
    ("dup-lambdas", {"cmnist": {"lambda_grid": [1.0, 1.0]}}, "cmnist.lambda_grid", "1.0 repeated"),
    ("negative-lambda", {"cmnist": {"lambda_grid": [-1.0]}}, "cmnist.lambda_grid[0]", ">= 0"),
    ("inf-lambda", {"cmnist": {"lambda_grid": [INF]}}, "cmnist.lambda_grid[0]", "finite"),
    ("negative-mse-weight", {"minimal": {"mse_weight": -1}}, "minimal.mse_weight", ">= 0"),
    # learning rates <= 0 or not finite
    ("zero-lr", {"sem": {"irmv1": {"lr": 0}}}, "sem.irmv1.lr", "a number > 0"),
    ("negative-lr", {"minimal": {"lr": -1e-3}}, "minimal.lr", "a number > 0"),
    ("nan-lr", {"sem": {"irmv1": {"lr": NAN}}}, "sem.irmv1.lr", "a finite number"),
    ("inf-lr", {"minimal": {"lr": INF}}, "minimal.lr", "a finite number"),
    # probabilities outside (0, 1)
    ("alpha-above-one", {"sem": {"icp": {"alpha": 1.5}}}, "sem.icp.alpha", "a number < 1"),
    ("alpha-negative", {"sem": {"icp": {"alpha": -0.1}}}, "sem.icp.alpha", "a number > 0"),
    ("alpha-zero", {"sem": {"icp": {"alpha": 0}}}, "sem.icp.alpha", "a number > 0"),
    # model selection (irm_bench.selection): rule names, hold-out fraction, leave-one-out
    (
        "unknown-sem-rule",
        {"sem": {"selection": {"rules": ["last_environment", "training_domian"]}}},
        "sem.selection.rules[1]",
        "did you mean 'training_domain'?",
    ),
    (
        "sem-leave-one-out",
        {"sem": {"selection": {"rules": ["leave_one_out"]}}},
        "sem.selection.rules[0]",
        "two training environments",
    ),
    (
        "unknown-unit-tests-rule",
        {"unit_tests": {"selection": {"rules": ["oracle"]}}},
        "unit_tests.selection.rules[0]",
        "known: training_domain",
    ),
    (
        "zero-validation-fraction",
        {"sem": {"selection": {"validation_fraction": 0}}},
        "sem.selection.validation_fraction",
        "a number > 0",
    ),
    (
        "whole-validation-fraction",
        {"sem": {"selection": {"validation_fraction": 1.0}}},
        "sem.selection.validation_fraction",
        "a number < 1",
    ),
    (
        "negative-holdout-draws",
        {"sem": {"selection": {"holdout_draws": -1}}},
        "sem.selection.holdout_draws",
        ">= 0",
    ),
    (
        "unknown-cmnist-rule",
        {"cmnist": {"selection": {"rules": ["training_domain", "test_domian"]}}},
        "cmnist.selection.rules[1]",
        "did you mean 'test_domain'?",
    ),
    (
        "cmnist-leave-one-out",
        {"cmnist": {"selection": {"rules": ["leave_one_out"]}}},
        "cmnist.selection.rules[0]",
        "two training environments",
    ),
    (
        "cmnist-zero-validation-fraction",
        {"cmnist": {"selection": {"validation_fraction": 0}}},
        "cmnist.selection.validation_fraction",
        "a number > 0",
    ),
    (
        "cmnist-whole-validation-fraction",
        {"cmnist": {"selection": {"validation_fraction": 1}}},
        "cmnist.selection.validation_fraction",
        "a number < 1",
    ),
    (
        "cmnist-validation-beyond-t10k",
        {"cmnist": {"selection": {"validation_fraction": 0.3}}},
        "cmnist.selection.validation_fraction",
        "10000 t10k digits",
    ),
    (
        "unknown-cmnist-selection-key",
        {"cmnist": {"selection": {"fraction": 0.2}}},
        "cmnist.selection.fraction",
        "expected one of",
    ),
    # unknown names
    ("unknown-preset", {"cmnist": {"preset": "papr"}}, "cmnist.preset", "did you mean 'paper'?"),
    (
        "unknown-estimator",
        {"sem": {"irmv1": {"penalty_estimator": "x"}}},
        "sem.irmv1.penalty_estimator",
        "one of squared, split",
    ),
    (
        "unknown-precision",
        {"cmnist": {"precision": "fp16"}},
        "cmnist.precision",
        "one of fp32, bf16",
    ),
    ("unknown-device", {"device": "tpu"}, "device", "one of auto, cpu, cuda"),
    ("indexed-device", {"device": "cuda:1"}, "device", "one of auto, cpu, cuda"),
    # paths (relative to tmp_path, which holds the regular file a_file)
    ("empty-results-dir", {"results_dir": ""}, "results_dir", "at least 1 character"),
    ("missing-mnist", {"cmnist": {"local_source": "no/such"}}, "cmnist.local_source", "existing"),
    (
        "mnist-is-file",
        {"cmnist": {"local_source": "a_file"}},
        "cmnist.local_source",
        "existing folder",
    ),
    (
        "results-under-file",
        {"results_dir": "a_file/res"},
        "results_dir",
        "can be created and written",
    ),
    ("results-is-file", {"results_dir": "a_file"}, "results_dir", "is not a folder"),
    ("cache-under-file", {"cmnist": {"cache_dir": "a_file/m"}}, "cmnist.cache_dir", "written"),
    pytest.param(
        "results-in-proc",
        {"results_dir": "/proc/irm-bench-results"},
        "results_dir",
        "cannot create a file in /proc",
        marks=pytest.mark.skipif(not Path("/proc/self").exists(), reason="needs Linux /proc"),
    ),
]


def _merge(base: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


@pytest.fixture(scope="module")
def default_config(repo_root) -> dict[str, Any]:
    with open(repo_root / "config.yaml") as fh:
        return yaml.safe_load(fh)


@pytest.fixture
def base_dir(tmp_path) -> Path:
    (tmp_path / "a_file").write_text("not a folder\n")
    return tmp_path


def _lines_for(message: str, key: str) -> list[str]:
    return [line.strip() for line in message.splitlines() if f"config key '{key}'" in line]


def test_table_is_large_enough():
    assert len(BAD_CONFIGS) >= 30
    ids = [row.values[0] if hasattr(row, "values") else row[0] for row in BAD_CONFIGS]
    assert len(set(ids)) == len(ids)


@pytest.mark.parametrize(("case", "patch", "key", "expected"), BAD_CONFIGS)
def test_bad_config_names_key_and_expectation(
    case, patch, key, expected, default_config, base_dir
):
    config = _merge(default_config, patch)
    with pytest.raises(ConfigError) as info:
        validate_config(config, base_dir=base_dir)
    message = str(info.value)
    lines = _lines_for(message, key)
    assert lines, f"{case}: no line names '{key}' in:\n{message}"
    assert any("expected" in line and expected in line for line in lines), (
        f"{case}: no line for '{key}' says {expected!r}:\n{message}"
    )
    assert message.startswith("invalid configuration:\n")
    assert len(message.splitlines()) == 2, f"{case}: one bad value, one line:\n{message}"


def test_default_config_passes_with_paths_checked(default_config, base_dir):
    out = validate_config(default_config, base_dir=base_dir)
    assert out["sem"]["n_draws"] == 50
    assert not (base_dir / "results").exists(), "validation must not create the results folder"


def test_missing_mnist_folder_is_fine_when_cmnist_is_off(default_config, base_dir):
    config = _merge(default_config, {"cmnist": {"enabled": False, "local_source": "no/such"}})
    assert validate_config(config, base_dir=base_dir)["cmnist"]["enabled"] is False


def test_every_problem_is_reported_once(default_config, base_dir):
    config = _merge(
        default_config, {"device": "tpu", "sem": {"n_draws": 0, "setups": ["FOX"], "n_drws": 1}}
    )
    with pytest.raises(ConfigError) as info:
        validate_config(config, base_dir=base_dir)
    lines = str(info.value).splitlines()[1:]
    keys = ["device", "sem.n_draws", "sem.setups[0]", "sem.n_drws"]
    assert sorted(len(_lines_for(str(info.value), k)) for k in keys) == [1, 1, 1, 1]
    assert len(lines) == 4


def test_top_level_must_be_a_mapping():
    with pytest.raises(ConfigError, match=r"'<top level>': expected a mapping.*found \[1, 2\]"):
        validate_config([1, 2], check_paths=False)  # type: ignore[arg-type]


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root ignores permission bits"
)
def test_read_only_results_parent(default_config, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(ConfigError, match=r"'results_dir': expected a folder that can be"):
            validate_config(
                _merge(default_config, {"results_dir": "locked/res"}), base_dir=tmp_path
            )
    finally:
        locked.chmod(0o700)


def test_dotted_key_names_list_items():
    assert dotted_key(["sem", "setups", 2]) == "sem.setups[2]"
    assert dotted_key(["cmnist", "lambda_grid", 0]) == "cmnist.lambda_grid[0]"
    assert dotted_key([]) == "<top level>"


# --config overrides: Snakemake hands nested values (and top-level true/null) over as strings.


def test_cli_strings_are_read_like_a_config_file():
    raw = {
        "gpu_jobs": "yes",  # YAML 1.1, as PyYAML reads a config file
        "device": "cpu",
        "results_dir": "2024",  # the schema admits a string here: kept as written
        "sem": {"n_draws": "4", "irmv1": {"lr": "1e-3", "reg_grid": ["0", ".5"]}},
        "cmnist": {"local_source": "null", "restarts": "~", "lambda_grid": ["1", "2.5e3"]},
        "report": {"enabled": "False"},
    }
    assert coerce_cli_overrides(raw) == {
        "gpu_jobs": True,
        "device": "cpu",
        "results_dir": "2024",
        "sem": {"n_draws": 4, "irmv1": {"lr": 0.001, "reg_grid": [0, 0.5]}},
        "cmnist": {"local_source": None, "restarts": None, "lambda_grid": [1, 2500.0]},
        "report": {"enabled": False},
    }


@pytest.mark.parametrize(
    ("cli", "file"),
    [
        ({"sem": {"n_draws": "0"}}, {"sem": {"n_draws": 0}}),
        ({"sem": {"n_draws": "many"}}, {"sem": {"n_draws": "many"}}),
        ({"cmnist": {"lambda_grid": ["-1"]}}, {"cmnist": {"lambda_grid": [-1]}}),
        ({"sem": {"irmv1": {"lr": "nan"}}}, {"sem": {"irmv1": {"lr": NAN}}}),
        ({"device": "tpu"}, {"device": "tpu"}),
    ],
)
def test_cli_override_gives_the_same_message_as_the_file(cli, file, default_config):
    # Snakemake has already merged the raw strings into config; the typed values win.
    merged_raw = _merge(default_config, cli)
    with pytest.raises(ConfigError) as from_cli:
        validate_config(merged_raw, check_paths=False, cli_overrides=cli)
    with pytest.raises(ConfigError) as from_file:
        validate_config(_merge(default_config, file), check_paths=False)
    assert str(from_cli.value) == str(from_file.value)


def test_good_cli_override_is_typed_in_the_result(default_config):
    cli = {"sem": {"n_draws": "3"}, "gpu_jobs": "true"}
    out = validate_config(_merge(default_config, cli), check_paths=False, cli_overrides=cli)
    assert out["sem"]["n_draws"] == 3
    assert out["sem"]["draws_per_job"] == 3  # clamped to n_draws
    assert out["gpu_jobs"] is True
    assert out["sem"]["setups"] == default_config["sem"]["setups"]  # the rest of sem is kept


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is visible")
def test_cuda_without_a_gpu_is_refused_at_the_first_training_job():
    # Not a config-time check: a login node without a GPU may submit jobs to GPU nodes.
    with pytest.raises(DeviceError, match=r"config key 'device' is 'cuda' but no CUDA device"):
        resolve_device("cuda")


@pytest.mark.parametrize(
    ("patch", "line"),
    [
        (
            {"sem": {"irmv1": {"lr": "1e-3"}}},
            "config key 'sem.irmv1.lr': expected a number, found \"1e-3\" (YAML reads 1e-3 as "
            "a string; a float needs a dot: write 1.0e-3)",
        ),
        (
            {"sem": {"n_draws": "3"}},
            "config key 'sem.n_draws': expected an integer, found \"3\" (a quoted number is a "
            "string: remove the quotes)",
        ),
        (
            {"sem": {"n_draws:-3": None}},
            "config key 'sem.n_draws:-3': unknown key in 'sem' (did you mean 'n_draws'?) (YAML "
            "needs a space after ':' in 'key: value')",
        ),
    ],
)
def test_yaml_traps_get_a_hint(patch, line, default_config):
    with pytest.raises(ConfigError) as info:
        validate_config(_merge(default_config, patch), check_paths=False)
    assert line in str(info.value)


def test_a_method_the_sem_study_cannot_run_is_named_with_the_study(monkeypatch, base_dir):
    import dataclasses

    from irm_bench.methods import METHODS

    mlp_only = dataclasses.replace(METHODS["vrex"], name="mlp_only", studies=frozenset({"cmnist"}))
    monkeypatch.setitem(METHODS, "mlp_only", mlp_only)
    with pytest.raises(ConfigError) as err:
        validate_config({"sem": {"methods": ["erm", "mlp_only"]}}, check_paths=False)
    assert "config key 'sem.methods[1]': method 'mlp_only' cannot run in the sem study" in str(
        err.value
    )
