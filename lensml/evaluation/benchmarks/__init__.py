"""The benchmark registry: the one place that lists lensml's benchmarks.

`get("mt-bench")` returns the registered benchmark for a name or alias; `names()`
lists them in registration order; `register(benchmark)` adds one (a plugin or a test
can register its own without editing lensml). The built-ins are registered on the first
lookup; a benchmark module finds its data with lensml.evaluation.benchmarks.sources, which
takes the benchmark itself, so no benchmark module imports this registry.

To add a benchmark: write one module with a `MultipleChoiceBenchmark` or
`GenerationBenchmark` subclass (see base.py), and add it to `_builtins` below.
"""

from __future__ import annotations

from lensml.errors import LensError
from lensml.evaluation.benchmarks import m_mmlu, mtbench, xcopa, xstorycloze, xwinograd
from lensml.evaluation.benchmarks.base import (
    GENERATION,
    MULTIPLE_CHOICE,
    Benchmark,
    GenerationBenchmark,
    MultipleChoiceBenchmark,
)

__all__ = ["Benchmark", "GenerationBenchmark", "MultipleChoiceBenchmark", "MULTIPLE_CHOICE", "GENERATION",
           "register", "unregister", "get", "names", "find"]

_REGISTRY: dict[str, Benchmark] = {}
_ALIASES: dict[str, str] = {}
_loaded = False


def _builtins() -> list[Benchmark]:
    return [xcopa.XCOPA(), xwinograd.XWinograd(), xstorycloze.XStoryCloze(), m_mmlu.MMMLU(), mtbench.MTBench()]


def _ensure_builtins() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        for benchmark in _builtins():
            register(benchmark)


def register(benchmark: Benchmark, replace: bool = False) -> Benchmark:
    """Add a benchmark instance under its name and aliases; clashes are errors unless replace."""
    if not _loaded:
        _ensure_builtins()
    name = benchmark.name
    if not name or name != name.lower() or not all(c.isalnum() or c == "_" for c in name):
        raise LensError(f"benchmark name {name!r} must be lower-case letters, digits and '_'")
    if benchmark.kind not in (MULTIPLE_CHOICE, GENERATION):
        raise LensError(f"benchmark {name}: kind must be {MULTIPLE_CHOICE} or {GENERATION}, got {benchmark.kind!r}")
    if not benchmark.display_name:
        raise LensError(f"benchmark {name} has no display_name")
    keys = [name, *(a.lower() for a in benchmark.aliases)]
    if not replace:
        taken = [k for k in keys if k in _REGISTRY or k in _ALIASES]
        if taken:
            raise LensError(f"benchmark name or alias {', '.join(taken)} is already registered")
    elif name in _REGISTRY:
        unregister(name)
    _REGISTRY[name] = benchmark
    for alias in keys[1:]:
        _ALIASES[alias] = name
    return benchmark


def unregister(name: str) -> None:
    """Remove a benchmark and its aliases (tests that registered a toy clean up with this)."""
    _REGISTRY.pop(name, None)
    for alias in [a for a, target in _ALIASES.items() if target == name]:
        del _ALIASES[alias]


def find(name_or_alias: str) -> Benchmark | None:
    """The benchmark for a name or alias (any case), or None."""
    _ensure_builtins()
    key = name_or_alias.strip().lower()
    return _REGISTRY.get(_ALIASES.get(key, key))


def get(name_or_alias: str) -> Benchmark:
    """The benchmark for a name or alias; an unknown one is an error listing the known names."""
    benchmark = find(name_or_alias)
    if benchmark is None:
        raise LensError(f"unknown task '{name_or_alias.strip().lower()}': use one of {', '.join(names())}")
    return benchmark


def names() -> list[str]:
    _ensure_builtins()
    return list(_REGISTRY)
