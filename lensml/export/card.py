"""The card of a run and publishing to the Hub.

The card is what a person reads on the Hub: Hub metadata (base model, languages,
library, tags, the base's licence where known) and what was done, with the run's
before/after table. It sits beside what the run ships (RunDir.card): OUT/model/README.md
when weights changed; OUT/steering/README.md for steering, which changes no weight and
ships settings to load with the base model instead. Publishing is checked before any
work starts (token, Hub reachable) so that a run never ends half-published.
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path

from huggingface_hub import HfApi, ModelCard, ModelCardData, get_token

from lensml import __version__
from lensml.errors import LensError
from lensml.io import write_text_atomic
from lensml.results.report import RunReport
from lensml.results.rundir import RunDir
from lensml.runtime.models import _hub_error, bound_hub_requests

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

A plain transformers checkpoint: load it, and ask in its chat template.

```python
from transformers import AutoModelForCausalLM, AutoTokenizer

model = AutoModelForCausalLM.from_pretrained("{{ repo }}")
tokenizer = AutoTokenizer.from_pretrained("{{ repo }}")
messages = [{"role": "user", "content": {{ prompt }}}]
inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=True, return_tensors="pt")
output = model.generate(**inputs, max_new_tokens=128, do_sample=False)
print(tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True))
```

Made with lensml {{ version }} (`{{ job }}`); the run's report.json and manifest.json hold every number above.
"""

STEERING_TEMPLATE = """---
{{ card_data }}
---

# {{ title }}

{{ summary }}

## What was done

{{ details }}

## Before and after

Held-out prompts answered greedily by the base model without and with the steering hooks (lensml's
quick check: fidelity = answers in the prompt's language; clean = in the right language and neither
an echo of the prompt nor a loop; NLL = the base model's own English answers, unsteered and steered).
The "enhanced" columns are the steered model.

{{ table }}

## Use

No weight changed, so there is no model to download: load the base model `{{ base }}` and switch the
hooks on with this folder (`steering.json`: the settings; `subspace/`: the probed language subspace).
{{ fetch }}
```bash
lens chat {{ run }} --prompt "..."                                   # the run folder: its base model, steered
lens chat {{ base }} --steer {{ steering }} --compare --prompt "..."  # steered beside unsteered
```

```python
from lensml import ModelConfig, load_model
from lensml.methods.steer import Steering
model, tokenizer, name = load_model(ModelConfig({{ load }}="{{ base }}"))
with Steering.from_pretrained("{{ steering }}").attach(model, name):
    ...  # generate as usual: every answer is steered until the block ends
```

Made with lensml {{ version }} (`{{ job }}`); the run's report.json and manifest.json hold every number above.
"""


#: A question for the card's usage snippet, in the run's first target language where one is written here.
EXAMPLE_PROMPTS = {
    "zh": "请用三句话介绍一下长城。", "ja": "富士山について三文で説明してください。",
    "ko": "한국의 사계절을 세 문장으로 설명해 주세요.", "fr": "Explique la photosynthèse en trois phrases.",
    "de": "Erkläre die Photosynthese in drei Sätzen.", "es": "Explica la fotosíntesis en tres frases.",
    "sw": "Eleza usanisinuru kwa sentensi tatu.", "en": "Explain photosynthesis in three sentences.",
}


def human(value) -> str:
    """A number as a person writes it: 1e-3, not 0.0010000000000000002 (4 significant digits; the
    scientific form, without padding zeros, below 0.01 and from a million on). Anything else as str()."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if value == 0 or not math.isfinite(value):
        return f"{value:g}"
    text = f"{value:.3e}" if abs(value) < 1e-2 or abs(value) >= 1e6 else f"{value:.4g}"
    if "e" not in text:
        return text
    mantissa, exponent = text.split("e")
    if "." in mantissa:
        mantissa = mantissa.rstrip("0").rstrip(".")
    return f"{mantissa}e{int(exponent)}"


def human_options(options) -> str:
    """Resolved options as `name=value` pairs, numbers by human(), nested sections in braces."""
    if isinstance(options, dict):
        return ", ".join(f"{k}={{{human_options(v)}}}" if isinstance(v, dict) else f"{k}={human_options(v)}"
                         for k, v in options.items())
    if isinstance(options, (list, tuple)):
        return "[" + ", ".join(human_options(v) for v in options) + "]"
    return human(options)


def _license(base: str) -> str | None:
    if base in KNOWN_LICENSES:
        return KNOWN_LICENSES[base]
    readme = Path(base) / "README.md"
    if readme.is_file():
        try:
            return ModelCard.load(readme).data.to_dict().get("license")
        except Exception:  # noqa: BLE001 - a malformed base card only costs the licence line
            return None
    return None


def write_card(run: RunDir, changes_weights: bool, report: RunReport, manifest: dict, repo: str | None = None) -> Path:
    """The run's card beside what it ships (RunDir.card); returns its path."""
    path = run.card(changes_weights)
    if changes_weights:
        write_model_card(path, report, manifest, repo)
    else:
        write_steering_card(path, report, manifest, repo)
    return path


