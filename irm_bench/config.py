"""Configuration loading and validation.

The workflow's configuration is checked against a JSON schema (draft 2020-12) with
defaults and ``additionalProperties: false``, then against rules a schema cannot say
(paths that must exist, a results folder that must be writable). Every problem is
reported with the dotted name of the offending key.
"""

from __future__ import annotations

import copy
import difflib
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import jsonschema
import yaml

SCHEMA_PATH = (
    Path(__file__).resolve().parent.parent / "workflow" / "schemas" / "config.schema.yaml"
)


class ConfigError(ValueError):
    """A configuration value is missing, unknown or out of range.

    The message names each offending key in dotted form (``sem.n_draws``) and says
    what was expected and what was found.
    """


def load_schema(path: str | Path = SCHEMA_PATH) -> dict[str, Any]:
    """Read the config JSON schema (YAML syntax) from ``path``."""
    with open(path) as fh:
        return yaml.safe_load(fh)


def _with_defaults(validator_class: type) -> type:
    """Extend a jsonschema validator so that ``default`` values are filled in."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema) -> Iterator:
        if isinstance(instance, dict):
            for name, sub in properties.items():
                if "default" in sub and name not in instance:
                    instance[name] = copy.deepcopy(sub["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


_DefaultFillingValidator = _with_defaults(jsonschema.Draft202012Validator)


def _dotted(path: Any) -> str:
    parts = [str(p) for p in path]
    return ".".join(parts) if parts else "<top level>"


def _describe(error: jsonschema.ValidationError, schema: Mapping[str, Any]) -> str:
    """Turn one schema error into 'config key X: expected ..., found ...'."""
    key = _dotted(error.absolute_path)
    found = json.dumps(error.instance, default=str)
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed))
        lines = []
        for name in extra:
            full = f"{key}.{name}" if error.absolute_path else name
            hint = difflib.get_close_matches(name, allowed, n=1)
            did_you_mean = f" (did you mean '{hint[0]}'?)" if hint else ""
            lines.append(
                f"config key '{full}': unknown key{did_you_mean}; allowed keys here: "
                f"{', '.join(allowed)}"
            )
        return "\n".join(lines)
    expected = {
        "type": lambda v: f"a value of type {v}",
        "enum": lambda v: f"one of {v}",
        "minimum": lambda v: f"a number >= {v}",
        "maximum": lambda v: f"a number <= {v}",
        "exclusiveMinimum": lambda v: f"a number > {v}",
        "exclusiveMaximum": lambda v: f"a number < {v}",
        "minItems": lambda v: f"a list with at least {v} item(s)",
        "uniqueItems": lambda v: "a list without duplicates",
        "minLength": lambda v: f"a string of at least {v} character(s)",
        "multipleOf": lambda v: f"a multiple of {v}",
    }.get(error.validator, lambda v: f"a value satisfying {error.validator}={v}")
    return f"config key '{key}': expected {expected(error.validator_value)}, found {found}"


def validate_config(
    config: Mapping[str, Any],
    schema: Mapping[str, Any] | None = None,
    *,
    check_paths: bool = True,
    base_dir: str | Path = ".",
) -> dict[str, Any]:
    """Validate a configuration and return a copy with every default filled in.

    Parameters
    ----------
    config
        The raw configuration mapping (``config.yaml`` plus any ``--config`` overrides).
    schema
        The JSON schema; defaults to ``workflow/schemas/config.schema.yaml``.
    check_paths
        Also check that ``cmnist.local_source`` exists and ``results_dir`` is writable.
    base_dir
        Folder that relative paths are resolved against.

    Returns
    -------
    dict
        The validated configuration with defaults filled in.

    Raises
    ------
    ConfigError
        Naming every offending key, what was expected and what was found.
    """
    schema = load_schema() if schema is None else schema
    filled = copy.deepcopy(dict(config))
    validator = _DefaultFillingValidator(schema)
    errors = sorted(validator.iter_errors(filled), key=lambda e: list(map(str, e.absolute_path)))
    messages = [_describe(e, schema) for e in errors]
    if not messages:
        messages = _semantic_problems(filled, check_paths=check_paths, base_dir=Path(base_dir))
    if messages:
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(messages))
    return filled


def _semantic_problems(config: dict[str, Any], *, check_paths: bool, base_dir: Path) -> list[str]:
    problems: list[str] = []
    sem = config["sem"]
    if sem["enabled"] and sem["draws_per_job"] > sem["n_draws"]:
        sem["draws_per_job"] = sem["n_draws"]
    if not check_paths:
        return problems
    source = config["cmnist"]["local_source"]
    if config["cmnist"]["enabled"] and source is not None:
        path = (base_dir / source).resolve()
        if not path.is_dir():
            problems.append(
                f"config key 'cmnist.local_source': expected an existing folder, found "
                f"'{source}' ({path} does not exist or is not a folder)"
            )
    results = (base_dir / config["results_dir"]).resolve()
    probe = results
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK):
        problems.append(
            f"config key 'results_dir': expected a writable folder, found "
            f"'{config['results_dir']}' ({probe} is not writable)"
        )
    return problems
