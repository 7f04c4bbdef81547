"""`lens probe`: load, probe, write OUT/subspace and OUT/manifest.json (the layout `lens run` writes)."""

from __future__ import annotations

import logging
from pathlib import Path

from lensml import distributed
from lensml.lens.probing import probe
from lensml.lens.subspace import LanguageSubspace
from lensml.recipes.config import RunConfig
from lensml.recipes.finish import finish_run
from lensml.recipes.stages import Stages, check_output, load_inputs, output_dir
from lensml.results.rundir import RunDir
from lensml.runtime.models import load_model

log = logging.getLogger(__name__)


def probe_job(cfg: RunConfig) -> LanguageSubspace:
    """Probe and write OUT/subspace and OUT/manifest.json."""
    out = Path(cfg.out)
    check_output(out, cfg.overwrite)
    stages = Stages(cfg)  # the job's log starts here (OUT/run.log), its trackers open with its folder
    with stages("data"):
        inputs = load_inputs(cfg, probe=True, train=False, held_out=False)
    with output_dir(out, cfg.overwrite) as tmp:
        with stages("load_model"):
            model, tok, name = load_model(cfg.model)
        with stages("probe"):
            subspace = probe(model, tok, inputs.probe_texts, cfg.central, cfg.probe, name, cfg.probe_data)
        if distributed.is_main():
            run_dir = RunDir(tmp)
            subspace.save_pretrained(run_dir.subspace)
            finish_run(run_dir, "probe", cfg, name, stages,
                       data={"probe": subspace.metadata.get("data_sha256"), "probe_source": cfg.probe_data})
    log.info("wrote %s", out)
    return subspace
