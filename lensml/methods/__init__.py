"""The registry of training methods: the only place that lists them.

Adding a method is one module with a `Method` subclass and one line below.
"""

from __future__ import annotations

from lensml.errors import LensError
from lensml.methods.base import Method, MethodInputs

_REGISTRY: dict[str, type[Method]] = {}


def register(cls: type[Method]) -> type[Method]:
    """Class decorator: make a method available as `lens run --method NAME`."""
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"method name '{cls.name}' is already registered by {_REGISTRY[cls.name].__name__}")
    _REGISTRY[cls.name] = cls
    return cls


def names() -> list[str]:
    return sorted(_REGISTRY)


def get(name: str) -> Method:
    """A fresh instance of the method called name."""
    if name not in _REGISTRY:
        raise LensError(f"unknown method '{name}': use one of {', '.join(names())}")
    return _REGISTRY[name]()


from lensml.methods import lens  # noqa: E402,F401  (registers LENS)
from lensml.methods import sft, qalign  # noqa: E402,F401  (registers xsft, xsft-full, qalign)
from lensml.methods import steer  # noqa: E402,F401  (registers steer)

__all__ = ["Method", "MethodInputs", "get", "names", "register"]
