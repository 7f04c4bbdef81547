"""lensml: multilingual enhancement of LLMs via language subspaces (LENS).

Probe a model's language subspaces, train it with them, and score it on a benchmark:

    from lensml import ModelConfig, ProbeConfig, TrainConfig, evaluate, load_model, load_rows, load_texts, probe, train

    model, tok, name = load_model(ModelConfig(model="smollm2-135m-instruct"))
    subspace = probe(model, tok, load_texts("embedded", ["en", "zh"]), "en", ProbeConfig())
    result = train(model, tok, subspace, load_rows("embedded", ["en", "zh"]), ["zh"], "en", TrainConfig())
    print(result)  # steps, final loss, trainable share
    scores = evaluate(model, "xcopa:zh", tokenizer=tok, limit=50)  # data: LENSML_EVAL_DATA, or the Hub

The whole job, with its output folder and report: `run(RunConfig(langs=["zh"], out="runs/nb"))`.
The names below are imported on first use, so `import lensml` stays cheap (no torch
or transformers until a function needs them).
"""

from __future__ import annotations

import importlib

from lensml.errors import LensError

__version__ = "0.1.0"

_EXPORTS = {
    "load_model": "lensml.runtime.models", "ModelConfig": "lensml.runtime.models",
    "probe": "lensml.lens.probing", "ProbeConfig": "lensml.lens.probing",
    "LanguageSubspace": "lensml.lens.subspace",
    "train": "lensml.methods.lens", "TrainConfig": "lensml.training", "LossConfig": "lensml.lens.losses",
    "run": "lensml.recipes.run", "RunConfig": "lensml.recipes.config", "load_config": "lensml.recipes.config",
    "evaluate": "lensml.evaluation.api", "EvalConfig": "lensml.evaluation.suite",
    "RunReport": "lensml.results.report", "RunDir": "lensml.results.rundir", "apply_patch": "lensml.export.patch",
    "load_rows": "lensml.data.loaders", "load_texts": "lensml.data.loaders",
}

__all__ = ["LensError", "__version__", *_EXPORTS]


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'lensml' has no attribute '{name}'")


def __dir__():
    return sorted(__all__)
