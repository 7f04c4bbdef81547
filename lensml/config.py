"""Run configuration: nested dataclasses, YAML files, dotted command-line overrides.

torchtune style: a YAML file sets any subset of the fields, and `--section.field value`
on the command line overrides it; every field has a default and help text (the
`help` metadata), which is what `lens run --help` lists.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from lensml.errors import LensError
from lensml.evaluation.quick import QuickEvalConfig
from lensml.models import ModelConfig
from lensml.probing import ProbeConfig
from lensml.training import TrainConfig


@dataclass
class RunConfig:
    """Everything `lens run` does: probe, train, save, evaluate."""

    model: ModelConfig = field(default_factory=ModelConfig)
    langs: list[str] = field(default_factory=lambda: ["zh"], metadata={"help": "target languages, comma-separated"})
    central: str = field(default="en", metadata={"help": "the central language whose knowledge is inherited"})
    probe_data: str = field(default="embedded", metadata={"help": "probe texts: embedded, a .jsonl/.json path, CohereForAI/aya_dataset, aya:PATH"})
    train_data: str = field(default="embedded", metadata={"help": "parallel prompts: embedded, a .jsonl/.json path, MBZUAI/Bactrian-X, bactrian-x:DIR"})
    out: str = field(default="runs/default", metadata={"help": "output directory"})
    overwrite: bool = field(default=False, metadata={"help": "replace an existing output directory"})
    eval_tasks: str | None = field(default=None, metadata={"help": "extra evaluation tasks after training, e.g. xcopa:zh,mtbench:zh"})
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: QuickEvalConfig = field(default_factory=QuickEvalConfig)


def _hints(cls) -> dict:
    return typing.get_type_hints(cls)


def _base_type(tp):
    """Strip Optional: `int | None` -> int."""
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        non_none = [a for a in args if a is not type(None)]
        return non_none[0]
    return tp


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
                return {str(k): float(v) for k, v in value.items()}
            pairs = [p.split("=", 1) for p in str(value).split(",") if p.strip()]
            if any(len(p) != 2 for p in pairs):
                raise ValueError(value)
            return {k.strip(): float(v) for k, v in pairs}
        return tp(value)
    except (TypeError, ValueError) as err:
        raise LensError(f"option {name}: cannot read '{value}' as {getattr(tp, '__name__', tp)}") from err


def set_path(cfg, dotted: str, value) -> None:
    """Set cfg.a.b = value (coerced), with a clear error for an unknown option."""
    *parents, leaf = dotted.split(".")
    obj = cfg
    for p in parents:
        if not dataclasses.is_dataclass(obj) or not hasattr(obj, p):
            raise LensError(f"unknown option '{dotted}': see lens run --help")
        obj = getattr(obj, p)
    hints = _hints(type(obj))
    if leaf not in hints or dataclasses.is_dataclass(getattr(obj, leaf, None)):
        raise LensError(f"unknown option '{dotted}': see lens run --help")
    setattr(obj, leaf, coerce(value, hints[leaf], dotted))


def _flatten(doc: dict, prefix: str = "") -> dict:
    flat = {}
    for k, v in doc.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and k not in ("lambdas",):
            flat.update(_flatten(v, key + "."))
        else:
            flat[key] = v
    return flat


def load_config(path: str | None, overrides: dict[str, object], cls=RunConfig):
    """Defaults, then the YAML file, then command-line overrides."""
    cfg = cls()
    if path:
        p = Path(path)
        if not p.is_file():
            raise LensError(f"config file {p} does not exist: check --config")
        try:
            doc = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as err:
            raise LensError(f"config file {p} is not valid YAML: {str(err).splitlines()[0]}") from err
        for k, v in _flatten(doc).items():
            set_path(cfg, k, v)
    for k, v in overrides.items():
        set_path(cfg, k, v)
    validate(cfg)
    return cfg


def validate(cfg) -> None:
    """Re-run every nested config's own checks after fields were set one by one."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            validate(value)
    if hasattr(cfg, "__post_init__"):
        cfg.__post_init__()


def iter_fields(cls, prefix: str = ""):
    """(dotted name, type, default, help) for every leaf option of a config class."""
    hints = _hints(cls)
    instance = cls()
    for f in dataclasses.fields(cls):
        value = getattr(instance, f.name)
        if dataclasses.is_dataclass(value):
            yield from iter_fields(type(value), f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", hints[f.name], value, f.metadata.get("help", "")


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)
