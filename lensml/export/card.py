"""The model card of a run (OUT/model/README.md) and publishing to the Hub.

The card is what a person reads on the Hub: Hub metadata (base model, languages,
library, tags, the base's licence where known) and what was done, with the run's
before/after table. Publishing is checked before any work starts (token, Hub
reachable) so that a run never ends half-published.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from lensml import __version__
from lensml.errors import LensError
from lensml.results.report import RunReport

log = logging.getLogger(__name__)

#: Licences of the packaged models (their Hub cards); other bases are looked up in their own card.
KNOWN_LICENSES = {"HuggingFaceTB/SmolLM2-135M-Instruct": "apache-2.0", "google/gemma-3-270m": "gemma"}

TEMPLATE = """---
{{ card_data }}
---

# {{ title }}

{{ summary }}

## What was done

{{ details }}

## Before and after

Held-out prompts answered greedily by the base and the enhanced model (lensml's quick check:
fidelity = answers in the prompt's language; clean = in the right language and neither an echo of
the prompt nor a loop; NLL = the base model's own English answers under each model).

{{ table }}

## Use

```python
from transformers import AutoModelForCausalLM, AutoTokenizer
model = AutoModelForCausalLM.from_pretrained("{{ repo }}")
tokenizer = AutoTokenizer.from_pretrained("{{ repo }}")
```

Made with lensml {{ version }} (`lens run`); the run's report.json and manifest.json hold every number above.
"""


def _license(base: str) -> str | None:
    if base in KNOWN_LICENSES:
        return KNOWN_LICENSES[base]
    readme = Path(base) / "README.md"
    if readme.is_file():
        try:
            from huggingface_hub import ModelCard
            return ModelCard.load(readme).data.to_dict().get("license")
        except Exception:  # noqa: BLE001 - a malformed base card only costs the licence line
            return None
    return None


def write_model_card(directory: Path, report: RunReport, manifest: dict, repo: str | None = None) -> None:
    """OUT/model/README.md from the run's report and manifest."""
    from huggingface_hub import ModelCard, ModelCardData

    base = report.model
    is_hub_id = base.count("/") == 1 and not Path(base).exists()
    cfg = manifest.get("config", {})
    data = ModelCardData(base_model=base if is_hub_id else None, language=report.languages,
                         library_name="transformers", license=_license(base),
                         tags=["lensml", f"lensml-{report.method}", "multilingual"])
    train = report.train
    details = "\n".join([
        f"- Method: `{report.method}`; central language `{report.central}`; target languages "
        f"{', '.join(f'`{lang}`' for lang in report.languages if lang != report.central)}.",
        f"- Trained {train.steps} optimiser steps at peak learning rate {train.lr:.2e}; "
        f"{100 * train.trainable_share:.2f}% of the parameters ({train.trainable_parameters:,} of "
        f"{train.total_parameters:,}) changed." if train else "- Not trained.",
        f"- Probe data: `{cfg.get('probe_data')}`; training data: `{cfg.get('train_data')}`"
        f" (probe text hashes: {manifest.get('data', {}).get('probe')}).",
        f"- Options (resolved): `{manifest.get('train_resolved', {})}`.",
        f"- Wall time: {report.timings_s.get('total', 0):.0f} s.",
    ])
    card = ModelCard.from_template(
        data, template_str=TEMPLATE, title=f"{base} + {report.method}",
        summary=f"`{base}` with its language representations edited by lensml ({report.method}) so that it "
                f"answers better in {', '.join(lang for lang in report.languages if lang != report.central)}.",
        details=details, table=report.table(), repo=repo or "PATH/TO/model", version=__version__)
    (directory / "README.md").write_text(str(card), encoding="utf-8")


def check_push(repo_id: str) -> None:
    """Before any work: a token exists and the Hub answers; otherwise one line with the fix."""
    if repo_id.count("/") != 1:
        raise LensError(f"--push-to-hub {repo_id}: a Hub repository id is OWNER/NAME")
    from huggingface_hub import HfApi, get_token

    from lensml.runtime.models import _hub_error, bound_hub_requests
    if not (os.environ.get("HF_TOKEN") or get_token()):
        raise LensError("--push-to-hub needs a Hugging Face token: set HF_TOKEN or run `hf auth login`")
    bound_hub_requests()
    try:
        HfApi().whoami()
    except Exception as err:  # noqa: BLE001 - every failure here means: do not start
        hub = _hub_error(err, repo_id)
        reason = str(hub) if hub is not None else f"{type(err).__name__}"
        raise LensError(f"cannot push to {repo_id}: the Hub does not answer or refuses the token ({reason.split(':')[0]}); "
                        f"run without --push-to-hub and upload OUT later") from err


def push(folder: Path, repo_id: str) -> str:
    """Upload a finished folder; the local copy stays complete whatever happens."""
    from huggingface_hub import HfApi

    try:
        api = HfApi()
        api.create_repo(repo_id, exist_ok=True)
        info = api.upload_folder(repo_id=repo_id, folder_path=str(folder), commit_message="lensml run")
    except Exception as err:  # noqa: BLE001
        raise LensError(f"upload of {folder} to {repo_id} failed ({type(err).__name__}); the run is complete "
                        f"locally: upload it later with `hf upload {repo_id} {folder}`") from err
    return str(getattr(info, "commit_url", repo_id))
