"""Task specs and benchmark data: parse --tasks, find a local file or the Hub, sample items.

Nothing here knows a benchmark's fields: each benchmark (lensml.evaluation.benchmarks)
says where its data live and how a row becomes an item, and every format is normalised
to the field names of the Hub dataset lm-evaluation-harness uses, so a local copy and
the Hub give the same prompts and the same numbers. Malformed data fail early with the
file and line, never as a wrong accuracy.
"""

from __future__ import annotations

import logging
import random
import re
from pathlib import Path
from typing import Iterator

from lensml.errors import LensError
from lensml.evaluation import benchmarks
from lensml.evaluation.benchmarks.base import MULTIPLE_CHOICE, MCItem, TaskSpec

__all__ = ["TaskSpec", "MCItem", "parse_tasks", "sample_indices", "resolve_local", "data_path", "hub_rows",
           "source_rows", "load_items"]

log = logging.getLogger(__name__)

_SPLIT_PREFERENCE = ("test", "eval", "validation", "val", "dev")


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


def sample_indices(n: int, limit: int | None, seed: int) -> list[int]:
    """At most `limit` of n indices, drawn with a fixed seed and kept in file order."""
    if limit is None or n <= limit:
        return list(range(n))
    if limit < 1:
        raise LensError(f"--limit must be at least 1, got {limit}")
    return sorted(random.Random(seed).sample(range(n), limit))


def _tokens(path: Path) -> set[str]:
    return set(re.split(r"[^A-Za-z0-9]+", str(path).lower()))


def resolve_local(spec: TaskSpec, path: Path) -> Path:
    """A file as given, or the one file of a directory that fits the task and language."""
    if path.is_file():
        return path
    if not path.exists():
        raise LensError(f"data path {path} of task {spec.name}:{spec.lang} does not exist")
    benchmark = benchmarks.get(spec.name)
    exts = benchmark.extensions
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.name.lower().endswith(exts))
    if benchmark.preferred_file:
        files = [p for p in files if p.name == benchmark.preferred_file] or files
    alias = benchmark.hub.lang_alias.get(spec.lang) if benchmark.hub else None
    langs = {spec.lang.lower(), (alias or spec.lang).lower()}
    with_lang = [p for p in files if langs & _tokens(p.relative_to(path))]
    candidates = with_lang or files
    for split in _SPLIT_PREFERENCE:
        if len(candidates) > 1:
            narrowed = [p for p in candidates if split in _tokens(p.relative_to(path))]
            candidates = narrowed or candidates
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise LensError(f"directory {path} has no {'/'.join(exts)} file for task {spec.name}:{spec.lang}")
    listing = ", ".join(str(p) for p in candidates[:6])
    raise LensError(f"directory {path} has several files for {spec.name}:{spec.lang} ({listing}): point at one file")


def data_path(spec: TaskSpec, data_dir: str | None) -> Path | None:
    """The local path of a spec: its @path, else DATA_DIR/<benchmark folder>/<lang> when that exists."""
    if spec.path:
        return Path(spec.path).expanduser()
    if data_dir:
        candidate = Path(data_dir).expanduser() / benchmarks.get(spec.name).folder / spec.lang
        if candidate.exists():
            return candidate
    return None


def hub_rows(repo: str, config: str | None, split: str, hint: str) -> Iterator[tuple[dict, str]]:
    """Rows of a Hub dataset through `datasets` (optional dependency, imported only here)."""
    try:
        from datasets import load_dataset
    except ImportError as err:
        raise LensError(f"loading {repo} from the Hub needs the datasets package: pip install 'lensml[hub]', "
                        f"or use a local copy with {hint}@PATH") from err
    try:
        data = load_dataset(repo, config, split=split)
    except Exception as err:  # datasets raises many types (connection, missing config, ...): all are user-facing
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise LensError(f"cannot load {repo} (config {config}, split {split}) from the Hub: {first}; "
                        f"use a local copy with {hint}@PATH") from err
    for i, row in enumerate(data):
        yield dict(row), f"{repo}[{config}/{split}] row {i}"


def source_rows(spec: TaskSpec, data_dir: str | None) -> tuple[Iterator[tuple[dict, str]], str, Path | None]:
    """(row, where) of a spec's data, a description of the source, and the local file (None for the Hub)."""
    benchmark = benchmarks.get(spec.name)
    local = data_path(spec, data_dir)
    if local is not None:
        path = resolve_local(spec, local)
        return benchmark.read_local(path, spec.lang), str(path), path
    hub = benchmark.hub
    if hub is None:
        raise LensError(f"{benchmark.display_name} has no Hub source: pass {spec}@PATH to a local copy")
    if hub.languages is not None and spec.lang not in hub.languages:
        raise LensError(f"the Hub has {benchmark.display_name} only in {', '.join(hub.languages)}: "
                        f"pass {spec.name}:{spec.lang}@PATH to a local copy")
    config = hub.config_for(spec.lang)
    source = f"hf:{hub.repo}" + (f"/{config}:{hub.split}" if config is not None else "")
    return hub_rows(hub.repo, config, hub.split, str(spec)), source, None


def load_items(spec: TaskSpec, limit: int | None = 1000, seed: int = 1234,
               data_dir: str | None = None) -> tuple[list[MCItem], str]:
    """Validated items of a multiple-choice task (at most `limit`, seeded) and their source."""
    benchmark = benchmarks.get(spec.name)
    if benchmark.kind != MULTIPLE_CHOICE:
        raise LensError(f"task {spec.name} is not a multiple-choice task")
    rows, source, _ = source_rows(spec, data_dir)
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
