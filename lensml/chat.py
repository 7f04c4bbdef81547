"""`lens chat`: answers from an enhanced model, optionally beside its base model."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from lensml.evaluation.generation import generate_answers
from lensml.errors import LensError
from lensml.models import ModelConfig, load_model


def base_of(model_dir: str) -> str:
    """The base model of a run, read from OUT/manifest.json beside OUT/model."""
    manifest = Path(model_dir).parent / "manifest.json"
    if not manifest.is_file():
        raise LensError(f"no manifest.json beside {model_dir} to find the base model: pass --base")
    doc = json.loads(manifest.read_text(encoding="utf-8"))
    return doc["base_model"]


def _load(spec: str):
    cfg = ModelConfig(gguf=spec) if spec.endswith(".gguf") else ModelConfig(model=spec)
    return load_model(cfg)[:2]


def chat(model_spec: str, base_spec: str | None, compare: bool, prompts: list[str] | None, max_new_tokens: int) -> int:
    prompts = prompts or [line.strip() for line in sys.stdin if line.strip()]
    if not prompts:
        raise LensError("no prompt given: pass --prompt TEXT or pipe prompts on stdin, one per line")
    model, tok = _load(model_spec)
    answers = generate_answers(model, tok, prompts, max_new_tokens)
    base_answers = None
    if compare:
        base_model, base_tok = _load(base_spec or base_of(model_spec))
        base_answers = generate_answers(base_model, base_tok, prompts, max_new_tokens)
    for i, prompt in enumerate(prompts):
        print(f"### {prompt}")
        if base_answers is not None:
            print(f"--- base\n{base_answers[i]}\n--- enhanced\n{answers[i]}\n")
        else:
            print(f"{answers[i]}\n")
    return 0
