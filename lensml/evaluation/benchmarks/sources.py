"""Where a benchmark's rows come from: a local file or folder, or the Hub, for any Benchmark.

These helpers take the benchmark itself (not its registered name), so a benchmark module can use
them without importing the registry that lists it: no import cycle between the registry, the
benchmark modules and the task parser (lensml.evaluation.tasks).
"""

from __future__ import annotations

import importlib.util
import random
import re
import sys
from pathlib import Path
from typing import Iterator

from lensml.errors import LensError
from lensml.evaluation.benchmarks.base import Benchmark, TaskSpec

_SPLIT_PREFERENCE = ("test", "eval", "validation", "val", "dev")


def sample_indices(n: int, size: int | None, seed: int) -> list[int]:
    """At most `size` of n indices, drawn with a fixed seed and kept in file order (--sample)."""
    if size is None or n <= size:
        return list(range(n))
    if size < 1:
        raise LensError(f"--sample must be at least 1, got {size}")
    return sorted(random.Random(seed).sample(range(n), size))


def select_indices(n: int, limit: int | None = None, sample: int | None = None, seed: int = 1234) -> list[int]:
    """The items a task evaluates: lm-eval's --limit N is the first N, --sample N a seeded sample of N; neither, all."""
    if limit is not None and sample is not None:
        raise LensError("--limit and --sample are both set: pass one (--limit N: the first N items, "
                        "--sample N: N items drawn with --seed)")
    if limit is not None:
        if limit < 1:
            raise LensError(f"--limit must be at least 1, got {limit}")
        return list(range(min(n, limit)))
    return sample_indices(n, sample, seed)


def _tokens(path: Path) -> set[str]:
    return set(re.split(r"[^A-Za-z0-9]+", str(path).lower()))


def resolve_local(benchmark: Benchmark, spec: TaskSpec, path: Path) -> Path:
    """A file as given, or the one file of a directory that fits the task and language."""
    if path.is_file():
        return path
    if not path.exists():
        raise LensError(f"data path {path} of task {spec.name}:{spec.lang} does not exist: fix the path after '@' "
                        f"in --tasks, or put the file there")
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
        raise LensError(f"directory {path} has no {'/'.join(exts)} file for task {spec.name}:{spec.lang}: put the "
                        f"task's file there (e.g. {_example_file(benchmark, spec)}) or pass {spec.name}:{spec.lang}@FILE")
    listing = ", ".join(str(p) for p in candidates[:6])
    raise LensError(f"directory {path} has several files for {spec.name}:{spec.lang} ({listing}): point at one file")


def _example_file(benchmark: Benchmark, spec: TaskSpec) -> str:
    return benchmark.preferred_file or f"test.{spec.lang}{benchmark.extensions[0]}"


def data_path(benchmark: Benchmark, spec: TaskSpec, data_dir: str | None) -> Path | None:
    """The local path of a spec: its @path, else DATA_DIR/<benchmark folder>/<lang>; None: the Hub.

    A data directory that is given is where the data must be: a missing folder is an error naming it,
    never a silent download (LENSML_EVAL_DATA set for a shell would otherwise hide a misplaced folder)."""
    if spec.path:
        return Path(spec.path).expanduser()
    if not data_dir:
        return None
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise LensError(f"benchmark data folder {root} (--data-dir, --benchmarks.data-dir in lens run, or "
                        f"LENSML_EVAL_DATA) {'is not a folder' if root.exists() else 'does not exist'}: point it at "
                        f"the folder holding <task>/<lang>/ (e.g. ../shared/data), or set it to none for the Hub")
    candidate = root / benchmark.folder / spec.lang
    alias = benchmark.hub.lang_alias.get(spec.lang) if benchmark.hub else None
    if not candidate.exists() and alias and (root / benchmark.folder / alias).exists():
        candidate = root / benchmark.folder / alias  # the Hub's (and lm-eval's) spelling: xwinograd/jp
    if not candidate.exists():
        raise LensError(f"no data for task {spec.name}:{spec.lang} in {root}: put its file in {candidate}/ (e.g. "
                        f"{_example_file(benchmark, spec)}), pass {spec.name}:{spec.lang}@FILE, or load it from the Hub "
                        f"with --data-dir none (lens run: --benchmarks.data-dir none)")
    return candidate


def datasets_available() -> bool:
    """Whether `datasets` can be imported, without importing it (that takes seconds)."""
    if "datasets" in sys.modules:
        return sys.modules["datasets"] is not None
    return importlib.util.find_spec("datasets") is not None


def check_source(benchmark: Benchmark, spec: TaskSpec, data_dir: str | None) -> str:
    """Fail now, in one line naming the missing folder or file, when a task's data cannot be found; returns
    the local file or the Hub source it will read. Called when the options are built, before any model loads."""
    local = data_path(benchmark, spec, data_dir)
    if local is not None:
        return str(resolve_local(benchmark, spec, local))
    hub = _hub_of(benchmark, spec)
    if not datasets_available():
        raise LensError(f"task {spec} has no local data, and loading {hub.repo} from the Hub needs the datasets "
                        f"package: pip install 'lensml[hub]', or point --data-dir (LENSML_EVAL_DATA) at a folder "
                        f"with {benchmark.folder}/{spec.lang}/, or pass {spec}@FILE")
    return f"hf:{hub.repo}"


def _hub_of(benchmark: Benchmark, spec: TaskSpec):
    hub = benchmark.hub
    if hub is None:
        raise LensError(f"{benchmark.display_name} has no Hub source: pass {spec}@PATH to a local copy")
    if hub.languages is not None and spec.lang not in hub.languages:
        raise LensError(f"the Hub has {benchmark.display_name} only in {', '.join(hub.languages)}: "
                        f"pass {spec.name}:{spec.lang}@PATH to a local copy")
    return hub


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
    hub = _hub_of(benchmark, spec)
    config = hub.config_for(spec.lang)
    source = f"hf:{hub.repo}" + (f"/{config}:{hub.split}" if config is not None else "")
    return hub_rows(hub.repo, config, hub.split, str(spec)), source, None
