"""Configuration machinery: a tree of dataclasses, YAML files, dotted command-line overrides.

torchtune style: a YAML file sets any subset of the fields, and `--section.field value`
on the command line overrides it; every field has a default and help text (the
`help` metadata), which is what `lens run --help` lists, grouped by section. Each
dataclass checks its own values in __post_init__, so a bad number is refused when the
config is built, before any data or model is loaded.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from pathlib import Path

import yaml

from lensml.errors import LensError


def _base_type(tp):
    """Strip Optional: `int | None` -> int."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        return [a for a in typing.get_args(tp) if a is not type(None)][0]
    return tp


def _number(value, tp, name: str):
    if isinstance(value, bool):
        raise ValueError(value)
    if tp is int:
        if isinstance(value, float):
            if not value.is_integer():
                raise LensError(f"option {name} must be a whole number, got {value}")
            return int(value)
        text = str(value).strip()
        try:
            return int(text)
        except ValueError:
            as_float = float(text)  # '1.7' or '2.0'
            if not as_float.is_integer():
                raise LensError(f"option {name} must be a whole number, got {text}") from None
            return int(as_float)
    result = float(value)
    if math.isnan(result):
        raise LensError(f"option {name} cannot be NaN")
    return result


def coerce(value, tp, name: str):
    """Turn a command-line or YAML value into the field's type."""
    optional = type(None) in typing.get_args(tp)
    tp = _base_type(tp)
    if value is None or (optional and isinstance(value, str) and value.lower() in ("none", "null", "")):
        if optional:
            return None
        raise LensError(f"option {name} cannot be empty")
    origin = typing.get_origin(tp)
    try:
        if tp is bool:
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("1", "true", "yes", "on"):
                return True
            if str(value).lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if origin is list:
            items = value if isinstance(value, list) else [v for v in str(value).split(",") if v.strip()]
            return [coerce(v.strip() if isinstance(v, str) else v, typing.get_args(tp)[0], name) for v in items]
        if origin is dict:
            if isinstance(value, dict):
                return {str(k): _number(v, float, f"{name}.{k}") for k, v in value.items()}
            pairs = [p.split("=", 1) for p in str(value).split(",") if p.strip()]
            if any(len(p) != 2 for p in pairs):
                raise ValueError(value)
            return {k.strip(): _number(v, float, f"{name}.{k.strip()}") for k, v in pairs}
        if tp in (int, float):
            return _number(value, tp, name)
        if isinstance(value, (dict, list)):
            raise ValueError(value)
        return tp(value)
    except (TypeError, ValueError) as err:
        raise LensError(f"option {name}: cannot read '{value}' as {getattr(tp, '__name__', tp)}") from err


def set_path(cfg, dotted: str, value) -> None:
    """Set cfg.a.b = value (coerced), with a clear error for an unknown option."""
    *parents, leaf = dotted.split(".")
    obj = cfg
    for p in parents:
        if not dataclasses.is_dataclass(getattr(obj, p, None)):
            raise LensError(f"unknown option '{dotted}': see lens run --help")
        obj = getattr(obj, p)
    hints = typing.get_type_hints(type(obj))
    if leaf not in hints or dataclasses.is_dataclass(getattr(obj, leaf, None)):
        raise LensError(f"unknown option '{dotted}': see lens run --help")
    setattr(obj, leaf, coerce(value, hints[leaf], dotted))


def flat_options(doc: dict, prefix: str = "") -> dict:
    """A nested mapping of options (a YAML file's, a manifest's config, a sweep grid) as dotted name -> value;
    `lambdas` is one option whose value is a mapping (language -> lambda), so it stays whole, also when its key
    is written dotted (`train.loss.lambdas: {zh: 1}`, as sweep grids do)."""
    flat = {}
    for k, v in doc.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and not key.endswith("lambdas"):
            flat.update(flat_options(v, key + "."))
        else:
            flat[key] = v
    return flat


def read_yaml(path: str) -> dict:
    p = Path(path)
    if not p.is_file():
        raise LensError(f"config file {p} does not exist: check --config")
    try:
        doc = yaml.safe_load(p.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise LensError(f"config file {p} is not UTF-8 text: re-save it as UTF-8") from err
    except yaml.YAMLError as err:
        raise LensError(f"config file {p} is not valid YAML: {str(err).splitlines()[0]}") from err
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise LensError(f"config file {p} must be a mapping of options (e.g. 'langs: [zh]'), not a {type(doc).__name__}")
    return doc


def _construct(cls, values: dict):
    """Build cls and its nested configs from already coerced values, running every __post_init__ once."""
    kwargs = {}
    for f in dataclasses.fields(cls):
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default
        if dataclasses.is_dataclass(default):
            kwargs[f.name] = _construct(type(default), values.get(f.name, {}))
        elif f.name in values:
            kwargs[f.name] = values[f.name]
    return cls(**kwargs)


def load_config(path: str | None, overrides: dict[str, object], cls):
    """Defaults, then the YAML file, then command-line overrides; validated as a whole."""
    flat = flat_options(read_yaml(path)) if path else {}
    flat.update(overrides)
    scratch = _unvalidated(cls)
    for k, v in flat.items():
        set_path(scratch, k, v)
    return _construct(cls, _values(scratch))


def _unvalidated(cls):
    """An instance of cls whose fields can be set one by one before validation runs."""
    obj = object.__new__(cls)
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        if dataclasses.is_dataclass(default):
            default = _unvalidated(type(default))
        object.__setattr__(obj, f.name, default)
    return obj


def _values(obj) -> dict:
    return {f.name: (_values(getattr(obj, f.name)) if dataclasses.is_dataclass(getattr(obj, f.name))
                     else getattr(obj, f.name)) for f in dataclasses.fields(obj)}


def iter_fields(cls, prefix: str = ""):
    """(dotted name, type, default, field) for every leaf option of a config class, in declaration order."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default
        if dataclasses.is_dataclass(default):
            yield from iter_fields(type(default), f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", hints[f.name], default, f


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)
