"""Every training method on a GPU: one pass of xsft, xsft-full, qalign, lens and steer on a random-weight
Llama of a given shape, with the embedded data (responses included). Checks that each runs on the device
(finite losses, only the intended weights change) and times it; prints one JSON line per method.

    python benchmarks/methods_gpu.py --device cuda --tokenizer .bench_tok --shape 1b
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path

import torch

sys.path.append(str(Path(__file__).resolve().parent))
sys.path.append(str(Path(__file__).resolve().parents[1]))

from shapes import SHAPES, random_llama  # noqa: E402

from lensml import methods  # noqa: E402
from lensml.data.loaders import load_rows  # noqa: E402
from lensml.methods.base import MethodInputs  # noqa: E402
from lensml.runtime.models import ModelConfig, load_tokenizer  # noqa: E402
from lensml.lens.probing import ProbeConfig, probe  # noqa: E402
from lensml.methods.steer.hooks import SteerConfig  # noqa: E402
from lensml.training import TrainConfig  # noqa: E402


def build(shape: str, tok, device):
    return random_llama(shape, tok, device, torch.bfloat16)


def _profiler(device):
    from torch.profiler import ProfilerActivity, profile
    return profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else []))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tokenizer", default=".bench_tok")
    ap.add_argument("--shape", choices=list(SHAPES), default="1b")
    ap.add_argument("--methods", default="lens,xsft,xsft-full,qalign,steer")
    ap.add_argument("--profile", action="store_true", help="print torch.profiler's top operators of each method")
    args = ap.parse_args()
    device = torch.device(args.device)
    tok = load_tokenizer(args.tokenizer, ModelConfig())
    langs, central = ["en", "zh"], "en"
    rows = load_rows("embedded", langs, responses=langs)
    model = build(args.shape, tok, device)
    original = {k: v.detach().clone() for k, v in model.state_dict().items()}
    texts = {lang: [r[lang] for r in rows] for lang in langs}
    t = time.perf_counter()
    sub = probe(model, tok, texts, central, ProbeConfig(), f"random {args.shape}")
    print(json.dumps({"probe_s": round(time.perf_counter() - t, 2)}), flush=True)
    ok = True
    for name in args.methods.split(","):
        with torch.no_grad():
            for k, v in model.state_dict().items():
                v.copy_(original[k])
        method = methods.get(name)
        config = methods.registration(name).config
        options = SteerConfig(strength=0.5) if name == "steer" else config() if config else None
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            torch.cuda.synchronize(device)
        t = time.perf_counter()
        try:
            prof = _profiler(device) if args.profile else contextlib.nullcontext()
            with prof:
                result = method.train(model, tok, MethodInputs(rows, langs, central, sub, None,
                                                               [r["responses"] for r in rows]),
                                      TrainConfig(lr=1e-5), options=options)
            if args.profile:
                key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
                for k in dict.fromkeys([key, "self_cpu_time_total"]):
                    print(f"--- {name}: top operators by {k} ---", flush=True)
                    print(prof.key_averages().table(sort_by=k, row_limit=15, max_name_column_width=50), flush=True)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            dt = time.perf_counter() - t
            changed = [k for k, v in model.state_dict().items() if not torch.equal(v, original[k])]
            losses = [h["loss"] for h in result.history]
            rec = {"method": name, "s": round(dt, 2), "steps": result.steps, "timings_s": result.timings_s,
                   "first_loss": losses[0] if losses else None, "last_loss": losses[-1] if losses else None,
                   "changed_tensors": len(changed), "trainable_share": round(result.trainable_share, 4)}
            if name == "steer":
                from lensml.runtime.generation import generate_answers
                rec["answers"] = generate_answers(model, tok, [rows[0]["zh"], rows[0]["en"]], 8, 2)
                method.handle.remove()
            if device.type == "cuda":
                rec["peak_gb"] = round(torch.cuda.max_memory_allocated(device) / 1024 ** 3, 2)
        except Exception as err:  # report and go on to the next method
            ok = False
            rec = {"method": name, "error": f"{type(err).__name__}: {err}"}
        print(json.dumps(rec, default=str), flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
