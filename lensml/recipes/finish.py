"""The end of every job: what a finished run folder holds, written in one order for every method.

`lens run`, `lens train` and `lens probe` all end here, so their folders cannot drift apart:
first the manifest (what produced the folder), then the report, the card beside what the run
ships (OUT/model when weights changed, OUT/steering for steering, which has no model of its
own) and the picture. A job without training (`lens probe`) writes the manifest alone.
"""

from __future__ import annotations

import resource
from dataclasses import dataclass
from pathlib import Path

import torch

from lensml import tracking
from lensml.config import to_dict
from lensml.evaluation.lm_eval_format import result_entries
from lensml.export.card import write_card
from lensml.export.patch import read_weight_change
from lensml.io import write_json_atomic, write_text_atomic
from lensml.methods.base import Method
from lensml.provenance import versions
from lensml.recipes.config import RunConfig, config_yaml
from lensml.recipes.stages import Stages
from lensml.results.plots import plot_run
from lensml.results.report import METRICS, SIDES, QuickEval, RunReport, TrainSummary
from lensml.results.report_html import write_report_html
from lensml.results.rundir import RunDir
from lensml.training import TrainResult


@dataclass
class Trained:
    """What a training job measured, handed to the finish stage."""

    method: Method
    result: TrainResult
    quick_eval: QuickEval | None = None
    benchmarks: dict[str, dict] | None = None   # side -> lensml.evaluation.suite result
    experts: dict | None = None  # mixture of experts: the experts and routers trained (lensml.runtime.experts)


def finish_run(run: RunDir, kind: str, cfg: RunConfig, model_name: str, stages: Stages, data: dict,
               trained: Trained | None = None, repo: str | None = None) -> RunReport | None:
    """Write the manifest, then (after training) report.json, the card and report.png; returns the report.

    kind: "run", "train" or "probe", as the manifest records it; data: the inputs' provenance;
    repo: the Hub repository the card names (the run pushes there once the folder is complete).
    """
    timings = stages.total()
    if trained is None:  # nothing trained or measured: the manifest says what was probed
        write_manifest(run, kind, cfg, model_name, timings, data=data)
        return None
    result = trained.result
    change = read_weight_change(run.patch) if trained.method.changes_weights else None  # what train_and_save measured
    report = RunReport(model=model_name, central=cfg.central, languages=cfg.languages,
                       train=TrainSummary(result.method, result.steps, result.lr, result.final,
                                          result.trainable_parameters, result.total_parameters,
                                          unchanged=change is not None and not change.get("moved", True),
                                          relative_change=change.get("relative") if change else None),
                       quick_eval=trained.quick_eval, benchmarks=trained.benchmarks or None, timings_s=timings)
    manifest = write_manifest(run, kind, cfg, model_name,
                              {**timings, **{f"train.{k}": v for k, v in result.timings_s.items()}},
                              train_resolved=result.resolved, losses=result.history, data=data,
                              trainable_parameters=result.trainable_parameters,
                              total_parameters=result.total_parameters, trainable_share=result.trainable_share,
                              **({"weight_change": change} if change is not None else {}),
                              **({"experts": trained.experts} if trained.experts else {}))
    write_json_atomic(run.report, report.to_dict())
    write_card(run, trained.method.changes_weights, report, manifest, repo)
    plot_run(report, result.history, run.plot)
    if run.answers.is_file():  # written by the quick evaluation, before this stage
        write_report_html(run, report)
    track_report(run, report, result)
    return report


def write_manifest(run: RunDir, kind: str, cfg: RunConfig, model_name: str, timings: dict, **extra) -> dict:
    """manifest.json: what produced this folder. `base_model` is what `lens chat --compare` loads.

    Beside it config.yaml, the options alone as `--config` reads them back (lensml.recipes.config.config_yaml).
    """
    doc = {"kind": kind, "base_model": cfg.model.gguf or cfg.model.model, "model_name": model_name,
           "method": cfg.method, "config": to_dict(cfg), "versions": versions(), "timings_s": timings,
           "peak_memory": peak_memory_gb(), **extra}
    write_json_atomic(run.manifest, doc)
    write_text_atomic(run.config_yaml, config_yaml(cfg, kind, extra.get("train_resolved")))
    return doc


def peak_memory_gb() -> dict:
    mem = {"host_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2}
    if torch.cuda.is_available():
        mem["device_gb"] = torch.cuda.max_memory_allocated() / 1024 ** 3
    return mem


def push_folder(out: RunDir, method: Method, patch: bool) -> Path:
    """What --push-to-hub uploads: the model (or its patch) when weights changed, else the steering folder."""
    if not method.changes_weights:
        return out.steering
    return out.patch if patch else out.model


def track_report(run: RunDir, report: RunReport, result: TrainResult) -> None:
    """To the job's --report-to trackers (none: nothing): report.json's numbers at the last step, the training
    options as resolved (size defaults filled in) and report.png."""
    trackers = tracking.active()
    if not trackers:
        return
    trackers.log_config({"resolved": result.resolved})
    trackers.log_metrics(report_metrics(report), result.steps)
    trackers.log_image(run.plot)


def report_metrics(report: RunReport) -> dict[str, float]:
    """report.json's numbers by tracker name: eval/base/zh/fidelity, eval/enhanced/en_nll,
    benchmarks/enhanced/xcopa:zh/acc, train/trainable_share, time/train_s."""
    out: dict[str, float] = {}
    q = report.quick_eval
    if q is not None:
        for side in SIDES:
            for lang, scores in getattr(q, side).items():
                out.update({f"eval/{side}/{lang}/{m}": getattr(scores, m) for m in METRICS})
        out[f"eval/base/{report.central}_nll"] = q.retention.base_nll
        out[f"eval/enhanced/{report.central}_nll"] = q.retention.enhanced_nll
        out[f"eval/{report.central}_nll_relative_change"] = q.retention.relative_change
    for side, doc in (report.benchmarks or {}).items():
        for e in result_entries(doc) or []:
            out[f"benchmarks/{side}/{e['task']}:{e['language']}/{e.get('metric', 'value')}"] = e.get("value")
    if report.train is not None:
        out["train/trainable_share"] = report.train.trainable_share
    out.update({f"time/{stage}_s": s for stage, s in report.timings_s.items()})
    return out
