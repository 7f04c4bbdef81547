"""Sweep training settings on one model: probe once, cache once, train each setting from the same weights.

Why: picking defaults by measurement. Each setting reports target-language fidelity
(and clean fidelity: right language, no echo or loop), central-language fidelity and
the change of the base model's own English answers' NLL, on the held-out prompts.

    python benchmarks/sweep.py --grid '[{"lr": 5e-4, "retain": "both", "lambda3": 10}]' --json runs/sweep.json
"""

from __future__ import annotations

import argparse
import copy
import json
import time

import torch

from lensml.data.loaders import load_rows, load_texts
from lensml.evaluation.generation import answer_nll
from lensml.evaluation.quick import QuickEvalConfig, answer_prompts, score_answers
from lensml.langid import LanguageIdentifier
from lensml.losses import LossConfig
from lensml.models import ModelConfig, load_model
from lensml.probing import ProbeConfig, probe
from lensml.training import TrainConfig, build_cache, train

LOSS_KEYS = {"lambda1", "lambda3", "retain", "reduction", "detach_central", "lambdas"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--lang", default="zh")
    ap.add_argument("--probe-data", default="embedded")
    ap.add_argument("--train-data", default="embedded")
    ap.add_argument("--grid", required=True, help="JSON list of settings (TrainConfig / LossConfig fields)")
    ap.add_argument("--json", required=True)
    args = ap.parse_args()
    langs = ["en", args.lang]
    model, tok, _ = load_model(ModelConfig(model=args.model))
    sub = probe(model, tok, load_texts(args.probe_data, langs), "en", ProbeConfig())
    held = load_rows("embedded:heldout", langs)
    prompts = {lang: [r[lang] for r in held] for lang in langs}
    qcfg = QuickEvalConfig()
    ident = LanguageIdentifier()
    base = answer_prompts(model, tok, prompts, qcfg, "base")
    base_scores = score_answers(prompts, base, ident)
    base_nll = answer_nll(model, tok, prompts["en"], base["en"])
    rows = [{"setting": "base", "answers": base, **{f"{k}_{lang}": base_scores[lang][k] for lang in langs
                                   for k in ("fidelity", "clean_fidelity", "echo", "loop")}, "nll_change": 0.0}]
    print(json.dumps({k: v for k, v in rows[-1].items() if k != "answers"}), flush=True)
    original = copy.deepcopy(model.state_dict())
    pairs = load_rows(args.train_data, langs)
    caches = {}
    for setting in json.loads(args.grid):
        model.load_state_dict(original)
        loss = LossConfig(**{k: v for k, v in setting.items() if k in LOSS_KEYS})
        cfg = TrainConfig(**{k: v for k, v in setting.items() if k not in LOSS_KEYS}, loss=loss)
        key = (cfg.start_layer, cfg.max_length, cfg.samples)
        if key not in caches:
            caches[key] = build_cache(model, tok, pairs, langs, "en", cfg)
        t = time.perf_counter()
        res = train(model, tok, sub, pairs, langs, "en", cfg, cache=caches[key])
        train_s = time.perf_counter() - t
        enh = answer_prompts(model, tok, prompts, qcfg, "enhanced")
        sc = score_answers(prompts, enh, ident)
        nll = answer_nll(model, tok, prompts["en"], base["en"])
        rows.append({"setting": setting, "train_s": round(train_s, 1), "steps": res.steps, "answers": enh,
                     **{f"{k}_{lang}": sc[lang][k] for lang in langs for k in ("fidelity", "clean_fidelity", "echo", "loop")},
                     "nll_change": (nll - base_nll) / base_nll, "final_loss": res.history[-1]})
        print(json.dumps({k: v for k, v in rows[-1].items() if k != "answers"}), flush=True)
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"model": args.model, "lang": args.lang, "rows": rows}, f, indent=1)
    model.load_state_dict(original)


if __name__ == "__main__":
    torch.manual_seed(0)
    main()
