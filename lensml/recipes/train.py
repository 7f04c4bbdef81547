"""`lens train`: train with a probed subspace, writing the folder layout `lens run` writes.

OUT/subspace, OUT/model and OUT/manifest.json (naming the base model) are where `lens run` puts
them, so `lens chat OUT --compare`, `lens train --subspace OUT` and `lens compare` work on any of them.
"""

from __future__ import annotations

import logging
from pathlib import Path

from lensml import methods
from lensml.recipes.config import RunConfig
from lensml.export.card import write_model_card
from lensml.errors import LensError
from lensml.io import write_json_atomic
from lensml.runtime.models import load_model
from lensml.results.plots import plot_run
from lensml.recipes.stages import (Stages, check_output, load_inputs, method_inputs, output_dir, response_languages,
                                   train_and_save,
                                   write_manifest)
from lensml.results.report import RunReport, TrainSummary
from lensml.lens.subspace import LanguageSubspace

log = logging.getLogger(__name__)


def find_subspace(path: str | Path) -> Path:
    """A subspace folder, or a run/probe folder holding one in subspace/."""
    path = Path(path)
    if (path / "subspace").is_dir():
        return path / "subspace"
    return path


def train_job(cfg: RunConfig, subspace_path: str | None) -> RunReport | None:
    """Train with a probed subspace; write OUT/model, OUT/subspace (the one used), report and manifest."""
    method = methods.get(cfg.method)
    out = Path(cfg.out)
    check_output(out, cfg.overwrite)
    stages = Stages()
    subspace = None
    if method.needs_subspace:
        if not subspace_path:
            raise LensError(f"method '{cfg.method}' needs a probed subspace: pass --subspace DIR (from lens probe or lens run)")
        subspace = LanguageSubspace.from_pretrained(find_subspace(subspace_path))
    with stages("data"):
        inputs = load_inputs(cfg, probe=False, train=True, held_out=False, responses=response_languages(method, cfg))
    with output_dir(out, cfg.overwrite) as tmp:
        with stages("load_model"):
            model, tok, name = load_model(cfg.model)
        if subspace is not None:
            text = model.config.get_text_config()
            subspace.check_compatible(text.hidden_size, text.num_hidden_layers, cfg.langs, cfg.central)
            subspace.check_model(name)
        result = train_and_save(stages, method, model, tok, method_inputs(method, cfg, inputs, subspace), cfg, name, tmp)
        if result is None:
            return None
        if subspace is not None:
            subspace.save_pretrained(tmp / "subspace")
        timings = stages.total()
        report = RunReport(model=name, central=cfg.central, languages=cfg.languages,
                           train=TrainSummary(result.method, result.steps, result.lr, result.final,
                                              result.trainable_parameters, result.total_parameters),
                           timings_s=timings)
        manifest = write_manifest(tmp, "train", cfg, name, {**timings, **{f"train.{k}": v for k, v in result.timings_s.items()}},
                       train_resolved=result.resolved, losses=result.history,
                       data={"train_source": cfg.train_data, "train_rows": len(inputs.train_rows),
                             "subspace": str(subspace_path) if subspace_path else None},
                       trainable_parameters=result.trainable_parameters, total_parameters=result.total_parameters,
                       trainable_share=result.trainable_share)
        write_json_atomic(tmp / "report.json", report.to_dict())
        write_model_card(tmp / "model", report, manifest)
        plot_run(report, result.history, tmp / "report.png")
    log.info("wrote %s", out)
    return report
