"""`lens run`: load, probe, evaluate before, train, save, evaluate after, report.

Each stage returns a typed value the next one takes; the report (lensml.results.report.RunReport)
is built from them in memory and written once. Outputs go to a sibling folder (.OUT.partial)
renamed into place only when complete, so a failed or interrupted run never leaves a
half-written OUT; what its finished stages computed stays there for `--resume`
(lensml.recipes.resume).
"""

from __future__ import annotations

import logging
from pathlib import Path

from lensml import distributed, methods
from lensml.evaluation import quick, tasks
from lensml.evaluation.suite import evaluate
from lensml.export.card import check_push, push
from lensml.io import write_jsonl_atomic, write_text_atomic
from lensml.lens.probing import probe, shares_prompts
from lensml.lens.reference_cache import empty_cache
from lensml.lens.subspace import LanguageSubspace
from lensml.recipes.config import RunConfig
from lensml.recipes.finish import Trained, finish_run, push_folder
from lensml.recipes.resume import checkpoints, staged_output
from lensml.recipes.stages import (
    Stages,
    check_output,
    load_inputs,
    method_inputs,
    response_languages,
    train_and_save,
)
from lensml.results.benchmark_table import comparison_table_of
from lensml.results.report import SIDES, RunReport
from lensml.results.rundir import RunDir
from lensml.runtime.experts import trained_experts
from lensml.runtime.models import load_model
from lensml.runtime.topblock import TopBlock

log = logging.getLogger(__name__)


def run(cfg: RunConfig, resume: bool = False) -> RunReport | None:
    """Run every stage; returns the report (None on non-main data-parallel processes).

    resume: take up an interrupted run of the same options and data after its last finished stage
    (lensml.recipes.resume); without it, what an interrupted run left is replaced.
    """
    method = methods.get(cfg.method)
    out = Path(cfg.out)
    check_output(out, cfg.overwrite)
    if cfg.push_to_hub and distributed.is_main():
        check_push(cfg.push_to_hub)
    stages = Stages(cfg)  # the job's log starts here (OUT/run.log), its trackers open with its folder
    do_eval = cfg.eval.enabled and distributed.is_main()  # other processes only help train
    do_bench = bool(cfg.benchmarks.tasks) and distributed.is_main()
    if not method.changes_weights and do_bench:
        tasks.check_steerable(cfg.benchmarks)  # before anything loads
    with stages("data"):
        inputs = load_inputs(cfg, probe=method.needs_subspace, train=True, held_out=do_eval,
                             responses=response_languages(method, cfg))
    ckpt = checkpoints(out, cfg, inputs, resume)
    with staged_output(out, cfg.overwrite, ckpt) as tmp:
        run_dir = RunDir(tmp)
        with stages("load_model"):
            model, tok, name = load_model(cfg.model)
        subspace = cache = None
        if method.needs_subspace and ckpt.skip(stages, "probe"):
            subspace = LanguageSubspace.from_pretrained(run_dir.subspace)
        elif method.needs_subspace:
            with stages("probe"):
                if method.uses_reference_cache and shares_prompts(inputs.probe_texts, cfg.probe, inputs.train_rows,
                                                                  cfg.train, cfg.languages):
                    log.info("probe and training prompts are the same: one pass fills the reference cache too")
                    cache = empty_cache(model, tok, inputs.train_rows, cfg.languages, cfg.central, cfg.train)
                subspace = probe(model, tok, inputs.probe_texts, cfg.central, cfg.probe, name, cfg.probe_data,
                                 cache=cache)
                if distributed.is_main():
                    subspace.save_pretrained(run_dir.subspace)
            ckpt.finished(stages, "probe")
        if do_eval and ckpt.skip(stages, "eval_base"):
            before = ckpt.load_answers()
        elif do_eval:
            with stages("eval_base"):
                start = TopBlock(model, cfg.train.start_layer).start if method.changes_weights else None
                before = quick.answer_before(model, tok, inputs.held_out, cfg.central, cfg.eval, start)
            ckpt.save_answers(before)
            ckpt.finished(stages, "eval_base")
        bench = {}
        if do_bench and ckpt.skip(stages, "benchmarks_base"):
            bench["base"] = ckpt.load_json("benchmarks_base")
        elif do_bench:
            with stages("benchmarks_base"):
                bench["base"] = _benchmarks(model, tok, name, cfg, run_dir.eval_base)
            ckpt.save_json("benchmarks_base", bench["base"])
            ckpt.finished(stages, "benchmarks_base")
        if ckpt.skip(stages, "train"):
            result = ckpt.load_train(model)
        else:
            result = train_and_save(stages, method, model, tok, method_inputs(method, cfg, inputs, subspace, cache),
                                    cfg, name, run_dir)
            if result is None:
                return None
            if method.changes_weights:  # a steering method's state is its own: it measures again on resume
                ckpt.save_train(result)
                ckpt.finished(stages, "train", "train", "save")
        quick_eval = None
        if do_eval:
            with stages("eval_enhanced"):
                after = quick.answer_after(model, tok, before, cfg.eval, nll=method.answer_nll)
                before.prefill = None  # the kept prompt prefill (host memory) has served its one use
                quick_eval, rows = quick.compare(before, after, cfg.eval)
            write_jsonl_atomic(run_dir.answers, rows)
        if do_bench:
            with stages("benchmarks_enhanced"):
                bench["enhanced"] = _benchmarks(model, tok, f"{name} + {cfg.method}", cfg, run_dir.eval_enhanced)
            write_text_atomic(run_dir.eval_compare,
                              comparison_table_of([bench[side] for side in SIDES], list(SIDES)) + "\n")
        report = finish_run(run_dir, "run", cfg, name, stages,
                            data={"probe": subspace.metadata.get("data_sha256") if subspace else None,
                                  "probe_source": cfg.probe_data, "train_source": cfg.train_data,
                                  "train_rows": len(inputs.train_rows)},
                            trained=Trained(method, result, quick_eval, bench, experts=trained_experts(
                                model, method.trainable_names(model, cfg.train))),
                            repo=cfg.push_to_hub)
    log.info("wrote %s", out)
    if cfg.push_to_hub:
        log.info("pushed to %s", push(push_folder(RunDir(out), method, cfg.push_patch), cfg.push_to_hub))
    return report


def _benchmarks(model, tok, name: str, cfg: RunConfig, out_dir: Path) -> dict:
    return evaluate(model, tok, name, cfg.benchmarks, out_dir)
