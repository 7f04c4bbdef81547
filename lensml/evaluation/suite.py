"""`evaluate`: run a list of benchmark tasks on a loaded model and write one result JSON.

Called by `lens eval` and by `lens run` (lensml/pipeline.py). The options are one tree
of dataclasses, EvalConfig, whose sections are the configs of the parts that use them
(ScoringConfig, GenerationConfig, JudgeConfig), so an option is declared once and the
CLI flags (`--scoring.mode`, `--judge.base-url`) are generated from it. Each config
checks its values when built, so a bad option fails before the model is touched.

Tasks are dispatched by their benchmark's kind: multiple-choice items are scored here
(lensml.evaluation.scoring), generation benchmarks run themselves. Every benchmark's
`prepare` runs before the first task, so a missing judge key or language identifier
fails before any model time is spent. A judge that fails while judging does not fail
the run: the entry keeps what was judged and says why the rest was not in `judge_error`
(see `judge_failures`). --overwrite replaces only an earlier result file (is_result_file).

The result file is in lm-evaluation-harness's shape (`results`, `configs`, `versions`,
`n-samples`: lensml.evaluation.lm_eval_format) with lensml's own entries beside it
(`lensml_results`: per task language, mode, n, metric, value, standard error, timings),
which is what `lens compare` reads; it is written to a temporary file and renamed, so an
interrupted run never leaves a half file. Items are chosen as lm-eval does: --limit N
takes the first N, --sample N draws N with --seed, neither takes all. The data of every
task is looked up when the options are built (tasks.check_data), so a missing folder or
file fails before a model loads.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from lensml.errors import LensError
from lensml.evaluation import benchmarks
from lensml.evaluation.benchmarks.base import MULTIPLE_CHOICE, GenerationConfig, RunContext, TaskSpec
from lensml.evaluation.judge import JudgeConfig
from lensml.evaluation.lm_eval_format import (ENTRIES, PACKAGES, lm_eval_sections, package_versions, result_entries,
                                              sample_line)
from lensml.evaluation.scoring import ScoringConfig, accuracy, score_items
from lensml.evaluation.tasks import check_data, load_task, parse_tasks
from lensml.io import write_json_atomic, write_jsonl_atomic
from lensml.provenance import versions

log = logging.getLogger(__name__)


@dataclass
class EvalConfig:
    """Options of `lens eval` (flags: --limit, --scoring.mode, --judge.base-url, ...)."""

    tasks: str | None = field(default=None, metadata={
        "help": "comma-separated name:lang[@path] or lm-eval's name_lang, e.g. xcopa_zh,mtbench:zh@data/mt-bench/zh"})
    limit: int | None = field(default=None, metadata={
        "help": "the first N items of each task and language, as lm-eval's --limit (default: all)"})
    sample: int | None = field(default=None, metadata={
        "help": "N items of each task and language drawn with --seed, in file order, instead of --limit (default: all)"})
    seed: int = field(default=1234, metadata={"help": "seed of --sample"})
    data_dir: str | None = field(default_factory=lambda: os.environ.get("LENSML_EVAL_DATA"), metadata={
        "help": "folder with <task>/<lang>/ data for tasks without @path, e.g. ../shared/data (env LENSML_EVAL_DATA)"})
    langid: str = field(default="lingua", metadata={"help": "language identifier for fidelity: lingua or cld3"})
    glotlid_model: str | None = field(default=None, metadata={"help": "GlotLID fastText model file: adds GlotLID fidelity"})
    save_samples: bool = field(default=True, metadata={"help": "also write per-item predictions as JSONL beside the result"})
    scoring: ScoringConfig = field(default_factory=ScoringConfig, metadata={"help": "multiple-choice scoring"})
    generation: GenerationConfig = field(default_factory=GenerationConfig, metadata={"help": "answer generation (MT-Bench)"})
    judge: JudgeConfig = field(default_factory=JudgeConfig, metadata={"help": "LLM judge of generated answers"})

    def __post_init__(self):
        for name in ("limit", "sample"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise LensError(f"{name} must be a whole number of at least 1, got {value!r}: pass --{name} 1 or more")
        if self.limit is not None and self.sample is not None:
            raise LensError("--limit and --sample are both set: pass one (--limit N: the first N items, "
                            "--sample N: N items drawn with --seed)")
        for name, cls in (("scoring", ScoringConfig), ("generation", GenerationConfig), ("judge", JudgeConfig)):
            if not isinstance(getattr(self, name), cls):
                raise LensError(f"EvalConfig.{name} must be a {cls.__name__}, got {type(getattr(self, name)).__name__}")
        if (self.tasks or "").strip():
            check_data(self.tasks, self.data_dir)  # a missing folder or file fails here, before any model loads

    def public(self) -> dict:
        """The options as recorded in the result (the key's variable name only, never its value)."""
        return dataclasses.asdict(self)


def is_result_file(path: Path) -> bool:
    """A result JSON that lensml wrote (its result entries and the lensml version that wrote it), of either shape."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return result_entries(doc) is not None and package_versions(doc) is not None


def check_result_free(path: Path, overwrite: bool) -> None:
    """The result file may be written: absent, or --overwrite of an earlier result (never of another file)."""
    if not (path.exists() or path.is_symlink()):
        return
    if not overwrite:
        raise LensError(f"result file {path} already exists: pass --overwrite or choose another --out")
    if not is_result_file(path):
        raise LensError(f"{path} exists and is not a lensml result file, so --overwrite will not replace it: "
                        f"remove it yourself or choose another --out")


def default_result_path(model: str, root: str | Path = "eval") -> Path:
    """Where a result goes without --out, as lm-eval lays out its --output_path: ROOT/<model, with / and other
    characters unfit for a folder name as __>/results_<UTC time>.json, so a rerun never meets an earlier file."""
    folder = re.sub(r"[\"<>:/|\\?*\[\]]+", "__", model.strip()) or "model"
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H-%M-%S.%f")
    return Path(root) / folder / f"results_{stamp}.json"


def judge_failures(doc: dict) -> list[dict]:
    """Result entries whose judge failed (their answers are saved; the score is missing)."""
    return [e for e in result_entries(doc) or [] if e.get("judge_error")]


def _multiple_choice(model, tokenizer, spec: TaskSpec, benchmark, ctx: RunContext) -> dict:
    cfg = ctx.cfg
    t0 = time.perf_counter()
    items, source, total = load_task(spec, cfg.limit, cfg.sample, cfg.seed, cfg.data_dir)
    t_load = time.perf_counter()
    results = score_items(model, tokenizer, items, cfg.scoring, desc=f"{spec.name} {spec.lang} {cfg.scoring.mode}")
    t_score = time.perf_counter()
    metrics = accuracy(results)
    samples_path = ctx.path(spec, "samples.jsonl") if cfg.save_samples else None
    if samples_path is not None:
        task = benchmarks.lm_eval_name(spec.name, spec.lang)
        write_jsonl_atomic(samples_path, [sample_line(benchmark, it, r, cfg.scoring.mode, task)
                                          for it, r in zip(items, results)])
    return {"task": spec.name, "language": spec.lang, "mode": cfg.scoring.mode, "n": len(items), "n_total": total,
            "metric": "acc", "value": metrics["acc"]["value"], "stderr": metrics["acc"]["stderr"], "metrics": metrics,
            "source": source, "limit": cfg.limit, "sample": cfg.sample, "seed": cfg.seed,
            **({"samples_file": samples_path.name} if samples_path is not None else {}),
            "timings_s": {"load": t_load - t0, "score": t_score - t_load, "total": t_score - t0}}


def evaluate(model, tokenizer, model_name: str, cfg: EvalConfig, out_dir: str | Path,
             result_file: str = "results.json", overwrite: bool = False) -> dict:
    """Run every task of cfg.tasks ("xcopa:zh,mtbench:zh@path") and write out_dir/result_file; returns the document."""
    if not isinstance(cfg, EvalConfig):
        raise LensError(f"evaluate needs an EvalConfig (tasks and options), got {type(cfg).__name__}: "
                        f"pass EvalConfig(tasks=...)")
    if not (cfg.tasks or "").strip():
        raise LensError("no benchmark task given: set tasks, e.g. --tasks xcopa:zh,mtbench:zh")
    specs = parse_tasks(cfg.tasks)
    out_dir = Path(out_dir)
    result_path = out_dir / result_file
    check_result_free(result_path, overwrite)
    ctx = RunContext(model_name, cfg, out_dir, Path(result_file).stem)
    plan = [(spec, benchmarks.get(spec.name)) for spec in specs]
    for spec, benchmark in plan:
        benchmark.prepare(spec, ctx)
    was_training = model.training
    model.eval()
    started = time.perf_counter()
    entries = []
    try:
        for spec, benchmark in plan:
            multiple_choice = benchmark.kind == MULTIPLE_CHOICE
            log.info("evaluating %s (%s)", spec, cfg.scoring.mode if multiple_choice else "generate")
            if multiple_choice:
                entry = _multiple_choice(model, tokenizer, spec, benchmark, ctx)
            else:
                entry = benchmark.run(model, tokenizer, spec, ctx)
            log.info("%s: %s %.4f (n=%d, %.1fs)", spec, entry["metric"], entry["value"], entry["n"],
                     entry["timings_s"]["total"])
            entries.append(entry)
    finally:
        model.train(was_training)
    seconds = time.perf_counter() - started
    device = str(next(model.parameters()).device)
    doc = {**lm_eval_sections(entries, model_name, device, cfg.limit, cfg.sample, cfg.seed, cfg.scoring,
                              cfg.generation, seconds),
           "model": model_name, "mode": cfg.scoring.mode, "tasks": cfg.tasks,
           "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
           "device": device, "dtype": str(next(model.parameters()).dtype),
           PACKAGES: versions(), "options": cfg.public(), ENTRIES: entries, "timings_s": {"total": seconds}}
    if result_path.exists() and not overwrite:
        raise LensError(f"result file {result_path} appeared while evaluating: pass --overwrite")
    check_result_free(result_path, overwrite)
    write_json_atomic(result_path, doc)
    return doc
