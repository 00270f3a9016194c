"""A run config's values: typed from what YAML, papermill and forms hand over (strings, ints for floats,
comma lists), held to each field's limits (min, max, choices), and the error that names a bad one.

Kept apart from :mod:`nbtools.config` (the fields, their help and limits) so that file reads as the list
of knobs; this one knows nothing of which fields exist beyond what their metadata says.
"""

from __future__ import annotations

import difflib
import math
import typing
from typing import Optional

from nbtools.errors import UserError


class ConfigError(UserError, ValueError):
    """A config value that cannot work; the message names the field and the fix."""

    def __init__(self, field_name: str, message: str, fix: str, source: Optional[str] = None):
        self.field = field_name
        self.reason = message
        self.fix = fix
        self.source = source
        where = f"{source}: " if source else ""
        super().__init__(f"{where}{field_name}: {message} (fix: {fix})")


def plain(value):
    """A tuple as a list: what YAML and JSON write."""
    return list(value) if isinstance(value, tuple) else value


def coerce(f, hint, value):
    """Field ``f``'s value from what YAML, papermill and forms hand us (e.g. '5e-5' as a string, 3 for 3.0);
    ``hint`` is the field's type annotation."""
    args = typing.get_args(hint)
    optional = type(None) in args
    if optional and (value is None or value == ""):
        return None
    base = next((a for a in args if a is not type(None)), hint) if optional else hint
    name = f.name
    if base is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "yes", "on", "1", "false", "no", "off", "0"):
            return value.strip().lower() in ("true", "yes", "on", "1")
        raise ConfigError(name, f"expected true or false, got {value!r}", f"write {name}: true or {name}: false")
    if base is int:
        if isinstance(value, bool):
            raise ConfigError(name, f"expected a whole number, got {value!r}", f"write a number, e.g. {name}: 8")
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(float(value)) if float(value).is_integer() else _bad_number(name, value, "whole number")
            except ValueError:
                _bad_number(name, value, "whole number")
        if not isinstance(value, int):
            _bad_number(name, value, "whole number")
        return value
    if base is float:
        if isinstance(value, bool):
            _bad_number(name, value, "number")
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                _bad_number(name, value, "number")
        if not isinstance(value, (int, float)):
            _bad_number(name, value, "number")
        value = float(value)
        if not math.isfinite(value):
            raise ConfigError(name, f"{value} is not a finite number", f"give {name} a finite value")
        return value
    if base is str:
        if not isinstance(value, str):
            if isinstance(value, (int, float)) and not isinstance(value, bool) and f.metadata.get("kind") == "path":
                return str(value)
            raise ConfigError(name, f"expected text, got {value!r}", f"write {name}: some-text")
        return value
    if name == "target_modules":
        if isinstance(value, str):
            return value
        if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
            return list(value)
        raise ConfigError(name, f"expected 'default', 'all-linear', a list of names or a regex, got {value!r}",
                          "e.g. target_modules: [q_proj, v_proj]")
    if name == "loss_type":
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
            raise ConfigError(name, f"expected a list of loss names, got {value!r}", "e.g. loss_type: [sigmoid, sft]")
        return list(value)
    if name == "loss_weights":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(name, f"expected a list of numbers, got {value!r}", "e.g. loss_weights: [1.0, 0.2]")
        out = []
        for v in value:
            try:
                out.append(float(v))
            except (TypeError, ValueError):
                raise ConfigError(name, f"{v!r} is not a number", "e.g. loss_weights: [1.0, 0.2]") from None
        return out
    return value


def _bad_number(name, value, what):
    raise ConfigError(name, f"expected a {what}, got {value!r}", f"write a {what}, e.g. {name}: 1")


def check_limits(f, value) -> None:
    if value is None:
        return
    meta = f.metadata
    name = f.name
    values = value if isinstance(value, list) else [value]
    for v in values:
        if "choices" in meta and isinstance(v, str) and v not in meta["choices"]:
            guess = difflib.get_close_matches(v, meta["choices"], n=1)
            hint = f"did you mean '{guess[0]}'? " if guess else ""
            raise ConfigError(name, f"{v!r} is not one of {', '.join(meta['choices'])}",
                              f"{hint}use one of: {', '.join(meta['choices'])}")
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            if "min" in meta and v < meta["min"]:
                raise ConfigError(name, f"{v} is below the minimum {meta['min']}",
                                  f"set {name} to {meta['min']} or more")
            if "max" in meta and v > meta["max"]:
                raise ConfigError(name, f"{v} is above the maximum {meta['max']}",
                                  f"set {name} to {meta['max']} or less")
