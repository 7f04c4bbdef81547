"""Sweep training settings on one model: probe once, cache once, train each setting from the same weights.

Why: picking defaults by measurement. Each setting gets the run's own before/after
check (lensml.evaluation.quick -> the RunReport's QuickEval): target-language
fidelity, clean fidelity, echo/loop shares, central-language fidelity and the change
of the base model's own English answers' NLL, on the held-out prompts.

    python benchmarks/sweep.py --grid '[{"lr": 5e-4, "retain": "both", "lambda3": 10}]' --json runs/sweep.json
"""

from __future__ import annotations

import argparse
import copy
import json
import time

import torch

from lensml.caching import build_cache
from lensml.config import RunConfig
from lensml.evaluation import quick
from lensml.io import dumps, write_text_atomic
from lensml.losses import LossConfig
from lensml.methods.lens import train
from lensml.models import ModelConfig, load_model
from lensml.probing import probe
from lensml.recipes.stages import load_inputs
from lensml.training import TrainConfig

LOSS_KEYS = {"lambda1", "lambda3", "retain", "reduction", "detach_central", "lambdas"}


def _row(setting, q, langs) -> dict:
    row = {"setting": setting, "nll_change": q.retention.relative_change}
    for lang in langs:
        for key in ("fidelity", "clean_fidelity", "echo", "loop"):
            row[f"{key}_{lang}"] = getattr(q.enhanced[lang], key)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--lang", default="zh")
    ap.add_argument("--probe-data", default="embedded")
    ap.add_argument("--train-data", default="embedded")
    ap.add_argument("--grid", required=True, help="JSON list of settings (TrainConfig / LossConfig fields)")
    ap.add_argument("--json", required=True)
    args = ap.parse_args()
    cfg = RunConfig(model=ModelConfig(model=args.model), langs=[args.lang], probe_data=args.probe_data,
                    train_data=args.train_data)
    langs = cfg.languages
    inputs = load_inputs(cfg, probe=True, train=True, held_out=True)
    model, tok, _ = load_model(cfg.model)
    sub = probe(model, tok, inputs.probe_texts, cfg.central, cfg.probe)
    before = quick.answer_before(model, tok, inputs.held_out, cfg.central, cfg.eval)
    base_quick, _ = quick.compare(before, before, cfg.eval)
    rows = [{"setting": "base", **{f"{k}_{lang}": getattr(base_quick.base[lang], k) for lang in langs
                                   for k in ("fidelity", "clean_fidelity", "echo", "loop")}, "nll_change": 0.0}]
    print(json.dumps(rows[-1]), flush=True)
    original = copy.deepcopy(model.state_dict())
    caches = {}
    for setting in json.loads(args.grid):
        model.load_state_dict(original)
        loss = LossConfig(**{k: v for k, v in setting.items() if k in LOSS_KEYS})
        tcfg = TrainConfig(**{k: v for k, v in setting.items() if k not in LOSS_KEYS}, loss=loss)
        key = (tcfg.start_layer, tcfg.max_length, tcfg.samples)
        if key not in caches:
            caches[key] = build_cache(model, tok, inputs.train_rows, langs, cfg.central, tcfg)
        t = time.perf_counter()
        res = train(model, tok, sub, inputs.train_rows, langs, cfg.central, tcfg, cache=caches[key])
        train_s = time.perf_counter() - t
        after = quick.answer_after(model, tok, before, cfg.eval)
        scored, answers = quick.compare(before, after, cfg.eval)
        rows.append({**_row(setting, scored, langs), "train_s": round(train_s, 1), "steps": res.steps,
                     "final_loss": res.final, "answers": answers})
        print(json.dumps({k: v for k, v in rows[-1].items() if k != "answers"}), flush=True)
        write_text_atomic(args.json, dumps({"model": args.model, "lang": args.lang, "rows": rows}))
    model.load_state_dict(original)


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
