"""The pieces every recipe shares: timed stages, inputs checked before the model loads, outputs.

A recipe (lensml.recipes.run, .jobs) is a list of these stages in order; each returns a
typed value the next one takes, so nothing re-reads its own output from disk.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import tempfile
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from transformers.utils import logging as hf_logging

from lensml import distributed, methods, tracking
from lensml.config import to_dict
from lensml.data.loaders import load_rows, load_texts
from lensml.errors import LensError
from lensml.export.gguf import export_gguf
from lensml.export.modelfile import write_modelfile
from lensml.export.patch import WeightChange, save_patch, snapshot, weight_change
from lensml.io import check_free, check_writable, staged_dir
from lensml.methods import MethodInputs
from lensml.progress import heartbeat, on_terminal, progress
from lensml.recipes.config import RunConfig
from lensml.results.rundir import RunDir
from lensml.runtime.models import PACKAGED_MODELS, packaged_gguf

log = logging.getLogger(__name__)


class Stages:
    """Wall time per named stage, with one INFO line when a stage starts and one when it ends.

    Given the job's options (run, train, probe), it is also where the job's records start: its log is held
    from here (tracking.RunLog) and output_dir writes it to OUT/run.log and opens the --report-to trackers.
    """

    def __init__(self, cfg: RunConfig | None = None):
        self.timings: dict[str, float] = {}
        self._t0 = time.perf_counter()
        self.cfg = cfg
        self.run_log = None
        if cfg is not None and distributed.is_main():
            earlier = _JOB.get()
            if earlier is not None and earlier() is not None and earlier().run_log is not None:
                earlier().run_log.close()  # a job that failed before it had a folder
            self.run_log = tracking.RunLog()
            weakref.finalize(self, self.run_log.close)  # and if this job never gets one, its log goes with it
            _JOB.set(weakref.ref(self))

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        log.info("%s: started", name)
        t = time.perf_counter()
        with heartbeat(name):  # off a terminal, a line every few seconds if nothing else says the job is alive
            yield
        dt = time.perf_counter() - t
        self.timings[name] = self.timings.get(name, 0.0) + dt
        log.info("%s: done in %.1fs", name, dt)

    def resumed(self, name: str, seconds: dict[str, float]) -> None:
        """A stage an earlier, interrupted attempt finished (lensml.recipes.resume): its times, not done again."""
        for part, dt in seconds.items():
            self.timings[part] = self.timings.get(part, 0.0) + dt
        log.info("%s: finished by the interrupted run (%.1fs then), not done again", name, sum(seconds.values()))

    def total(self) -> dict[str, float]:
        return {**self.timings, "total": time.perf_counter() - self._t0}


@dataclass
class Inputs:
    """Every input of a job, read and checked before the model loads."""

    probe_texts: dict[str, list[str]] | None
    train_rows: list[dict] | None
    held_out: dict[str, list[str]] | None   # quick-evaluation prompts per language


def load_inputs(cfg: RunConfig, probe: bool, train: bool, held_out: bool,
                responses: list[str] | None = None) -> Inputs:
    """Read the data a job needs and fail on any shortfall now, not after minutes of model work.

    responses: languages whose responses every training row must hold (the fine-tuning baselines).
    """
    langs = cfg.languages
    probe_texts = load_texts(cfg.probe_data, langs) if probe else None
    if probe_texts is not None:
        for lang, texts in probe_texts.items():
            need = cfg.probe.samples if cfg.probe.samples is not None else 1
            if len(texts) < need:
                raise LensError(f"probe data has {len(texts)} texts for '{lang}', {need} asked: "
                                f"lower --probe-samples or add data")
    rows = load_rows(cfg.train_data, langs, responses) if train else None
    if rows is not None:
        n = cfg.train.samples if cfg.train.samples is not None else len(rows)
        if len(rows) < n:
            raise LensError(f"training data has {len(rows)} prompts, {n} asked: lower --train-samples or add data")
    held = None
    if held_out:
        held_rows = load_rows(cfg.eval.data, langs)
        n = cfg.eval.samples or len(held_rows)
        if len(held_rows) < n:
            raise LensError(f"evaluation data has {len(held_rows)} prompts, {n} asked: lower --eval.samples")
        held = {lang: [r[lang] for r in held_rows[:n]] for lang in langs}
    return Inputs(probe_texts, rows, held)


def method_options(method, cfg: RunConfig):
    """The method's own options: the section it is registered with (cfg.sft, cfg.steer, ...), None without one."""
    return methods.options_of(method.name, cfg)


