"""The registry of training methods: the only place that lists them.

A method is one unit: a module holding its `Method` subclass and, if it has options, its
config dataclass; one `register(...)` line below ties the name, the class and the config
together (peft's register_peft_method, for the same reason: nothing else needs an edit).
A config becomes a section of RunConfig, YAML and the `lens run` / `lens train` / `lens
sweep` flags (`--SECTION.option`); several methods may share one section (xsft, xsft-full,
xsft-top and qalign read `sft`), which is why the section is named apart from the method.
"""

from __future__ import annotations

from dataclasses import dataclass

from lensml.errors import LensError
from lensml.methods.base import Method, MethodInputs
from lensml.methods.lens import LensMethod
from lensml.methods.qalign import QAlignMethod
from lensml.methods.sdrrl import SDRRLConfig, SDRRLMethod
from lensml.methods.sft import SFTConfig, XSFTFullMethod, XSFTMethod, XSFTTopMethod
from lensml.methods.steer import SteerConfig, SteerMethod


@dataclass(frozen=True)
class Registration:
    """One registered method: its name, class, and the config section holding its options (None: no options)."""

    name: str
    method: type[Method]
    config: type | None = None
    section: str | None = None


_REGISTRY: dict[str, Registration] = {}


def register(name: str, method: type[Method], config: type | None = None, section: str | None = None) -> Registration:
    """Make a method available as `lens run --method NAME`, with its options (if any) as section SECTION.

    section defaults to the name (dashes as underscores). Registering a name again with the same
    class and config is a no-op (a module imported twice); with another, a ValueError, as is a
    section another method fills with a different config class.
    """
    if not (isinstance(method, type) and issubclass(method, Method)):
        raise TypeError(f"method '{name}': {method!r} is not a lensml.methods.base.Method subclass")
    if config is None and section is not None:
        raise ValueError(f"method '{name}': section '{section}' given without a config class")
    if config is not None:
        section = section or name.replace("-", "_")
        if not section.isidentifier():
            raise ValueError(f"method '{name}': section '{section}' is not a Python identifier")
    entry = Registration(name, method, config, section)
    old = _REGISTRY.get(name)
    if old is not None and old != entry:
        raise ValueError(f"method name '{name}' is already registered by {old.method.__name__}")
    shared = sections().get(section) if section else None
    if shared is not None and shared is not config:
        raise ValueError(f"method '{name}': section '{section}' already holds {shared.__name__}, not {config.__name__}")
    _REGISTRY[name] = entry
    return entry


def unregister(name: str) -> None:
    """Forget a method (its section goes too when no other method uses it)."""
    _REGISTRY.pop(name, None)


def names() -> list[str]:
    return sorted(_REGISTRY)


def registration(name: str) -> Registration:
    if name not in _REGISTRY:
        raise LensError(f"unknown method '{name}': use one of {', '.join(names())}")
    return _REGISTRY[name]


def get(name: str) -> Method:
    """A fresh instance of the method called name (its .name set to it)."""
    method = registration(name).method()
    method.name = name
    return method


def sections() -> dict[str, type]:
    """{section: config class} of the registered methods, in registration order: RunConfig's method sections."""
    out: dict[str, type] = {}
    for entry in _REGISTRY.values():
        if entry.section is not None:
            out.setdefault(entry.section, entry.config)
    return out


def section_titles() -> dict[str, str]:
    """{section: help title}: the config's docstring first line, then the methods that read it."""
    titles = {}
    for section, config in sections().items():
        first = (config.__doc__ or section).strip().splitlines()[0].rstrip(".")
        if len(first) > 1 and first[1].islower():
            first = first[0].lower() + first[1:]
        users = ", ".join(e.name for e in _REGISTRY.values() if e.section == section)
        titles[section] = f"{first} (--method {users})"
    return titles


def options_of(name: str, cfg) -> object | None:
    """Method name's options read from a config tree (cfg.SECTION), None for a method without options.

    A tree built before the method registered has no such section; its defaults are the options then.
    """
    entry = registration(name)
    if entry.section is None:
        return None
    options = getattr(cfg, entry.section, None)
    return options if options is not None else entry.config()


register("lens", LensMethod)
register("xsft", XSFTMethod, SFTConfig, section="sft")
register("xsft-full", XSFTFullMethod, SFTConfig, section="sft")
register("qalign", QAlignMethod, SFTConfig, section="sft")
register("steer", SteerMethod, SteerConfig)
register("sdrrl", SDRRLMethod, SDRRLConfig)
register("xsft-top", XSFTTopMethod, SFTConfig, section="sft")

__all__ = ["Method", "MethodInputs", "Registration", "get", "names", "options_of", "register", "registration",
           "section_titles", "sections", "unregister"]
