"""Where a benchmark's rows come from: a local file or folder, or the Hub, for any Benchmark.

These helpers take the benchmark itself (not its registered name), so a benchmark module can use
them without importing the registry that lists it: no import cycle between the registry, the
benchmark modules and the task parser (lensml.evaluation.tasks).
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Iterator

from lensml.errors import LensError
from lensml.evaluation.benchmarks.base import Benchmark, TaskSpec

_SPLIT_PREFERENCE = ("test", "eval", "validation", "val", "dev")


def sample_indices(n: int, limit: int | None, seed: int) -> list[int]:
    """At most `limit` of n indices, drawn with a fixed seed and kept in file order."""
    if limit is None or n <= limit:
        return list(range(n))
    if limit < 1:
        raise LensError(f"--limit must be at least 1, got {limit}")
    return sorted(random.Random(seed).sample(range(n), limit))


def _tokens(path: Path) -> set[str]:
    return set(re.split(r"[^A-Za-z0-9]+", str(path).lower()))


def resolve_local(benchmark: Benchmark, spec: TaskSpec, path: Path) -> Path:
    """A file as given, or the one file of a directory that fits the task and language."""
    if path.is_file():
        return path
    if not path.exists():
        raise LensError(f"data path {path} of task {spec.name}:{spec.lang} does not exist")
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


def data_path(benchmark: Benchmark, spec: TaskSpec, data_dir: str | None) -> Path | None:
    """The local path of a spec: its @path, else DATA_DIR/<benchmark folder>/<lang> when that exists."""
    if spec.path:
        return Path(spec.path).expanduser()
    if data_dir:
        candidate = Path(data_dir).expanduser() / benchmark.folder / spec.lang
        if candidate.exists():
            return candidate
    return None


def hub_rows(repo: str, config: str | None, split: str, hint: str) -> Iterator[tuple[dict, str]]:
    """Rows of a Hub dataset through `datasets` (optional dependency, imported only here)."""
    try:
        from datasets import load_dataset  # optional dependency (lensml[hub])
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


def source_rows(benchmark: Benchmark, spec: TaskSpec, data_dir: str | None) -> tuple[Iterator[tuple[dict, str]], str, Path | None]:
    """(row, where) of a spec's data, a description of the source, and the local file (None for the Hub)."""
    local = data_path(benchmark, spec, data_dir)
    if local is not None:
        path = resolve_local(benchmark, spec, local)
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
