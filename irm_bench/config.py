"""Configuration loading and validation.

The workflow's configuration is checked against a JSON schema (draft 2020-12) with
defaults and ``additionalProperties: false``, then against rules a schema cannot say
(finite numbers, paths that must exist, folders that must be writable). Every problem
is reported on its own line as ``config key 'sem.setups[2]': expected ..., found ...``:
the dotted name of the offending key (list items as ``[i]``), what was expected and
what was found.

``--config`` overrides reach Snakemake's ``config`` as strings below the top level
(Snakemake reads ``sem='{n_draws: 0}'`` with YAML's base loader, so ``0`` arrives as
``"0"``). :func:`coerce_cli_overrides` reads those strings as a YAML config file would,
so that an override is validated exactly like the same value in a config file.
"""

from __future__ import annotations

import copy
import difflib
import json
import math
import tempfile
from collections import Counter
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import jsonschema
import yaml

SCHEMA_PATH = (
    Path(__file__).resolve().parent.parent / "workflow" / "schemas" / "config.schema.yaml"
)

# Spellings of null in YAML (what a config file means by them).
_NULL_WORDS = frozenset({"null", "Null", "NULL", "~"})

_TYPE_WORDS = {
    "integer": "an integer",
    "number": "a number",
    "string": "a string",
    "boolean": "true or false",
    "null": "null",
    "array": "a list",
    "object": "a mapping of keys to values",
}


class ConfigError(ValueError):
    """A configuration value is missing, unknown or out of range.

    The message names each offending key in dotted form (``sem.n_draws``,
    ``sem.setups[2]``) and says what was expected and what was found.
    """


def load_schema(path: str | Path = SCHEMA_PATH) -> dict[str, Any]:
    """Read the config JSON schema (YAML syntax) from ``path``."""
    with open(path) as fh:
        return yaml.safe_load(fh)


def _with_defaults(validator_class: type) -> type:
    """Extend a jsonschema validator: fill in ``default`` values, strict integers.

    JSON Schema counts ``3.0`` as an integer; a float where a count is expected is
    almost always a typo (``n_draws: 2.5e2``), and ``range(3.0)`` fails much later, so
    only Python ``int`` (not ``bool``) passes as an integer here.
    """
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema) -> Iterator:
        if isinstance(instance, dict):
            for name, sub in properties.items():
                if "default" in sub and name not in instance:
                    instance[name] = copy.deepcopy(sub["default"])
        yield from validate_properties(validator, properties, instance, schema)

    type_checker = validator_class.TYPE_CHECKER.redefine(
        "integer", lambda _checker, value: isinstance(value, int) and not isinstance(value, bool)
    )
    return jsonschema.validators.extend(
        validator_class, {"properties": set_defaults}, type_checker=type_checker
    )


_DefaultFillingValidator = _with_defaults(jsonschema.Draft202012Validator)


