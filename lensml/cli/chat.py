"""`lens chat`: answers from an enhanced model, optionally beside its base model.

With --steer RUN_OR_SUBSPACE the model answers with steering hooks on (lensml.methods.steer.hooks);
--compare then shows the same model without them (or --base, if given). A folder written by
`lens run --method steer` (no model/, a steering/ folder) can be given as MODEL itself: its
base model is loaded from the manifest and steered with its own settings.

Answers are printed as their tokens come (lensml.runtime.generation.stream_answer). With --compare,
the base answer comes first, then the enhanced (or steered) one. Two models are never held at once
(an 8B pair would not fit where one does): the base model answers every prompt, then the enhanced
model does, each answer under its prompt's heading; one prompt reads as base then enhanced either way.
"""

from __future__ import annotations

import sys

from lensml.errors import LensError
from lensml.methods.steer.hooks import Steering
from lensml.results.rundir import RunDir
from lensml.runtime.generation import stream_answer
from lensml.runtime.models import ModelConfig, load_model


def model_folder(spec: str) -> str:
    """A run folder means its model/ (lens run and lens train write OUT/model)."""
    run = RunDir(spec)
    model = run.model_or_none() if run.manifest.is_file() else None
    return str(model) if model is not None else spec


def base_of(model_spec: str) -> str:
    """The base model of a run, read from the manifest of the run folder (OUT, or the parent of OUT/model)."""
    run = RunDir.containing(model_spec)
    if run is None:
        raise LensError(f"no manifest.json in or beside {model_spec} to find the base model: pass --base")
    return run.base_model(fix="pass --base")


def read_prompts(given: list[str] | None) -> list[str]:
    """The prompts of --prompt, else stdin's lines; blank ones are skipped either way (an empty turn is no question)."""
    source = given if given is not None else sys.stdin
    prompts = [text.strip() for text in source if text.strip()]
    if not prompts:
        what = "every --prompt is empty" if given is not None else "stdin held no prompt"
        raise LensError(f"no prompt given ({what}): pass --prompt TEXT or pipe prompts on stdin, one per line")
    return prompts


def _load(spec: str):
    cfg = ModelConfig(gguf=spec) if spec.endswith(".gguf") else ModelConfig(model=spec)
    return load_model(cfg)


class Printer:
    """Prints streamed answers under their prompts: the heading when the prompt changes, a label per side."""

    def __init__(self, prompts: list[str], labelled: bool):
        self.prompts, self.labelled, self.current = prompts, labelled, None

    def answer(self, model, tok, i: int, label: str, max_new_tokens: int) -> None:
        if self.current is not None and self.current != i:
            print(flush=True)
        if self.current != i:
            print(f"### {self.prompts[i]}")
        self.current = i
        if self.labelled:
            print(f"--- {label}")
        stream_answer(model, tok, self.prompts[i], lambda piece: print(piece, end="", flush=True), max_new_tokens)
        print(flush=True)

    def close(self) -> None:
        if self.current is not None:
            print(flush=True)


def chat(model_spec: str, base_spec: str | None, compare: bool, prompts: list[str] | None, max_new_tokens: int,
         steer: str | None = None, steer_lang: str | None = None, steer_strength: float | None = None) -> int:
    if max_new_tokens < 1:
        raise LensError(f"--max-new-tokens must be at least 1, got {max_new_tokens}")
    if RunDir(model_spec).is_steer_run():  # its model is the base, steered with its own settings unless --steer says otherwise
        steer, model_spec = steer or model_spec, base_of(model_spec)
    if steer is None and (steer_lang is not None or steer_strength is not None):
        raise LensError("--steer-lang and --steer-strength need --steer RUN_OR_SUBSPACE")
    steering = None
    if steer is not None:  # before anything loads
        steering = Steering.from_pretrained(steer, strength=steer_strength, lang=steer_lang)
    base = (base_spec or (None if steering else base_of(model_spec))) if compare else None
    prompts = read_prompts(prompts)
    label = "steered" if steering is not None else "enhanced"
    out = Printer(prompts, labelled=compare)
    if base is not None:  # another model: all its answers first, then it is let go
        base_model, base_tok, _ = _load(base)
        for i in range(len(prompts)):
            out.answer(base_model, base_tok, i, "base", max_new_tokens)
        del base_model
    model, tok, name = _load(model_folder(model_spec))
    for i in range(len(prompts)):
        if compare and base is None:  # the same model without the hooks, first
            out.answer(model, tok, i, "base", max_new_tokens)
        if steering is not None:
            with steering.attach(model, name):
                out.answer(model, tok, i, label, max_new_tokens)
        else:
            out.answer(model, tok, i, label, max_new_tokens)
    out.close()
    return 0