def response_languages(method, cfg: RunConfig) -> list[str]:
    return method.response_languages(cfg.languages, cfg.central, method_options(method, cfg))


def method_inputs(method, cfg: RunConfig, inputs: Inputs, subspace=None, cache=None):
    """What a method's train() receives: the rows, languages, subspace, cache and (if it needs them) responses."""
    responses = [r.get("responses") for r in inputs.train_rows] if method.needs_responses else None
    return MethodInputs(inputs.train_rows, cfg.languages, cfg.central, subspace, cache, responses)


def replaceable(folder: Path) -> bool:
    """What --overwrite may replace: a folder a lensml job wrote (its manifest says so), never the user's own."""
    return RunDir(folder).written_by_lensml()


def check_output(out: Path, overwrite: bool) -> None:
    """The output can be written: free (or --overwrite of a folder lensml wrote) and its parent writable."""
    if distributed.is_main():
        check_free(out, overwrite, replaceable)
        check_writable(out)


@contextlib.contextmanager
def output_dir(out: Path, overwrite: bool, keep: Path | None = None) -> Iterator[Path]:
    """A temporary folder that becomes OUT only when the job succeeds.

    keep: stage there instead, and leave it on failure (lensml.io.staged_dir; `lens run`'s .OUT.partial).
    Under data parallelism only the main process publishes; the others get a scratch
    folder that is discarded (they compute, the main process writes).
    """
    if not distributed.is_main():
        with tempfile.TemporaryDirectory(prefix="lensml-scratch-") as scratch:
            yield Path(scratch)
        return
    with staged_dir(out, overwrite, replaceable, keep=keep) as tmp, job_records(tmp):
        yield tmp


#: The job now running: the Stages made with its options, whose log output_dir writes into the job's folder.
_JOB: contextvars.ContextVar[weakref.ref | None] = contextvars.ContextVar("lensml_job", default=None)


@contextlib.contextmanager
def job_records(folder: Path) -> Iterator[None]:
    """For the block: the running job's log in folder/run.log (what it held, then the options), its trackers,
    and transformers' own bars shown as lensml's (library_bars). Nothing outside a job (`lens apply`)."""
    ref = _JOB.get()
    job = ref() if ref is not None else None
    if job is None or job.run_log is None or job.run_log.path is not None:
        yield
        return
    _JOB.set(None)
    try:
        job.run_log.write_to(RunDir(folder).run_log)
        tracking.OPTIONS.info("options: %s", json.dumps(to_dict(job.cfg), ensure_ascii=False, default=str))
        trackers = tracking.open_trackers(job.cfg.report_to, folder, Path(job.cfg.out).name)
        failed = True
        try:
            trackers.log_config(to_dict(job.cfg))
            with tracking.activate(trackers), library_bars():
                yield
            failed = False
        finally:
            trackers.close(failed)
    finally:
        job.run_log.close()


@contextlib.contextmanager
def library_bars() -> Iterator[None]:
    """transformers' bars (loading weights, writing shards) made by lensml.progress: bars on a terminal, a line
    every few seconds off one, as lensml's own; without this they write carriage-return bars into logs."""
    set_hook = getattr(hf_logging, "set_tqdm_hook", None)  # without it (older releases): bars off, off a terminal
    if set_hook is None:
        was_on = hf_logging.is_progress_bar_enabled()
        if was_on and not on_terminal():
            hf_logging.disable_progress_bar()
        try:
            yield
        finally:
            if was_on:
                hf_logging.enable_progress_bar()
        return
    previous = set_hook(_through_progress)
    try:
        yield
    finally:
        set_hook(previous)


