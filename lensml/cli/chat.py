"""`lens chat`: answers from an enhanced model, optionally beside its base model.

With --steer RUN_OR_SUBSPACE the model answers with steering hooks on (lensml.methods.steer.hooks);
--compare then shows the same model without them (or --base, if given). A folder written by
`lens run --method steer` (no model/, a steering/ folder) can be given as MODEL itself: its
base model is loaded from the manifest and steered with its own settings.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from lensml.errors import LensError
from lensml.runtime.generation import generate_answers
from lensml.runtime.models import ModelConfig, load_model


def model_folder(spec: str) -> str:
    """A run folder means its model/ (lens run and lens train write OUT/model)."""
    path = Path(spec)
    if (path / "manifest.json").is_file() and (path / "model" / "config.json").is_file():
        return str(path / "model")
    return spec


def base_of(model_spec: str) -> str:
    """The base model of a run, read from the manifest.json of the run folder (OUT or OUT/model's parent)."""
    path = Path(model_spec)
    for candidate in (path / "manifest.json", path.parent / "manifest.json"):
        if candidate.is_file():
            try:
                return json.loads(candidate.read_text(encoding="utf-8"))["base_model"]
            except (json.JSONDecodeError, KeyError, TypeError) as err:
                raise LensError(f"{candidate} names no base model: pass --base") from err
    raise LensError(f"no manifest.json in or beside {model_spec} to find the base model: pass --base")


def _load(spec: str):
    cfg = ModelConfig(gguf=spec) if spec.endswith(".gguf") else ModelConfig(model=spec)
    return load_model(cfg)


def is_steer_run(spec: str) -> bool:
    """A `lens run --method steer` folder: a manifest and steering settings, no model of its own."""
    path = Path(spec)
    return ((path / "manifest.json").is_file() and (path / "steering" / "steering.json").is_file()
            and not (path / "model" / "config.json").is_file())


def chat(model_spec: str, base_spec: str | None, compare: bool, prompts: list[str] | None, max_new_tokens: int,
         steer: str | None = None, steer_lang: str | None = None, steer_strength: float | None = None) -> int:
    if max_new_tokens < 1:
        raise LensError(f"--max-new-tokens must be at least 1, got {max_new_tokens}")
    if is_steer_run(model_spec):  # its model is the base, steered with its own settings unless --steer says otherwise
        steer, model_spec = steer or model_spec, base_of(model_spec)
    if steer is None and (steer_lang is not None or steer_strength is not None):
        raise LensError("--steer-lang and --steer-strength need --steer RUN_OR_SUBSPACE")
    steering = None
    if steer is not None:  # before anything loads
        from lensml.methods.steer.hooks import Steering
        steering = Steering.from_pretrained(steer, strength=steer_strength, lang=steer_lang)
    base = (base_spec or (None if steering else base_of(model_spec))) if compare else None
    prompts = prompts or [line.strip() for line in sys.stdin if line.strip()]
    if not prompts:
        raise LensError("no prompt given: pass --prompt TEXT or pipe prompts on stdin, one per line")
    model, tok, name = _load(model_folder(model_spec))
    base_answers = None
    if steering is not None:
        with steering.attach(model, name):
            answers = generate_answers(model, tok, prompts, max_new_tokens)
        if compare and base is None:  # the same model without the hooks
            base_answers = generate_answers(model, tok, prompts, max_new_tokens)
    else:
        answers = generate_answers(model, tok, prompts, max_new_tokens)
    if base is not None:
        del model
        base_model, base_tok, _ = _load(base)
        base_answers = generate_answers(base_model, base_tok, prompts, max_new_tokens)
    label = "steered" if steering is not None else "enhanced"
    for i, prompt in enumerate(prompts):
        print(f"### {prompt}")
        if base_answers is not None:
            print(f"--- base\n{base_answers[i]}\n--- {label}\n{answers[i]}\n")
        else:
            print(f"{answers[i]}\n")
    return 0
