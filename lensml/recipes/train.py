"""`lens train`: train with a probed subspace, writing the folder layout `lens run` writes.

OUT/subspace, OUT/model (or OUT/steering for steering) and OUT/manifest.json (naming the base model)
are where `lens run` puts them (lensml.results.rundir), and the folder ends as a run's does
(lensml.recipes.finish), so `lens chat OUT --compare`, `lens train --subspace OUT` and `lens compare`
work on any of them.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from lensml import methods
from lensml.errors import LensError
from lensml.lens.subspace import LanguageSubspace
from lensml.recipes.config import RunConfig
from lensml.recipes.finish import Trained, finish_run
from lensml.recipes.stages import (
    Stages,
    check_output,
    load_inputs,
    method_inputs,
    output_dir,
    response_languages,
    train_and_save,
)
from lensml.results.report import RunReport
from lensml.results.rundir import RunDir
from lensml.runtime.experts import trained_experts
from lensml.runtime.models import load_model

log = logging.getLogger(__name__)


def subspace_languages(cfg: RunConfig, subspace_path: str | None, given: set[str]) -> RunConfig:
    """cfg with the languages and central language of the subspace it trains with, where not given (given: the
    dotted names set by flags or --config), so `lens probe --langs ja` then `lens train --subspace OUT` trains ja."""
    take = {"langs", "central"} - set(given)
    if not subspace_path or not take or not methods.get(cfg.method).needs_subspace:
        return cfg
    sub = LanguageSubspace.from_pretrained(RunDir(subspace_path).find_subspace())
    central = sub.central if "central" in take else cfg.central
    changes = {"central": central} if "central" in take else {}
    if "langs" in take:
        changes["langs"] = [lang for lang in sub.languages if lang != central]
    if all(getattr(cfg, k) == v for k, v in changes.items()):
        return cfg
    log.info("languages from the subspace %s: %s, central %s", subspace_path, ",".join(changes.get("langs", cfg.langs)),
             central)
    return dataclasses.replace(cfg, **changes)


def train_job(cfg: RunConfig, subspace_path: str | None) -> RunReport | None:
    """Train with a probed subspace; write OUT/model (or OUT/steering), OUT/subspace (the one used), report,
    card and manifest."""
    method = methods.get(cfg.method)
    out = Path(cfg.out)
    check_output(out, cfg.overwrite)
    stages = Stages(cfg)  # the job's log starts here (OUT/run.log), its trackers open with its folder
    subspace = None
    if method.needs_subspace:
        if not subspace_path:
            raise LensError(f"method '{cfg.method}' needs a probed subspace: pass --subspace DIR (from lens probe or lens run)")
        subspace = LanguageSubspace.from_pretrained(RunDir(subspace_path).find_subspace())
    with stages("data"):
        inputs = load_inputs(cfg, probe=False, train=True, held_out=False, responses=response_languages(method, cfg))
    with output_dir(out, cfg.overwrite) as tmp:
        run_dir = RunDir(tmp)
        with stages("load_model"):
            model, tok, name = load_model(cfg.model)
        if subspace is not None:
            text = model.config.get_text_config()
            subspace.check_compatible(text.hidden_size, text.num_hidden_layers, cfg.langs, cfg.central)
            subspace.check_model(name)
        result = train_and_save(stages, method, model, tok, method_inputs(method, cfg, inputs, subspace), cfg, name,
                                run_dir)
        if result is None:
            return None
        if subspace is not None:
            subspace.save_pretrained(run_dir.subspace)
        report = finish_run(run_dir, "train", cfg, name, stages,
                            data={"train_source": cfg.train_data, "train_rows": len(inputs.train_rows),
                                  "subspace": str(subspace_path) if subspace_path else None},
                            trained=Trained(method, result, experts=trained_experts(
                                model, method.trainable_names(model, cfg.train))))
    log.info("wrote %s", out)
    return report
