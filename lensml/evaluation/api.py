"""`lensml.evaluate`: the benchmark suite (lensml.evaluation.suite) as a notebook calls it.

suite.evaluate is what `lens eval` and `lens run` call: a loaded model, its display name, a built
EvalConfig and a folder to write into. A person in a notebook has a model (or its name) and a few
task names; this takes those, builds and checks the options before any model loads, and returns
the result document, writing it only where asked.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from lensml.config import iter_fields, load_config
from lensml.errors import LensError
from lensml.evaluation.suite import EvalConfig, check_result_free
from lensml.evaluation.suite import evaluate as run_suite
from lensml.runtime.models import ModelConfig, load_model


def evaluate(model, tasks: str | list[str], *, tokenizer=None, limit: int | None = None,
             out: str | os.PathLike | None = None, overwrite: bool = False, **options) -> dict:
    """Benchmark scores of a model: the document `lens eval` writes (model, options, per-task results).

    model: a loaded model (with tokenizer=), or what `lens eval --model` takes: a Hub id, a folder, a
    packaged name, a .gguf file, or a ModelConfig. tasks: "xcopa:zh,mtbench:zh" or a list of such names
    (`name:lang[@path]`; without @path the data comes from LENSML_EVAL_DATA or the Hub). limit: the
    items of each task and language to score (None: EvalConfig's default). out: the result JSON to
    write, with answers and samples beside it; None writes nothing that stays. options: any other
    EvalConfig option by name (seed=..., data_dir=...), a section as a dict (scoring={"mode": "letter"}).
    """
    load = _loader(model, tokenizer)
    names = [tasks] if isinstance(tasks, str) else list(tasks)
    spec = ",".join(t.strip() for t in names if t and t.strip())
    if not spec:
        raise LensError("evaluate() got no task: pass tasks such as 'xcopa:zh' or ['xcopa:zh', 'mtbench:zh']")
    overrides: dict[str, object] = {"tasks": spec}
    if limit is not None:
        overrides["limit"] = limit
    for key, value in options.items():
        items = {f"{key}.{k}": v for k, v in value.items()} if isinstance(value, dict) else {key: value}
        overrides.update(items)
    if out is None:
        overrides.setdefault("save_samples", False)  # nothing stays on disk: writing them would be wasted
    known = {name for name, *_ in iter_fields(EvalConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise LensError(f"evaluate() has no option '{unknown[0]}': the options are {', '.join(sorted(known))}")
    cfg = load_config(None, overrides, EvalConfig)  # checked before the model loads
    target = Path(out) if out is not None else None
    if target is not None:
        if target.is_dir():
            raise LensError(f"out={str(target)!r} is a directory: give a file name such as {target / 'results.json'}")
        check_result_free(target, overwrite)
    model, tokenizer, name = load()
    if target is not None:
        return run_suite(model, tokenizer, name, cfg, target.parent, result_file=target.name, overwrite=overwrite)
    with tempfile.TemporaryDirectory(prefix="lensml-eval-") as scratch:
        return run_suite(model, tokenizer, name, cfg, scratch)


def _loader(model, tokenizer):
    """What gives (model, tokenizer, display name) of what evaluate() was given, once the options are checked."""
    if isinstance(model, (str, os.PathLike, ModelConfig)):
        if tokenizer is not None:
            raise LensError("evaluate(): tokenizer= goes with a loaded model; a model name or ModelConfig "
                            "brings its own")
        spec = str(model) if not isinstance(model, ModelConfig) else None
        cfg = model if spec is None else ModelConfig(gguf=spec) if spec.endswith(".gguf") else ModelConfig(model=spec)
        return lambda: load_model(cfg)
    if tokenizer is None:
        raise LensError("evaluate() of a loaded model needs its tokenizer: evaluate(model, tasks, tokenizer=tok)")
    config = getattr(model, "config", None)
    return lambda: (model, tokenizer, getattr(config, "_name_or_path", None) or type(model).__name__)
