"""The benchmark registry: the one place that lists lensml's benchmarks.

`get("mt-bench")` returns the registered benchmark for a name or alias; `names()`
lists them in registration order; `register(benchmark)` adds one (a plugin or a test
can register its own without editing lensml). The built-ins are registered on the first
lookup; a benchmark module finds its data with lensml.evaluation.benchmarks.sources, which
takes the benchmark itself, so no benchmark module imports this registry.

Task names are also accepted in lm-evaluation-harness's spelling (`xcopa_zh`, `xwinograd_jp`):
LM_EVAL below is the one table of how lm-eval names each benchmark and the languages it spells
differently; `lm_eval_name` gives that name (the keys of a result's lm-eval-shaped sections) and
`from_lm_eval` reads it back (`NAME_LANG` works for any registered benchmark or alias).

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
           "register", "unregister", "get", "names", "find", "LM_EVAL", "lm_eval_name", "from_lm_eval"]

_REGISTRY: dict[str, Benchmark] = {}
_ALIASES: dict[str, str] = {}
_loaded = False

#: lensml name -> (lm-eval's task prefix, {lensml language: lm-eval's spelling where it differs}).
#: lm-eval names a task PREFIX_LANG; it follows the Hub configs, so Japanese XWinograd is `xwinograd_jp`.
LM_EVAL: dict[str, tuple[str, dict[str, str]]] = {
    "xcopa": ("xcopa", {}),
    "xwinograd": ("xwinograd", {"ja": "jp"}),
    "xstorycloze": ("xstorycloze", {}),
    "m_mmlu": ("m_mmlu", {}),
}


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


def lm_eval_name(name: str, lang: str) -> str:
    """lm-eval's name of a task in a language (xwinograd, ja -> xwinograd_jp); NAME_LANG where lm-eval has none."""
    prefix, spelled = LM_EVAL.get(name, (name, {}))
    return f"{prefix}_{spelled.get(lang, lang)}"


def from_lm_eval(task: str) -> tuple[Benchmark, str] | None:
    """(benchmark, lensml language) of an lm-eval task name such as xcopa_zh or xwinograd_jp; None if it is not one."""
    key = task.strip().lower()
    for name, (prefix, spelled) in sorted(LM_EVAL.items(), key=lambda kv: -len(kv[1][0])):
        if key.startswith(prefix + "_") and len(key) > len(prefix) + 1:
            lang = key[len(prefix) + 1:]
            return get(name), {v: k for k, v in spelled.items()}.get(lang, lang)
    head, sep, lang = key.rpartition("_")
    benchmark = find(head) if sep and head and lang else None
    return (benchmark, lang) if benchmark is not None else None
