"""`evaluate`: run a list of benchmark tasks on a loaded model and write one result JSON.

Called by `lens eval` and by `lens run --eval-tasks` (lensml/pipeline.py) with the
same signature. The result file (model, per-task language, mode, n, metric, value,
standard error, timings, versions) is what `lens compare` reads; it is written to a
temporary file and renamed, so an interrupted run never leaves a half file.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path


from lensml.errors import LensError
from lensml.provenance import versions
from lensml.evaluation.judge import JudgeConfig
from lensml.io import write_json_atomic, write_jsonl_atomic
from lensml.evaluation.mtbench import GenerationConfig, run_mtbench
from lensml.evaluation.scoring import ScoringConfig, accuracy, score_items
from lensml.evaluation.tasks import TaskSpec, load_items, parse_tasks
from lensml.langid import LanguageIdentifier

log = logging.getLogger(__name__)


@dataclass
class EvalConfig:
    """Options of `lens eval` (each is a flag: --limit, --judge-base-url, ...)."""

    mode: str = field(default="loglik", metadata={"help": "multiple-choice scoring: loglik (lm-eval) or letter (LENS)"})
    limit: int = field(default=1000, metadata={"help": "at most N items per task and language, sampled with --seed"})
    seed: int = field(default=1234, metadata={"help": "seed of the item sample"})
    batch_size: int = field(default=16, metadata={"help": "sequences per forward pass when scoring"})
    max_length: int = field(default=2048, metadata={"help": "longest scored input in tokens"})
    add_bos: bool = field(default=False, metadata={"help": "prepend BOS in loglik mode (lm-eval add_bos_token)"})
    max_new_tokens: int = field(default=1024, metadata={"help": "tokens per MT-Bench answer"})
    gen_batch_size: int = field(default=8, metadata={"help": "MT-Bench conversations per generation batch"})
    data_dir: str | None = field(default_factory=lambda: os.environ.get("LENSML_EVAL_DATA"), metadata={
        "help": "folder with <task>/<lang>/ data for tasks without @path, e.g. ../shared/data (env LENSML_EVAL_DATA)"})
    langid: str = field(default="lingua", metadata={"help": "language identifier for fidelity: lingua or cld3"})
    glotlid_model: str | None = field(default=None, metadata={"help": "GlotLID fastText model file: adds GlotLID fidelity"})
    judge_base_url: str | None = field(default=None, metadata={"help": "OpenAI-compatible judge endpoint base URL"})
    judge_model: str | None = field(default=None, metadata={"help": "judge model name"})
    judge_api_key_env: str | None = field(default=None, metadata={"help": "environment variable holding the judge API key"})
    judge_prompts: str | None = field(default=None, metadata={"help": "FastChat judge_prompts.jsonl (default: beside the questions)"})
    judge_concurrency: int = field(default=4, metadata={"help": "judge requests in flight"})
    judge_retries: int = field(default=4, metadata={"help": "retries after 5xx, 429 or timeouts"})
    judge_backoff_s: float = field(default=1.0, metadata={"help": "first retry delay, doubled each time"})
    judge_timeout_s: float = field(default=120.0, metadata={"help": "seconds per judge request"})
    judge_cache: str | None = field(default=None, metadata={"help": "judgment cache folder (default: $LENSML_CACHE/judge)"})
    result_file: str = field(default="results.json", metadata={"help": "name of the result JSON inside the output folder"})
    overwrite: bool = field(default=False, metadata={"help": "replace an existing result file"})
    save_samples: bool = field(default=True, metadata={"help": "also write per-item predictions as JSONL beside the result"})

    def judge(self) -> JudgeConfig:
        return JudgeConfig(base_url=self.judge_base_url, model=self.judge_model, api_key_env=self.judge_api_key_env,
                           prompts=self.judge_prompts, concurrency=self.judge_concurrency, retries=self.judge_retries,
                           backoff_s=self.judge_backoff_s, timeout_s=self.judge_timeout_s, cache_dir=self.judge_cache)

    def public(self) -> dict:
        """The options as recorded in the result (the key's variable name only, never its value)."""
        return dataclasses.asdict(self)


def _config(options: dict) -> EvalConfig:
    names = {f.name for f in dataclasses.fields(EvalConfig)}
    unknown = sorted(set(options) - names)
    if unknown:
        raise LensError(f"unknown evaluation option(s) {', '.join(unknown)}: use {', '.join(sorted(names))}")
    cfg = EvalConfig(**options)
    if cfg.mode not in ("loglik", "letter"):
        raise LensError(f"unknown scoring mode '{cfg.mode}': use loglik or letter")
    if cfg.limit < 1:
        raise LensError(f"--limit must be at least 1, got {cfg.limit}")
    if cfg.judge_base_url or cfg.judge_model:
        if not (cfg.judge_base_url and cfg.judge_model):
            raise LensError("the judge needs both --judge-base-url and --judge-model")
    return cfg


def _multiple_choice(model, tokenizer, spec: TaskSpec, cfg: EvalConfig, samples_path: Path | None) -> dict:
    t0 = time.perf_counter()
    items, source = load_items(spec, cfg.limit, cfg.seed, cfg.data_dir)
    t_load = time.perf_counter()
    scoring = ScoringConfig(cfg.mode, cfg.batch_size, cfg.max_length, cfg.add_bos)
    results = score_items(model, tokenizer, items, scoring, desc=f"{spec.name} {spec.lang} {cfg.mode}")
    t_score = time.perf_counter()
    metrics = accuracy(results)
    if samples_path is not None:
        write_jsonl_atomic(samples_path, [{"where": it.where, "gold": r.gold, "pred": r.pred, "pred_norm": r.pred_norm,
                                           "scores": r.scores} for it, r in zip(items, results)])
    return {"task": spec.name, "language": spec.lang, "mode": cfg.mode, "n": len(items), "metric": "acc",
            "value": metrics["acc"]["value"], "stderr": metrics["acc"]["stderr"], "metrics": metrics,
            "source": source, "limit": cfg.limit, "seed": cfg.seed,
            **({"samples_file": samples_path.name} if samples_path is not None else {}),
            "timings_s": {"load": t_load - t0, "score": t_score - t_load, "total": t_score - t0}}


def evaluate(model, tokenizer, model_name: str, tasks: str, out_dir: Path, **options) -> dict:
    """Run every task of `tasks` ("xcopa:zh,mtbench:zh@path") and write out_dir/result_file."""
    cfg = _config(options)
    specs = parse_tasks(tasks)
    out_dir = Path(out_dir)
    result_path = out_dir / cfg.result_file
    if result_path.exists() and not cfg.overwrite:
        raise LensError(f"result file {result_path} already exists: pass --overwrite or choose another --out")
    stem = Path(cfg.result_file).stem
    identify = glotlid = None
    if any(s.name == "mtbench" for s in specs):
        identify = LanguageIdentifier(cfg.langid)
        if cfg.glotlid_model:
            glotlid = LanguageIdentifier("glotlid", cfg.glotlid_model)
    was_training = model.training
    model.eval()
    started = time.perf_counter()
    entries = []
    try:
        for spec in specs:
            log.info("evaluating %s (%s)", spec, cfg.mode if spec.name != "mtbench" else "generate")
            if spec.name == "mtbench":
                entry = run_mtbench(model, tokenizer, model_name, spec, out_dir / f"{stem}.mtbench_{spec.lang}.answers.jsonl",
                                    gen=GenerationConfig(cfg.max_new_tokens, cfg.gen_batch_size, cfg.max_length),
                                    identify=identify, glotlid=glotlid, judge=cfg.judge(),
                                    limit=cfg.limit, seed=cfg.seed, data_dir=cfg.data_dir)
            else:
                samples = out_dir / f"{stem}.{spec.name}_{spec.lang}.samples.jsonl" if cfg.save_samples else None
                entry = _multiple_choice(model, tokenizer, spec, cfg, samples)
            log.info("%s: %s %.4f (n=%d, %.1fs)", spec, entry["metric"], entry["value"], entry["n"],
                     entry["timings_s"]["total"])
            entries.append(entry)
    finally:
        model.train(was_training)
    doc = {"model": model_name, "mode": cfg.mode, "tasks": tasks,
           "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
           "device": str(next(model.parameters()).device), "dtype": str(next(model.parameters()).dtype),
           "versions": versions(), "options": cfg.public(), "results": entries,
           "timings_s": {"total": time.perf_counter() - started}}
    if result_path.exists() and not cfg.overwrite:
        raise LensError(f"result file {result_path} appeared while evaluating: pass --overwrite")
    write_json_atomic(result_path, doc)
    return doc