def write_model_card(path: Path, report: RunReport, manifest: dict, repo: str | None = None) -> None:
    """The card of a model whose weights the run changed (OUT/model/README.md)."""
    base = report.model
    train = report.train
    details = "\n".join([
        _languages_line(report),
        f"- Trained {train.steps} optimiser steps at peak learning rate {human(train.lr)}; "
        f"{100 * train.trainable_share:.2f}% of the parameters ({train.trainable_parameters:,} of "
        f"{train.total_parameters:,}) changed." if train else "- Not trained.",
        _data_line(manifest),
        f"- Options (resolved): `{human_options(manifest.get('train_resolved') or {}) or 'none'}`.",
        f"- Wall time: {report.timings_s.get('total', 0):.0f} s.",
    ])
    card = ModelCard.from_template(
        _card_data(report, "transformers", []), template_str=TEMPLATE, title=f"{base} + {report.method}",
        summary=(f"`{base}` trained by lensml ({report.method}) without a measurable change of its weights "
                 f"(saved with --allow-unchanged): this is the base model, not an enhanced one."
                 if train and train.unchanged else
                 f"`{base}` with its language representations edited by lensml ({report.method}) so that it "
                 f"answers better in {', '.join(_targets(report))}."),
        details=details, table=report.table(), repo=repo or "PATH/TO/model", version=__version__,
        job=_job(manifest, ""), prompt=json.dumps(_example_prompt(report), ensure_ascii=False))
    write_text_atomic(path, str(card))


def write_steering_card(path: Path, report: RunReport, manifest: dict, repo: str | None = None) -> None:
    """The card of a steering run (OUT/steering/README.md): no weight changed, so it says how to steer the base."""
    base = report.model
    resolved = manifest.get("train_resolved") or {}
    steer = resolved.get("steer") or {}
    strength = steer.get("strength")
    chosen = (f"chosen by measurement on the training prompts among {human_options(steer.get('grid'))}"
              if resolved.get("measurement") else "as given (--steer.strength)")  # measured only when not given
    lang = steer.get("lang")
    total = report.train.total_parameters if report.train else 0
    details = "\n".join([
        _languages_line(report),
        f"- Strength lambda = {human(strength) if strength is not None else '?'} language gaps, {chosen}; added "
        f"from probed layer {steer.get('start_layer')} on, pull {steer.get('pull')}; the language steered to is "
        + (f"`{lang}` for every prompt." if lang else "read off each prompt's state."),
        f"- No weight changed (0 of {total:,} parameters): the hooks act on the base model at inference.",
        _data_line(manifest),
        f"- Settings (resolved): `{human_options(steer) or 'none'}`.",
        f"- Wall time: {report.timings_s.get('total', 0):.0f} s.",
    ])
    spec = manifest.get("base_model") or base  # what `lens chat` loads (a path, Hub id, packaged name or .gguf)
    fetch = (f"\nThis folder is the Hub repository `{repo}`: `hf download {repo} --local-dir steering` fetches it "
             f"(then `--steer steering`).\n" if repo else "")
    card = ModelCard.from_template(
        _card_data(report, None, ["steering"]), template_str=STEERING_TEMPLATE, title=f"{base} + steer",
        summary=f"`{base}` steered at inference by lensml (steer): hooks add the probed language direction to the "
                f"top layers' hidden states so that it answers better in {', '.join(_targets(report))}. "
                f"No weight of the model changed; this folder holds the settings that reproduce the effect.",
        details=details, table=report.table(), base=spec, load="gguf" if spec.endswith(".gguf") else "model",
        run="PATH/TO/RUN",
        steering="steering" if repo else "PATH/TO/RUN/steering", fetch=fetch, version=__version__,
        job=_job(manifest, " --method steer"))
    write_text_atomic(path, str(card))


def _example_prompt(report: RunReport) -> str:
    return next((EXAMPLE_PROMPTS[lang] for lang in _targets(report) if lang in EXAMPLE_PROMPTS), EXAMPLE_PROMPTS["en"])


def _targets(report: RunReport) -> list[str]:
    return [lang for lang in report.languages if lang != report.central]


def _card_data(report: RunReport, library: str | None, tags: list[str]) -> ModelCardData:
    base = report.model
    is_hub_id = base.count("/") == 1 and not Path(base).exists()
    return ModelCardData(base_model=base if is_hub_id else None, language=report.languages,
                         library_name=library, license=_license(base),
                         tags=["lensml", f"lensml-{report.method}", "multilingual", *tags])


def _languages_line(report: RunReport) -> str:
    return (f"- Method: `{report.method}`; central language `{report.central}`; target languages "
            f"{', '.join(f'`{lang}`' for lang in _targets(report))}.")


def _data_line(manifest: dict) -> str:
    """Where the subspace and the training prompts came from: probed in the run, or given to `lens train`."""
    cfg, data = manifest.get("config", {}), manifest.get("data", {})
    if manifest.get("kind") == "train":
        return f"- Subspace: `{data.get('subspace')}` (probed earlier); training data: `{cfg.get('train_data')}`."
    return (f"- Probe data: `{cfg.get('probe_data')}`; training data: `{cfg.get('train_data')}`"
            f" (probe text hashes: {data.get('probe')}).")


def _job(manifest: dict, flags: str) -> str:
    """The command that made the run: `lens run` or `lens train`, as the manifest records."""
    return f"lens {manifest.get('kind', 'run')}{flags}"


def check_push(repo_id: str) -> None:
    """Before any work: a token exists and the Hub answers; otherwise one line with the fix."""
    if repo_id.count("/") != 1:
        raise LensError(f"--push-to-hub {repo_id}: a Hub repository id is OWNER/NAME")

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
    try:
        api = HfApi()
        api.create_repo(repo_id, exist_ok=True)
        info = api.upload_folder(repo_id=repo_id, folder_path=str(folder), commit_message="lensml run")
    except Exception as err:  # noqa: BLE001
        raise LensError(f"upload of {folder} to {repo_id} failed ({type(err).__name__}); the run is complete "
                        f"locally: upload it later with `hf upload {repo_id} {folder}`") from err
    return str(getattr(info, "commit_url", repo_id))
