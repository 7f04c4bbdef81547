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
from lensml.evaluation.benchmarks.sources import check_source, sample_indices, select_indices, source_rows

__all__ = ["TaskSpec", "MCItem", "parse_tasks", "sample_indices", "select_indices", "load_task", "load_items",
           "check_data", "check_steerable"]

log = logging.getLogger(__name__)


def parse_tasks(text: str) -> list[TaskSpec]:
    """`xcopa:zh,mtbench:zh@data/mt-bench/zh` -> specs; lm-eval's spelling (`xcopa_zh`, `xwinograd_jp`) names the
    same task; unknown names or duplicates are errors."""
    specs: list[TaskSpec] = []
    for raw in (part.strip() for part in (text or "").split(",")):
        if not raw:
            continue
        head, _, path = raw.partition("@")
        name, sep, lang = head.partition(":")
        lang = lang.strip()
        lm_eval = benchmarks.from_lm_eval(head) if not sep and benchmarks.find(head) is None else None
        if lm_eval is not None:
            benchmark, lang = lm_eval
        elif not sep and "_" in head and benchmarks.find(head) is None:
            raise LensError(f"unknown task '{head.strip().lower()}': use one of {', '.join(benchmarks.names())} as "
                            f"name:lang or lm-eval's name_lang, e.g. xcopa:zh or xcopa_zh")
        elif not sep or not lang:
            raise LensError(f"task '{raw}' has no language: write name:lang or lm-eval's name_lang, e.g. xcopa:zh "
                            f"or xcopa_zh")
        else:
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


def load_task(spec: TaskSpec, limit: int | None = None, sample: int | None = None, seed: int = 1234,
              data_dir: str | None = None) -> tuple[list[MCItem], str, int]:
    """Validated items of a multiple-choice task (the first `limit`, or `sample` drawn with `seed`, else all),
    their source, and how many the source holds (lm-eval's n-samples original)."""
    benchmark = benchmarks.get(spec.name)
    if benchmark.kind != MULTIPLE_CHOICE:
        raise LensError(f"task {spec.name} is not a multiple-choice task")
    rows, source, _ = source_rows(benchmark, spec, data_dir)
    items = [benchmark.normalise(row, where, spec.lang) for row, where in rows]
    if not items:
        raise LensError(f"{source}: no items for language {spec.lang} (empty file?)")
    for doc_id, item in enumerate(items):
        item.doc_id = doc_id
    chosen = [items[i] for i in select_indices(len(items), limit, sample, seed)]
    log.info("%s: %d of %d items from %s", spec, len(chosen), len(items), source)
    return chosen, source, len(items)


def load_items(spec: TaskSpec, limit: int | None = None, seed: int = 1234, data_dir: str | None = None,
               sample: int | None = None) -> tuple[list[MCItem], str]:
    """Validated items of a multiple-choice task (see load_task) and their source."""
    items, source, _ = load_task(spec, limit, sample, seed, data_dir)
    return items, source


def check_data(tasks_text: str, data_dir: str | None) -> None:
    """Every task's data is where the options say (its @path, DATA_DIR/<task>/<lang>/, or the Hub with `datasets`
    installed): a missing folder or file fails here, in one line, before any model time is spent."""
    for spec in parse_tasks(tasks_text):
        check_source(benchmarks.get(spec.name), spec, data_dir)


def check_steerable(cfg) -> None:
    """Refuse benchmarks whose score steering would not change as a steered model's (steering hooks act on each forward's last position):
    multiple-choice tasks in loglik mode. For `lens eval --steer` and a steer run's --eval-tasks alike."""
    if cfg.scoring.mode == "loglik" and cfg.tasks and any(
            benchmarks.get(spec.name).kind == MULTIPLE_CHOICE for spec in parse_tasks(cfg.tasks)):
        raise LensError("steering with loglik scoring would steer only each continuation's last token, not the "
                        "whole answer: pass --scoring.mode letter, or evaluate generation tasks only")
