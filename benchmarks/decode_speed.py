"""The quick evaluation's decode: transformers' generate() against lensml's evaluation decoder
(lensml.runtime.decoding: prefill in chunks of similar length, static cache, log-probabilities).

Answers the 80 embedded held-out prompts (zh + en) greedily with both and prints one JSON line: seconds
for each, their ratio, and how many answers are token for token the same. A real checkpoint with
--model, else random weights of a named shape (what the GPU machine, which has no Hub, can run).

    python benchmarks/decode_speed.py --device cpu --model ~/.cache/lensml/models/smollm2-...
    python benchmarks/decode_speed.py --device cuda --shape 1b --dtype bfloat16
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.append(str(Path(__file__).resolve().parent))
sys.path.append(str(Path(__file__).resolve().parents[1]))

from shapes import SHAPES, random_llama  # noqa: E402

from lensml.data.loaders import load_texts  # noqa: E402
from lensml.runtime import decoding  # noqa: E402
from lensml.runtime.generation import _stop_ids  # noqa: E402
from lensml.runtime.models import ModelConfig, load_tokenizer  # noqa: E402
from lensml.runtime.templating import encode_prompts  # noqa: E402


def _model(args, tok, device, dtype):
    from transformers import AutoModelForCausalLM
    if args.model:
        return AutoModelForCausalLM.from_pretrained(args.model, dtype=dtype).to(device).eval()
    return random_llama(args.shape, tok, device, dtype)


def _timed(fn, device):
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return out, time.perf_counter() - t


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--model", default=None, help="a local checkpoint (else random weights of --shape)")
    ap.add_argument("--tokenizer", default=".bench_tok")
    ap.add_argument("--shape", choices=list(SHAPES), default="smollm2")
    ap.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=80)
    args = ap.parse_args()
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    tok = load_tokenizer(args.model or args.tokenizer, ModelConfig())
    model = _model(args, tok, device, dtype)
    texts = load_texts("embedded:heldout", ["zh", "en"])
    prompts = encode_prompts(tok, texts["zh"] + texts["en"], 512)
    stops, pad_id = _stop_ids(model, tok), tok.pad_token_id
    decoding.greedy(model, prompts[:2], 2, stops, pad_id, 2)  # warm-up (CUDA context, kernels)
    ref, t_generate = _timed(lambda: decoding._with_generate(model, prompts, args.max_new_tokens, stops, pad_id,
                                                             args.batch_size, "generate"), device)
    got, t_lensml = _timed(lambda: decoding.greedy(model, prompts, args.max_new_tokens, stops, pad_id,
                                                   args.batch_size), device)
    same = sum(a.ids == b.ids for a, b in zip(ref, got))
    tokens = sum(len(g.ids) for g in got)
    print(json.dumps({"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
                      "model": args.model or args.shape, "dtype": args.dtype, "prompts": len(prompts),
                      "new_tokens": tokens, "generate_s": round(t_generate, 2), "lensml_s": round(t_lensml, 2),
                      "speedup": round(t_generate / t_lensml, 2), "same_answers": same,
                      "peak_device_gb": round(torch.cuda.max_memory_allocated() / 2**30, 2)
                      if device.type == "cuda" else None}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