def dotted_key(path: Any) -> str:
    """Name a key path as it reads in the config: ``('sem', 'setups', 2)`` -> ``sem.setups[2]``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "<top level>"


def _show(value: Any, limit: int = 100) -> str:
    """A short JSON rendering of a found value (strings quoted, NaN as NaN)."""
    text = json.dumps(value, default=repr)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _resolve(schema: Mapping[str, Any], root: Mapping[str, Any]) -> dict[str, Any]:
    """Merge a local ``$ref`` (``#/$defs/...``) into ``schema``; siblings win."""
    out = dict(schema)
    ref = out.pop("$ref", None)
    if isinstance(ref, str) and ref.startswith("#/"):
        target: Any = root
        for part in ref[2:].split("/"):
            target = target[part]
        out = {**_resolve(target, root), **out}
    return out


def _allowed_types(schema: Mapping[str, Any], root: Mapping[str, Any]) -> set[str]:
    """JSON types a (sub)schema admits; empty when it does not say."""
    schema = _resolve(schema, root)
    declared = schema.get("type")
    types = {declared} if isinstance(declared, str) else set(declared or ())
    for key in ("anyOf", "oneOf"):
        for sub in schema.get(key, ()):
            types |= _allowed_types(sub, root)
    return types


def _read_scalar(text: str) -> Any:
    """Read one scalar as a config file would, plus ``1e-3`` as Snakemake's top level does.

    PyYAML (which reads config files) gives ``true``/``yes`` -> ``True``, ``null`` ->
    ``None``, ``3`` -> ``3``, ``1.0e-3`` -> ``0.001``, but keeps ``1e-3`` a string (its
    float pattern needs a dot); Snakemake's own ``--config`` parser takes ``1e-3`` as a
    float at the top level, so nested values do too. Anything else stays a string.
    """
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        value = text
    if value is None or isinstance(value, bool | int | float):
        return value
    try:
        return float(text)
    except ValueError:
        return text


def _coerce(value: Any, schema: Mapping[str, Any], root: Mapping[str, Any]) -> Any:
    schema = _resolve(schema, root)
    if isinstance(value, Mapping):
        props = schema.get("properties", {})
        return {k: _coerce(v, props.get(k, {}), root) for k, v in value.items()}
    if isinstance(value, list):
        return [_coerce(v, schema.get("items", {}), root) for v in value]
    if not isinstance(value, str):
        return value
    types = _allowed_types(schema, root)
    if value in _NULL_WORDS and "null" in types:
        return None
    if "string" in types:
        return value
    return _read_scalar(value)


def coerce_cli_overrides(
    overrides: Mapping[str, Any], schema: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Read the string values of ``--config`` overrides as a YAML config file would.

    Snakemake parses ``--config key=value`` with ``int``, ``float``, ``True``/``False``
    and YAML's *base* loader, so ``gpu_jobs=true`` and every value nested in
    ``sem='{n_draws: 0}'`` arrive as strings. Each string is read as a YAML scalar
    (integer, float, ``true``/``false``, ``null``; see :func:`_read_scalar`) unless
    the schema admits a string at that key (then only a ``null`` spelling becomes
    ``None``, where ``null`` is allowed), so ``--config device=cpu`` stays a string and
    ``n_draws: "0"`` becomes ``0``, then is validated like the same value in a file.

    Parameters
    ----------
    overrides
        Snakemake's parsed ``--config`` mapping (``workflow.config_settings.config``).
    schema
        The config schema; defaults to ``workflow/schemas/config.schema.yaml``.

    Returns
    -------
    dict
        A new mapping with the same keys and typed leaf values.
    """
    schema = load_schema() if schema is None else schema
    return _coerce(dict(overrides), schema, schema)


def _merge(base: dict[str, Any], update: Mapping[str, Any]) -> None:
    """Deep-merge ``update`` into ``base`` in place (mappings merge, the rest replaces)."""
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(base.get(key), dict):
            _merge(base[key], value)
        else:
            base[key] = copy.deepcopy(value)


def _expected(error: jsonschema.ValidationError) -> str:
    """What a failed schema keyword asked for, in words."""
    v = error.validator_value
    kind = error.validator
    if kind == "type":
        names = [v] if isinstance(v, str) else list(v)
        return " or ".join(_TYPE_WORDS.get(n, n) for n in names)
    if kind == "enum":
        return "one of " + ", ".join(str(x) for x in v)
    declared = error.schema.get("type") if isinstance(error.schema, Mapping) else None
    declared = [declared] if isinstance(declared, str) else list(declared or ())
    number = "an integer" if "integer" in declared else "a number"
    words = {
        "const": lambda: f"exactly {_show(v)}",
        "minimum": lambda: f"{number} >= {v}",
        "maximum": lambda: f"{number} <= {v}",
        "exclusiveMinimum": lambda: f"{number} > {v}",
        "exclusiveMaximum": lambda: f"{number} < {v}",
        "multipleOf": lambda: f"a multiple of {v}",
        "minItems": lambda: f"a list of at least {v} item(s)",
        "maxItems": lambda: f"a list of at most {v} item(s)",
        "uniqueItems": lambda: "a list without duplicates",
        "minLength": lambda: f"a string of at least {v} character(s)",
        "maxLength": lambda: f"a string of at most {v} character(s)",
        "pattern": lambda: f"a string matching the pattern {v}",
        "minProperties": lambda: f"a mapping with at least {v} key(s)",
        "maxProperties": lambda: f"a mapping with at most {v} key(s)",
    }
    if kind in words:
        return words[kind]()
    return f"a value that satisfies the schema rule {kind}: {_show(v)}"


def _number_hint(text: str) -> str:
    """Why a number-looking string reached a number key, if it looks like one."""
    try:
        as_float = float(text)
    except ValueError:
        return ""
    if not math.isfinite(as_float):
        return ""
    try:
        as_yaml = yaml.safe_load(text)
    except yaml.YAMLError:
        as_yaml = text
    if isinstance(as_yaml, int | float):
        return " (a quoted number is a string: remove the quotes)"
    mantissa, _, exponent = text.lower().partition("e")
    fixed = f"{mantissa}.0e{exponent}" if exponent and "." not in mantissa else "1.0e-3"
    return f" (YAML reads {text} as a string; a float needs a dot: write {fixed})"


def _hint(error: jsonschema.ValidationError) -> str:
    """A likely cause appended to the message: a close name, or the repeated items."""
    if error.validator == "enum" and isinstance(error.instance, str):
        close = difflib.get_close_matches(
            error.instance, [str(x) for x in error.validator_value], n=1, cutoff=0.5
        )
        return f" (did you mean '{close[0]}'?)" if close else ""
    if error.validator == "type" and isinstance(error.instance, str):
        wanted = error.validator_value
        wanted = {wanted} if isinstance(wanted, str) else set(wanted)
        if wanted & {"number", "integer"}:
            return _number_hint(error.instance)
    if error.validator == "uniqueItems" and isinstance(error.instance, list):
        counts = Counter(_show(x) for x in error.instance)
        repeated = [k for k, n in counts.items() if n > 1]
        return f" ({', '.join(repeated)} repeated)" if repeated else ""
    return ""


def _describe(error: jsonschema.ValidationError) -> list[str]:
    """Turn one schema error into lines ``config key 'X': expected ..., found ...``."""
    key = dotted_key(error.absolute_path)
    if error.validator in ("oneOf", "anyOf") and error.context:
        type_errors = [e for e in error.context if e.validator == "type"]
        if len(type_errors) == len(error.context):
            wanted = " or ".join(_expected(e) for e in type_errors)
            return [f"config key '{key}': expected {wanted}, found {_show(error.instance)}"]
        return _describe(jsonschema.exceptions.best_match(error.context))
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed), key=str)
        lines = []
        for name in extra:
            full = dotted_key([*error.absolute_path, str(name)])
            close = difflib.get_close_matches(str(name), allowed, n=1)
            did_you_mean = f" (did you mean '{close[0]}'?)" if close else ""
            if ":" in str(name):
                did_you_mean += " (YAML needs a space after ':' in 'key: value')"
            where = "top-level key" if not error.absolute_path else f"key in '{key}'"
            lines.append(
                f"config key '{full}': unknown {where}{did_you_mean}; expected one of "
                f"{', '.join(allowed)}"
            )
        return lines
    if error.validator == "required":
        missing = [name for name in error.validator_value if name not in error.instance]
        return [
            f"config key '{dotted_key([*error.absolute_path, name])}': expected a value, "
            "found none (the key is required)"
            for name in missing
        ]
    found = _show(error.instance)
    return [f"config key '{key}': expected {_expected(error)}, found {found}{_hint(error)}"]


def _non_finite(value: Any, path: tuple[Any, ...] = ()) -> Iterator[str]:
    """Name every NaN or infinite number (YAML ``.nan``/``.inf``; schema bounds let NaN pass)."""
    if isinstance(value, float) and not math.isfinite(value):
        yield f"config key '{dotted_key(path)}': expected a finite number, found {value}"
    elif isinstance(value, Mapping):
        for k, v in value.items():
            yield from _non_finite(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _non_finite(v, (*path, i))


def validate_config(
    config: Mapping[str, Any],
    schema: Mapping[str, Any] | None = None,
    *,
    check_paths: bool = True,
    base_dir: str | Path = ".",
    cli_overrides: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Validate a configuration and return a copy with every default filled in.

    Parameters
    ----------
    config
        The raw configuration mapping (``config.yaml`` plus any ``--config`` overrides).
    schema
        The JSON schema; defaults to ``workflow/schemas/config.schema.yaml``.
    check_paths
        Also check that ``cmnist.local_source`` exists and that ``results_dir`` and
        ``cmnist.cache_dir`` can be written (by really creating a temporary file, since
        ``os.access`` says yes to root even on ``/proc``).
    base_dir
        Folder that relative paths are resolved against.
    cli_overrides
        Snakemake's ``--config`` mapping; its string values are read as YAML scalars
        (:func:`coerce_cli_overrides`) and merged over ``config`` first.

    Returns
    -------
    dict
        The validated configuration with defaults filled in.

    Raises
    ------
    ConfigError
        Naming every offending key (one per line), what was expected and what was found.
    """
    schema = load_schema() if schema is None else schema
    if not isinstance(config, Mapping):
        raise ConfigError(
            "invalid configuration:\n  config key '<top level>': expected a mapping of keys "
            f"to values, found {_show(config)}"
        )
    filled = copy.deepcopy(dict(config))
    if cli_overrides:
        _merge(filled, coerce_cli_overrides(cli_overrides, schema))
    validator = _DefaultFillingValidator(schema)
    errors = sorted(validator.iter_errors(filled), key=lambda e: [str(p) for p in e.absolute_path])
    # A value of the wrong type also fails its enum or bounds: report only the type.
    mistyped = {tuple(e.absolute_path) for e in errors if e.validator == "type"}
    errors = [e for e in errors if e.validator == "type" or tuple(e.absolute_path) not in mistyped]
    messages = list(_non_finite(filled))
    for error in errors:
        messages.extend(_describe(error))
    if not messages:
        messages = _semantic_problems(filled, check_paths=check_paths, base_dir=Path(base_dir))
    if messages:
        unique = list(dict.fromkeys(messages))
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(unique))
    return filled


def _unwritable(folder: Path) -> str | None:
    """Why files cannot be created in ``folder`` (or its future location), else None."""
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        return f"{probe} exists and is not a folder"
    try:
        # A real write: permission bits do not stop root, read-only mounts and /proc do.
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as err:
        return f"cannot create a file in {probe}: {err.strerror or err}"
    return None


def _semantic_problems(config: dict[str, Any], *, check_paths: bool, base_dir: Path) -> list[str]:
    problems: list[str] = []
    sem = config["sem"]
    if sem["enabled"] and sem["draws_per_job"] > sem["n_draws"]:
        sem["draws_per_job"] = sem["n_draws"]
    problems.extend(_method_problems(sem["methods"], "sem"))
    problems.extend(_rule_problems(config))
    if config["unit_tests"]["enabled"]:
        from irm_bench.unit_tests.protocol import config_problems

        problems.extend(config_problems(config["unit_tests"]))
    if config["cmnist"]["enabled"]:
        from irm_bench.cmnist.presets import method_problems
        from irm_bench.cmnist.selection import config_problems

        problems.extend(method_problems(config["cmnist"]))
        problems.extend(config_problems(config["cmnist"]))
    if not check_paths:
        return problems
    cmnist = config["cmnist"]
    source = cmnist["local_source"]
    if cmnist["enabled"] and source is not None:
        path = (base_dir / source).resolve()
        if not path.is_dir():
            why = "is not a folder" if path.exists() else "does not exist"
            problems.append(
                f"config key 'cmnist.local_source': expected an existing folder with the MNIST "
                f"files (or null to download), found '{source}' ({path} {why})"
            )
    folders = [("results_dir", config["results_dir"])]
    if cmnist["enabled"]:
        folders.append(("cmnist.cache_dir", cmnist["cache_dir"]))
    for key, value in folders:
        why = _unwritable((base_dir / value).resolve())
        if why:
            problems.append(
                f"config key '{key}': expected a folder that can be created and written, "
                f"found '{value}' ({why})"
            )
    return problems


def _rule_problems(config: dict[str, Any]) -> list[str]:
    """One line per bad ``<study>.selection.rules`` entry (irm_bench.selection)."""
    from irm_bench.selection import rule_problems
    from irm_bench.sem.study import SEM_NO_LEAVE_ONE_OUT, SEM_RULES
    from irm_bench.unit_tests.protocol import UNIT_TEST_RULES

    sem, units = config["sem"], config["unit_tests"]
    problems = []
    if sem["enabled"]:
        problems += rule_problems(
            sem["selection"]["rules"],
            "sem.selection.rules",
            len(sem["env_scales"]) - 1,
            SEM_RULES,
            {"leave_one_out": SEM_NO_LEAVE_ONE_OUT},
        )
    if units["enabled"]:
        problems += rule_problems(
            units["selection"]["rules"], "unit_tests.selection.rules", units["n_envs"],
            UNIT_TEST_RULES,
        )  # fmt: skip
    return problems


def _method_problems(names: list[str], study: str) -> list[str]:
    """One line per entry of ``<study>.methods`` that is not a registered method of
    ``study`` (the registry's error names the closest match; check_study names the
    study)."""
    from irm_bench.methods import check_study, get_method

    problems = []
    for i, name in enumerate(names):
        key = f"{study}.methods[{i}]"
        try:
            check_study(get_method(name), study, key)
        except KeyError as err:
            problems.append(
                f"config key '{key}': expected a registered method, found {name!r} ({err.args[0]})"
            )
        except ValueError as err:
            problems.append(str(err))
    return problems
