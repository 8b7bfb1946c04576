"""Typed YAML configuration: read YAML files, merge overlays, build frozen dataclasses whose every
key is checked (unknown keys get a did-you-mean, values are validated with scikit-learn's
parameter constraints). :mod:`deepseg.config` defines the sections; this module only loads them.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import typing
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

import yaml
from sklearn.utils._param_validation import InvalidParameterError, validate_parameter_constraints

__all__ = ["ConfigError", "IDENTIFIER", "MODEL_VERSION", "build", "check_identifier", "check_keys",
           "check_relative_path", "merge", "read_yaml", "suggest"]

#: Table and column names: plain SQL identifiers, safe to splice into SQL and paths (checked with
#: ``fullmatch``: ``$`` alone would let a trailing newline through).
IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
#: Model version folder names (``20250101T000000-abc123``): no separators, no "..".
MODEL_VERSION = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")

class ConfigError(ValueError):
    """A bad configuration; the message names the dotted key and the offending value."""


# ------------------------------------------------------------------ sections
class _Loader(yaml.SafeLoader):
    """YAML 1.1 reads ``1e-3`` as a string; read it as the float everyone means."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+$"),
    list("-+0123456789."),
)


def read_yaml(path: Path) -> dict:
    try:
        with open(path) as fh:
            data = yaml.load(fh, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except FileNotFoundError:
        raise ConfigError(f"configuration file {path} not found") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping at the top level, got {type(data).__name__}")
    return data


def merge(base: Mapping, overlay: Mapping) -> dict:
    """Deep merge: mappings merge key by key, any other overlay value replaces the base's."""
    out = dict(base)
    for key, value in overlay.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def suggest(key, valid) -> str | None:
    close = difflib.get_close_matches(str(key), [str(v) for v in valid], n=1, cutoff=0.5)
    return close[0] if close else None


def check_keys(data: Mapping, valid, prefix: str) -> None:
    valid = list(valid)
    dot = f"{prefix}." if prefix else ""
    for key in data:
        if key not in valid:
            close = suggest(key, valid)
            hint = f"did you mean '{dot}{close}'?" if close else f"valid keys: {', '.join(map(str, valid))}"
            raise ConfigError(f"unknown key '{dot}{key}' ({hint})")


def check_identifier(value, key: str) -> None:
    if not isinstance(value, str) or not IDENTIFIER.fullmatch(value):
        raise ConfigError(f"{key} must be an identifier matching {IDENTIFIER.pattern}, got {value!r}")


def check_relative_path(value, key: str) -> None:
    """A relative path of identifier-like parts: it cannot leave ``data.root``."""
    parts = value.split("/") if isinstance(value, str) else []
    if not parts or not all(MODEL_VERSION.fullmatch(p) for p in parts):
        raise ConfigError(f"{key} must be a relative path of names matching {MODEL_VERSION.pattern} "
                          f"(no '..', no leading '/'), got {value!r}")


def validate(constraints: dict, params: dict) -> None:
    try:
        validate_parameter_constraints(constraints, params, caller_name="the configuration")
    except InvalidParameterError as e:
        raise ConfigError(str(e)) from None


def build(cls, data, prefix: str, **extra):
    """`cls` from `data`, recursing into dataclass-typed fields; `prefix` dots the key names."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{prefix.rstrip('.') or 'the configuration'} must be a mapping, got {data!r}")
    if hasattr(cls, "from_mapping"):
        return cls.from_mapping(data, prefix.rstrip("."))
    types = typing.get_type_hints(cls)
    fields = [f.name for f in dataclasses.fields(cls) if f.name not in extra]
    check_keys(data, fields, prefix.rstrip("."))
    missing = [k for k in fields if k not in data]
    if missing:
        raise ConfigError(f"missing key '{prefix}{missing[0]}' (conf/base.yaml must define it)")
    values = {}
    for name in fields:
        value = data[name]
        if dataclasses.is_dataclass(types[name]):
            value = build(types[name], value, f"{prefix}{name}.")
        values[name] = value
    constraints = getattr(cls, "_constraints", {})
    validate({prefix + k: c for k, c in constraints.items()},
              {prefix + k: values[k] for k in constraints})
    for name, value in values.items():  # lists become tuples, mappings read-only: truly frozen
        if isinstance(value, list):
            values[name] = tuple(value)
        elif isinstance(value, dict):
            values[name] = MappingProxyType(dict(value))
    return cls(**values, **extra)
