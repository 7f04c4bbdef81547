"""The jobs behind the CLI: run (probe, train, save, evaluate), probe alone, train alone.

Outputs go to a temporary sibling directory that is renamed into place only when
complete, so a failed or interrupted job never leaves a half-written OUT.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path

import torch

from lensml import distributed
from lensml.config import RunConfig, to_dict
from lensml.data.loaders import load_rows, load_texts
from lensml.errors import LensError
from lensml.provenance import versions
from lensml.evaluation.generation import answer_nll
from lensml.evaluation.quick import answer_prompts, score_answers
from lensml.langid import LanguageIdentifier
from lensml.languages import check_languages
from lensml.models import load_model
from lensml.plotting import plot_run
from lensml.probing import probe
from lensml.subspace import LanguageSubspace
from lensml.training import train

log = logging.getLogger(__name__)


def ensure_free(out: Path, overwrite: bool) -> None:
    if out.exists() and not overwrite:
        raise LensError(f"output {out} already exists: pass --overwrite or choose another --out")


@contextlib.contextmanager
def staged_output(out: Path, overwrite: bool):
    """Yield a temporary directory that replaces `out` only if the block succeeds.

    Under data parallelism only the main process publishes; the others get a scratch
    directory that is discarded (they compute, the main process writes).
    """
    if not distributed.is_main():
        with tempfile.TemporaryDirectory(prefix="lensml-scratch-") as scratch:
            yield Path(scratch)
        return
    ensure_free(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    try:
        yield tmp
        ensure_free(out, overwrite)
        if out.exists():
            trash = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.old-"))
            os.replace(out, trash / "old")
            os.replace(tmp, out)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n", encoding="utf-8")


def peak_memory_gb() -> dict:
    mem = {"host_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2}
    if torch.cuda.is_available():
        mem["device_gb"] = torch.cuda.max_memory_allocated() / 1024 ** 3
    return mem


class Timer:
    """Wall time per named stage."""

    def __init__(self):
        self.stages: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, name: str):
        t = time.perf_counter()
        yield
        self.stages[name] = self.stages.get(name, 0.0) + time.perf_counter() - t


def _all_langs(cfg: RunConfig) -> list[str]:
    check_languages(cfg.langs, cfg.central)
    return [cfg.central] + [lang for lang in cfg.langs if lang != cfg.central]


def _check_counts(cfg: RunConfig, probe_texts: dict[str, list[str]], train_rows: list[dict]) -> None:
    """Fail before loading the model when the data cannot give the samples asked for."""
    for lang, texts in probe_texts.items():
        if cfg.probe.samples is not None and len(texts) < cfg.probe.samples:
            raise LensError(f"probe data has {len(texts)} texts for '{lang}', {cfg.probe.samples} asked: "
                            f"lower --probe-samples or add data")
    if cfg.train.samples is not None and len(train_rows) < cfg.train.samples:
        raise LensError(f"training data has {len(train_rows)} prompts, {cfg.train.samples} asked: "
                        f"lower --train-samples or add data")


def _save_model(model, tokenizer, directory: Path) -> None:
    model.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)


def run(cfg: RunConfig) -> dict:
    """Probe, train, save and evaluate; returns the report written to OUT/report.json."""
    langs = _all_langs(cfg)
    out = Path(cfg.out)
    ensure_free(out, cfg.overwrite)
    timer = Timer()
    t_start = time.perf_counter()
    with timer("data"):
        probe_texts = load_texts(cfg.probe_data, langs)
        train_rows = load_rows(cfg.train_data, langs)
        _check_counts(cfg, probe_texts, train_rows)
        do_eval = cfg.eval.enabled and distributed.is_main()  # other processes only help train
        held = load_rows(cfg.eval.data, langs) if do_eval else []
        if do_eval:
            n_eval = cfg.eval.samples or len(held)
            if len(held) < n_eval:
                raise LensError(f"evaluation data has {len(held)} prompts, {n_eval} asked: lower --eval.samples")
            held = held[:n_eval]
    with staged_output(out, cfg.overwrite) as tmp:
        with timer("load_model"):
            model, tok, name = load_model(cfg.model)
        with timer("probe"):
            subspace = probe(model, tok, probe_texts, cfg.central, cfg.probe, name, cfg.probe_data)
            subspace.save_pretrained(tmp / "subspace")
        prompts = {lang: [r[lang] for r in held] for lang in langs}
        if do_eval:
            with timer("eval_base"):
                base_answers = answer_prompts(model, tok, prompts, cfg.eval, "base")
                base_nll = answer_nll(model, tok, prompts[cfg.central], base_answers[cfg.central])
        if cfg.eval_tasks and distributed.is_main():
            with timer("eval_tasks"):
                _eval_tasks(model, tok, name, cfg.eval_tasks, tmp / "eval" / "base")
        with timer("train"):
            result = train(model, tok, subspace, train_rows, langs, cfg.central, cfg.train)
        if not distributed.is_main():
            return {}
        with timer("save"):
            _save_model(model, tok, tmp / "model")
        report = {"model": name, "central": cfg.central, "languages": langs}
        if do_eval:
            with timer("eval_enhanced"):
                enh_answers = answer_prompts(model, tok, prompts, cfg.eval, "enhanced")
                enh_nll = answer_nll(model, tok, prompts[cfg.central], base_answers[cfg.central])
            with timer("langid"):
                ident = LanguageIdentifier(cfg.eval.langid, cfg.eval.glotlid_model)
                scores = {"base": score_answers(prompts, base_answers, ident),
                          "enhanced": score_answers(prompts, enh_answers, ident)}
            _write_answers(tmp / "answers.jsonl", prompts, base_answers, enh_answers, scores)
            for key in ("fidelity", "clean_fidelity", "echo", "loop", "empty", "degenerate"):
                report[key] = {side: {lang: s[lang][key] for lang in langs} for side, s in scores.items()}
            report["english_retention"] = {"base_nll": base_nll, "enhanced_nll": enh_nll,
                                           "relative_change": (enh_nll - base_nll) / base_nll}
            report["eval_samples"] = len(held)
        if cfg.eval_tasks:
            with timer("eval_tasks"):
                _eval_tasks(model, tok, f"{name} + LENS", cfg.eval_tasks, tmp / "eval" / "enhanced")
                report["eval_tasks"] = _task_summary(tmp / "eval")
        timer.stages["total"] = time.perf_counter() - t_start
        report["timings_s"] = dict(timer.stages)
        report["train"] = {"steps": result.steps, "lr": result.lr, "final": result.history[-1] if result.history else {}}
        manifest = {
            "config": to_dict(cfg), "train_resolved": result.resolved, "versions": versions(),
            "data": {"probe": subspace.metadata.get("data_sha256"), "probe_source": cfg.probe_data,
                     "train_source": cfg.train_data, "train_rows": len(train_rows)},
            "losses": result.history, "timings_s": {**timer.stages, **{f"train.{k}": v for k, v in result.timings_s.items()}},
            "trainable_parameters": result.trainable_parameters, "total_parameters": result.total_parameters,
            "trainable_share": result.trainable_parameters / result.total_parameters,
            "peak_memory": peak_memory_gb(), "base_model": cfg.model.gguf or cfg.model.model,
        }
        write_json(tmp / "manifest.json", manifest)
        write_json(tmp / "report.json", report)
        plot_run(report, result.history, tmp / "report.png")
    return report


def _eval_tasks(model, tok, name: str, tasks: str, out_dir: Path) -> dict:
    from lensml.evaluation.suite import evaluate  # the benchmark suite; imported only when asked for
    return evaluate(model, tok, name, tasks, out_dir)


def _task_summary(eval_dir: Path) -> dict:
    """Per side, task and language: the headline metric; plus the before/after table (eval/compare.md)."""
    from lensml.evaluation.compare import comparison_table
    paths = [eval_dir / side / "results.json" for side in ("base", "enhanced")]
    table = comparison_table(paths)
    (eval_dir / "compare.md").write_text(table + "\n", encoding="utf-8")
    summary = {"table": table}
    for side, path in zip(("base", "enhanced"), paths):
        doc = json.loads(path.read_text(encoding="utf-8"))
        summary[side] = {f"{e['task']}:{e['language']}": {"metric": e["metric"], "value": e["value"], "n": e["n"]}
                         for e in doc["results"]}
    return summary


def _write_answers(path: Path, prompts, base, enhanced, scores) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for lang, ps in prompts.items():
            for i, p in enumerate(ps):
                f.write(json.dumps({"lang": lang, "prompt": p, "base": base[lang][i], "enhanced": enhanced[lang][i],
                                    "base_langid": scores["base"][lang]["detected"][i],
                                    "enhanced_langid": scores["enhanced"][lang]["detected"][i]},
                                   ensure_ascii=False) + "\n")


def probe_job(cfg: RunConfig) -> LanguageSubspace:
    """`lens probe`: write only the subspace artifact to OUT."""
    langs = _all_langs(cfg)
    out = Path(cfg.out)
    ensure_free(out, cfg.overwrite)
    texts = load_texts(cfg.probe_data, langs)
    model, tok, name = load_model(cfg.model)
    subspace = probe(model, tok, texts, cfg.central, cfg.probe, name, cfg.probe_data)
    if distributed.is_main():
        ensure_free(out, cfg.overwrite)
        subspace.save_pretrained(out)  # itself staged in a temporary folder and renamed
    return subspace


def train_job(cfg: RunConfig, subspace_dir: str) -> dict:
    """`lens train`: model + subspace + parallel data -> enhanced model in OUT."""
    langs = _all_langs(cfg)
    out = Path(cfg.out)
    ensure_free(out, cfg.overwrite)
    subspace = LanguageSubspace.from_pretrained(subspace_dir)
    rows = load_rows(cfg.train_data, langs)
    model, tok, name = load_model(cfg.model)
    subspace.check_compatible(model.config.get_text_config().hidden_size, model.config.get_text_config().num_hidden_layers,
                              langs, cfg.central)
    with staged_output(out, cfg.overwrite) as tmp:
        result = train(model, tok, subspace, rows, langs, cfg.central, cfg.train)
        if not distributed.is_main():
            return {"steps": result.steps, "lr": result.lr, "losses": result.history}
        _save_model(model, tok, tmp)
        summary = {"base_model": name, "steps": result.steps, "lr": result.lr, "losses": result.history,
                   "timings_s": result.timings_s, "trainable_share": result.trainable_parameters / result.total_parameters}
        write_json(tmp / "lensml_train.json", summary)
    return summary
