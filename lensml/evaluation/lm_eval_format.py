"""The result JSON and the sample files in lm-evaluation-harness's shape, so a user's lm-eval tooling reads them.

lm-eval writes `results` {task: {"alias": task, "acc,none": v, "acc_stderr,none": s}}, `configs` {task: its
config}, `versions` {task: version}, `n-shot`, `higher_is_better`, `n-samples` {task: {original, effective}}
and `config` (the run's options), tasks named PREFIX_LANG (lensml.evaluation.benchmarks.lm_eval_name, e.g.
xwinograd_jp). lensml keeps its own per-task entries beside them under `lensml_results` (what `lens compare`,
the run report and `lens eval`'s printout read) and its package versions under `packages`, since lm-eval's
`versions` is per task. `result_entries` reads either shape: files written before this one have the entries
under `results` as a list.

A sample line is lm-eval's (doc_id, doc, target, arguments, resps, filtered_resps, filter, metrics and each
metric's 0/1) plus what a person reading it wants at a glance: the choices, the prediction, the item's place.
Per-choice responses are [loglikelihood, is_greedy] as in lm-eval, kept as numbers and booleans (lm-eval
turns them into strings); in letter mode the number is the option letter's logit.
"""

from __future__ import annotations

import time

from lensml.evaluation import benchmarks
from lensml.evaluation.benchmarks.base import LETTERS, GenerationConfig, MCItem, MultipleChoiceBenchmark
from lensml.evaluation.scoring import ItemResult, ScoringConfig
from lensml.provenance import versions

ENTRIES = "lensml_results"
PACKAGES = "packages"
#: lm-eval's placeholder where a metric has no standard error
NO_STDERR = "N/A"


def result_entries(doc) -> list[dict] | None:
    """lensml's per-task entries of a result document of either shape; None when it is not a result."""
    if not isinstance(doc, dict):
        return None
    for key in (ENTRIES, "results"):
        if isinstance(doc.get(key), list):
            return doc[key]
    return None


def package_versions(doc: dict) -> dict | None:
    """The package versions a result records (under `packages`, or `versions` before lm-eval's shape)."""
    for key in (PACKAGES, "versions"):
        value = doc.get(key)
        if isinstance(value, dict) and "lensml" in value:
            return value
    return None


def _metrics(entry: dict) -> tuple[dict[str, tuple], frozenset[str], float | None]:
    benchmark = benchmarks.find(entry["task"])
    if benchmark is None:  # a result of a benchmark this lensml does not know
        return {entry["metric"]: (entry["value"], entry.get("stderr"))}, frozenset(), None
    return benchmark.metrics_of(entry), benchmark.lower_is_better, benchmark.version


def _task_config(name: str, entry: dict, metrics: dict, lower: frozenset, version, gen: GenerationConfig) -> dict:
    benchmark = benchmarks.find(entry["task"])
    source = str(entry.get("source", ""))
    hub = benchmark.hub if benchmark is not None else None
    from_hub = hub is not None and source.startswith("hf:")
    multiple_choice = entry.get("mode") != "generate"
    config = {"task": name, "dataset_path": hub.repo if from_hub else source,
              "dataset_name": hub.config_for(entry["language"]) if from_hub else None,
              "test_split": hub.split if from_hub else None,
              "output_type": "multiple_choice" if multiple_choice else "generate_until", "num_fewshot": 0,
              "metric_list": [{"metric": m, "aggregation": "mean", "higher_is_better": m not in lower} for m in metrics],
              "repeats": 1,
              "metadata": {"version": version, "lensml_task": f"{entry['task']}:{entry['language']}",
                           "mode": entry.get("mode")}}
    if multiple_choice:
        config["target_delimiter"] = " "
    else:
        config["generation_kwargs"] = {"max_new_tokens": gen.max_new_tokens, "do_sample": False}
    return config


def lm_eval_sections(entries: list[dict], model_name: str, device: str, limit: int | None, sample: int | None,
                     seed: int, scoring: ScoringConfig, generation: GenerationConfig, seconds: float) -> dict:
    """The keys lm-eval writes, from lensml's result entries (one task per entry)."""
    out: dict[str, dict] = {k: {} for k in ("results", "configs", "versions", "n-shot", "higher_is_better",
                                            "n-samples")}
    for entry in entries:
        name = benchmarks.lm_eval_name(entry["task"], entry["language"])
        metrics, lower, version = _metrics(entry)
        row: dict = {"alias": name}
        for metric, (value, stderr) in metrics.items():
            row[f"{metric},none"] = value
            row[f"{metric}_stderr,none"] = NO_STDERR if stderr is None else stderr
        out["results"][name] = row
        out["configs"][name] = _task_config(name, entry, metrics, lower, version, generation)
        out["versions"][name] = version
        out["n-shot"][name] = 0
        out["higher_is_better"][name] = {m: m not in lower for m in metrics}
        out["n-samples"][name] = {"original": entry.get("n_total", entry["n"]), "effective": entry["n"]}
    out["config"] = {"model": "lensml", "model_args": f"pretrained={model_name}", "batch_size": scoring.batch_size,
                     "device": device, "limit": limit, "sample": sample, "random_seed": seed, "bootstrap_iters": 0}
    if any(e.get("mode") == "generate" for e in entries):
        out["config"]["gen_kwargs"] = {"max_new_tokens": generation.max_new_tokens, "do_sample": False}
    found = versions()
    out.update({"model_name": model_name, "date": time.time(), "transformers_version": found.get("transformers"),
                "total_evaluation_time_seconds": str(seconds)})
    return out


def sample_line(benchmark: MultipleChoiceBenchmark, item: MCItem, result: ItemResult, mode: str, task: str) -> dict:
    """One item of a multiple-choice task as lm-eval's samples JSONL has it, plus choices and prediction."""
    if mode == "loglik":
        requests = benchmark.loglik_requests(item)[0]
    else:
        text, n = benchmark.letter_prompt(item)
        requests = [(text, LETTERS[k]) for k in range(n)]
    greedy = result.greedy if result.greedy is not None else [None] * len(result.scores)
    responses = [[score, flag] for score, flag in zip(result.scores, greedy)]
    predictions = {"acc": result.pred, "acc_norm": result.pred_norm, "acc_bytes": result.pred_bytes}
    metrics = {m: float(p == result.gold) for m, p in predictions.items() if p is not None}
    line = {"doc_id": item.doc_id, "doc": item.doc, "target": item.label,
            "arguments": {f"gen_args_{k}": {"arg_0": context, "arg_1": continuation}
                          for k, (context, continuation) in enumerate(requests)},
            "resps": [[r] for r in responses], "filtered_resps": responses, "filter": "none",
            "metrics": list(metrics), **metrics,
            "task": task, "mode": mode, "choices": benchmark.choices(item), "prediction": result.pred}
    if result.pred_norm is not None:
        line["prediction_norm"] = result.pred_norm
    line["where"] = item.where
    return line
