"""`lens chat`: answers from an enhanced model, optionally beside its base model."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from lensml.errors import LensError
from lensml.evaluation.generation import generate_answers
from lensml.models import ModelConfig, load_model


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
    return load_model(cfg)[:2]


def chat(model_spec: str, base_spec: str | None, compare: bool, prompts: list[str] | None, max_new_tokens: int) -> int:
    if max_new_tokens < 1:
        raise LensError(f"--max-new-tokens must be at least 1, got {max_new_tokens}")
    base = (base_spec or base_of(model_spec)) if compare else None  # before anything loads
    prompts = prompts or [line.strip() for line in sys.stdin if line.strip()]
    if not prompts:
        raise LensError("no prompt given: pass --prompt TEXT or pipe prompts on stdin, one per line")
    model, tok = _load(model_folder(model_spec))
    answers = generate_answers(model, tok, prompts, max_new_tokens)
    base_answers = None
    if base is not None:
        del model
        base_model, base_tok = _load(base)
        base_answers = generate_answers(base_model, base_tok, prompts, max_new_tokens)
    for i, prompt in enumerate(prompts):
        print(f"### {prompt}")
        if base_answers is not None:
            print(f"--- base\n{base_answers[i]}\n--- enhanced\n{answers[i]}\n")
        else:
            print(f"{answers[i]}\n")
    return 0