def _through_progress(factory, args, kwargs):
    if not hf_logging.is_progress_bar_enabled():  # the user turned transformers' bars off: they stay off
        return factory(*args, **kwargs)
    return progress(*args, **kwargs)


def save_model(model, tokenizer, directory: Path) -> None:
    model.save_pretrained(directory, safe_serialization=True)
    tokenizer.save_pretrained(directory)


def patch_info(cfg: RunConfig, model_name: str, names: list[str]) -> dict:
    """What a patch records besides its tensors: base model, layers, method and options."""
    layers = sorted({int(part) for n in names for prev, part in zip(n.split("."), n.split(".")[1:])
                     if prev == "layers" and part.isdigit()})
    return {"base_model": cfg.model.gguf or cfg.model.model, "base_model_name": model_name,
            "base_revision": cfg.model.revision, "method": cfg.method, "languages": cfg.languages,
            "layers": layers, "options": to_dict(cfg.train)}



def gguf_source(cfg: RunConfig) -> Path | None:
    """The GGUF file the model was loaded from (--gguf or a packaged model), if any."""
    if cfg.model.gguf:
        return Path(cfg.model.gguf)
    if cfg.model.model in PACKAGED_MODELS:
        return packaged_gguf(cfg.model.model)
    return None


def write_gguf(cfg: RunConfig, model, run: RunDir, patch_cfg: dict) -> dict | None:
    """OUT/model.gguf (RunDir.gguf) for a model that came in as GGUF (see lensml.export.gguf)."""
    source = gguf_source(cfg)
    if source is None or cfg.gguf_out == "none" or not patch_cfg.get("tensors"):
        return None
    summary = export_gguf(model, source, run.gguf, patch_cfg["tensors"], cfg.gguf_out)
    write_modelfile(run.gguf)  # OUT/Modelfile beside it: `ollama create NAME -f OUT/Modelfile`
    return summary


def check_moved(model, originals: dict, allow_unchanged: bool) -> WeightChange:
    """Refuse to save a model that training left as it was (lensml.export.patch.WeightChange says when):
    it would ship as "enhanced" and be the base model. With --allow-unchanged it is saved, and its report says so."""
    change = weight_change(model, originals)
    log.info("largest relative weight change %.3g in %s (measurable above %.2g); %d of %d trained tensors changed",
             change.relative, change.tensor, change.bound, change.changed_tensors, change.tensors)
    if not change.moved:
        if not allow_unchanged:
            raise LensError(f"training did not change the weights measurably ({change.describe()}): nothing "
                            f"enhanced to save; raise --lr or the loss weights, or pass --allow-unchanged to save "
                            f"the unchanged model anyway")
        log.warning("training did not change the weights measurably (%s): saving it as asked (--allow-unchanged); "
                    "the report says it is unchanged", change.describe())
    return change


def train_and_save(stages: Stages, method, model, tokenizer, inputs, cfg: RunConfig, model_name: str, run: RunDir):
    """Train with a method, then save what every trained run ships: OUT/model, OUT/patch, OUT/model.gguf
    (or, for a method that leaves the weights alone, OUT/steering: what reproduces its effect).
    A method that changes weights but did not move them is refused here (check_moved), before saving.

    Returns the TrainResult, or None on a non-main data-parallel process (which saves nothing).
    """
    names = method.trainable_names(model, cfg.train)
    originals = snapshot(model, names) if distributed.is_main() else {}
    with stages("train"):
        result = method.train(model, tokenizer, inputs, cfg.train, log_path=run.losses,
                              options=method_options(method, cfg))
    if not distributed.is_main():
        return None
    if not method.changes_weights:  # steering: the subspace and settings reproduce it; no copy of the model
        with stages("save"):
            method.save_pretrained(run.steering)
        return result
    change = check_moved(model, originals, cfg.allow_unchanged)
    with stages("save"):
        save_model(model, tokenizer, run.model)
        patch_cfg = save_patch(model, originals, run.patch,
                               {**patch_info(cfg, model_name, names), "weight_change": change.to_dict()})
        write_gguf(cfg, model, run, patch_cfg)
    return result
