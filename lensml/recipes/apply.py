"""`lens apply`: a base model plus a run's patch, saved as a full enhanced checkpoint.

The checkpoint folder also holds a manifest (kind "apply", the base model and the patch), so
`lens chat OUT --compare` finds the base and `--overwrite` knows the folder is lensml's.
"""

from __future__ import annotations

import logging
from pathlib import Path

from lensml.errors import LensError
from lensml.export.patch import apply_patch, read_patch
from lensml.io import write_json_atomic
from lensml.provenance import versions
from lensml.recipes.stages import check_output, output_dir, save_model
from lensml.results.rundir import RunDir
from lensml.runtime.models import ModelConfig, load_model

log = logging.getLogger(__name__)


def apply_job(patch_dir: str, base: str | None, out: str, overwrite: bool = False, dtype: str = "auto",
              device: str = "auto") -> Path:
    """`lens apply`: base model + patch -> a full enhanced checkpoint in OUT."""
    patch_cfg, _ = read_patch(patch_dir)  # a broken patch fails before the model loads
    spec = base or patch_cfg.get("base_model")
    if not spec:
        raise LensError(f"{patch_dir} names no base model: pass --base")
    model_cfg = ModelConfig(gguf=spec, dtype=dtype, device=device) if str(spec).endswith(".gguf") else \
        ModelConfig(model=spec, dtype=dtype, device=device, revision=patch_cfg.get("base_revision"))
    target = Path(out)
    check_output(target, overwrite)
    model, tok, _ = load_model(model_cfg)
    apply_patch(model, patch_dir)
    with output_dir(target, overwrite) as tmp:
        save_model(model, tok, tmp)
        write_json_atomic(RunDir(tmp).manifest, {"kind": "apply", "base_model": str(spec), "patch": str(patch_dir),
                                                 "method": patch_cfg.get("method"), "versions": versions()})
    log.info("wrote %s", target)
    return target
