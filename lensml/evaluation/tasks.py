"""Task specs: parse --tasks against the registry, load a multiple-choice task's items (their files and the
Hub are found by lensml.evaluation.benchmarks.sources).

Nothing here knows a benchmark's fields: each benchmark (lensml.evaluation.benchmarks)
says where its data live and how a row becomes an item, and every format is normalised
to the field names of the Hub dataset lm-evaluation-harness uses, so a local copy and
the Hub give the same prompts and the same numbers. Malformed data fail early with the
file and line, never as a wrong accuracy.
"""

from __future__ import annotations

import logging

from lensml.errors import LensError
from lensml.evaluation import benchmarks
from lensml.evaluation.benchmarks.base import MULTIPLE_CHOICE, MCItem, TaskSpec
from lensml.evaluation.benchmarks.sources import sample_indices, source_rows

__all__ = ["TaskSpec", "MCItem", "parse_tasks", "sample_indices", "load_items", "check_steerable"]

log = logging.getLogger(__name__)


def parse_tasks(text: str) -> list[TaskSpec]:
    """`xcopa:zh,mtbench:zh@data/mt-bench/zh` -> specs; unknown names or duplicates are errors."""
    specs: list[TaskSpec] = []
    for raw in (part.strip() for part in (text or "").split(",")):
        if not raw:
            continue
        head, _, path = raw.partition("@")
        name, sep, lang = head.partition(":")
        lang = lang.strip()
        if not sep or not lang:
            raise LensError(f"task '{raw}' has no language: write name:lang, e.g. xcopa:zh")
        benchmark = benchmarks.find(name)
        if benchmark is None:
            raise LensError(f"unknown task '{name.strip().lower()}' in '{raw}': use one of {', '.join(benchmarks.names())}")
        if "@" in raw and not path.strip():
            raise LensError(f"task '{raw}' has an empty path after '@'")
        spec = TaskSpec(benchmark.name, lang, path.strip() or None)
        if any(s.name == spec.name and s.lang == spec.lang for s in specs):
            raise LensError(f"task {spec.name}:{lang} is listed twice in --tasks")
        specs.append(spec)
    if not specs:
        raise LensError("no task given: pass e.g. --tasks xcopa:zh,mtbench:zh")
    return specs


def load_items(spec: TaskSpec, limit: int | None = 1000, seed: int = 1234,
               data_dir: str | None = None) -> tuple[list[MCItem], str]:
    """Validated items of a multiple-choice task (at most `limit`, seeded) and their source."""
    benchmark = benchmarks.get(spec.name)
    if benchmark.kind != MULTIPLE_CHOICE:
        raise LensError(f"task {spec.name} is not a multiple-choice task")
    rows, source, _ = source_rows(benchmark, spec, data_dir)
    items = [benchmark.normalise(row, where, spec.lang) for row, where in rows]
    if not items:
        raise LensError(f"{source}: no items for language {spec.lang} (empty file?)")
    chosen = [items[i] for i in sample_indices(len(items), limit, seed)]
    log.info("%s: %d of %d items from %s", spec, len(chosen), len(items), source)
    return chosen, source


def check_steerable(cfg) -> None:
    """Refuse benchmarks whose score steering would not change as a steered model's (steering hooks act on each forward's last position):
    multiple-choice tasks in loglik mode. For `lens eval --steer` and a steer run's --eval-tasks alike."""
    if cfg.scoring.mode == "loglik" and cfg.tasks and any(
            benchmarks.get(spec.name).kind == MULTIPLE_CHOICE for spec in parse_tasks(cfg.tasks)):
        raise LensError("steering with loglik scoring would steer only each continuation's last token, not the "
                        "whole answer: pass --scoring.mode letter, or evaluate generation tasks only")
