"""`lens run --dry-run` / `lens train --dry-run`: the plan (lensml.recipes.plan) as text, and the resolved options."""

from __future__ import annotations

import json

import yaml

from lensml.config import to_dict
from lensml.recipes.plan import Plan


def _count(n: int) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.2f}{unit}"
    return str(n)


def print_plan(plan: Plan) -> None:
    f, train = plan.family, plan.resolved.train
    print(f"dry run of lens {plan.kind} (method {plan.method}): nothing was loaded or written")
    print(f"model:    {plan.model}: {f.architecture} ({f.model_type}{'' if f.tested else ', untested family'}), "
          f"{f.layers} layers, hidden {f.hidden_size}, {_count(f.parameters)} parameters")
    print(f"          from {plan.source}; on {plan.device} in {plan.dtype}")
    print(f"languages: {', '.join(plan.languages)} (central {plan.languages[0]})"
          + (f"; subspace rank r = {plan.rank}" if plan.rank is not None else ""))
    for role, what in plan.data.items():
        print(f"data:     {role}: {what}")
    if plan.trainable_parameters:
        layers = ", ".join(map(str, plan.trained_layers)) if len(plan.trained_layers) <= 8 else \
            f"{plan.trained_layers[0]}-{plan.trained_layers[-1]}"
        print(f"training: layers {layers} of {f.layers}: {_count(plan.trainable_parameters)} parameters "
              f"({100 * plan.trainable_share:.2f}%); lr {train.lr:.3g}, {train.epochs} epoch(s), batch {train.batch_size}, "
              f"warm-up {train.warmup_ratio:g}, "
              + (f"{plan.steps} optimiser steps over the training rows" if plan.steps else "steps from the Hub data"))
    for path in plan.outputs:
        print(f"writes:   {path}")
    for note in plan.notes:
        print(f"note:     {note}")
    print("resolved options (size defaults filled in):")
    plain = json.loads(json.dumps(to_dict(plan.resolved)))  # int subclasses (defaults) as plain numbers
    print(yaml.safe_dump(plain, sort_keys=False, allow_unicode=True).rstrip())
