"""Training speed of lensml against a faithful re-implementation of the LENS authors' training loop.

Why: the paper sells LENS on cost (Table 5), and the authors' code pays for it with two model copies
(policy + frozen reference) run in full, LM head and logits included, for every micro-batch of one
prompt, 8 accumulation steps per optimiser step. lensml runs the frozen layers and the reference once
(a cache), then trains only the top block, batched. This script times both in one process, on the same
model, data, machine and number of optimiser steps, so authors_loop_s / lensml_s is like for like.

    python benchmarks/train_speed.py --device cpu --json runs/train_speed_cpu.json
    PYTHONPATH=. python benchmarks/train_speed.py --device cuda --shape llama3-8b \
        --tokenizer .bench_tok --json $OUT/train_speed_8b.json

--shape llama3-8b builds a Llama-3-8B-shaped model with random bf16 weights on the device (no download),
with the SmolLM2 tokenizer and synthetic texts cut to exactly 128 (probe) and 256 (training) tokens.
lensml runs first, so its host-RSS peak is not inflated by the authors' two copies; the authors' loop
then restarts from the original top-layer weights. On a shared, loaded CPU pass --threads 1: OpenMP
threads spinning against other processes slow the authors' batch-1 loop far more than lensml's
batches and inflate the ratio (measured: 7.0x with 2 threads, 2.9x with 1, same machine and hour).
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import platform
import random
import resource
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch
import transformers
from torch.optim.optimizer import register_optimizer_step_post_hook

sys.path.append(str(Path(__file__).resolve().parent))
sys.path.append(str(Path(__file__).resolve().parents[1]))  # an installed lensml first, else this checkout

from lensml.data.loaders import load_rows, load_texts
from lensml.lens.losses import LossConfig, lens_loss
from lensml.runtime.models import ModelConfig, decoder_of, load_model, load_tokenizer, resolve_model_path
from lensml.lens.probing import ProbeConfig, probe
from lensml.runtime.templating import encode_prompts, gather_last, masked_mean, pad
from lensml.methods.lens import train
from lensml.lens.reference_cache import empty_cache
from lensml.training import TrainConfig
from transformers import get_cosine_schedule_with_warmup
from shapes import random_llama

OFFICIAL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "lens-official"  # ../shared beside the repo
LANGS, CENTRAL = ["en", "zh"], "en"
ACCUM = 8  # the authors' batch 1 x 8 accumulation steps


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--model", default="smollm2-135m-instruct", help="model for the real-model mode")
    ap.add_argument("--shape", choices=["llama3-8b"], default=None, help="random-weight model of this shape instead")
    ap.add_argument("--tokenizer", default=None, help="tokenizer folder for --shape (default: packaged SmolLM2's)")
    ap.add_argument("--probe-data", default=str(OFFICIAL / "probe_aya_en_zh_300.jsonl"))
    ap.add_argument("--train-data", default=str(OFFICIAL / "manipulation_alpaca_safe_200.json"))
    ap.add_argument("--probe-samples", type=int, default=300, help="probe texts per language")
    ap.add_argument("--train-samples", type=int, default=200, help="training prompts (pairs)")
    ap.add_argument("--probe-max-length", type=int, default=None, help="default 64 (128 with --shape)")
    ap.add_argument("--train-max-length", type=int, default=None, help="default 128 (256 with --shape)")
    ap.add_argument("--authors-steps", type=int, default=None,
                    help="time only the first N optimiser steps of the authors' loop and extrapolate linearly "
                         "(default: the full epoch on GPU, 3 on CPU)")
    ap.add_argument("--skip-authors", action="store_true", help="time lensml only")
    ap.add_argument("--no-save", action="store_true", help="skip save_pretrained (end_to_end_s then excludes it)")
    ap.add_argument("--json", default=None, help="write the results here (also after every stage)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache-device", default="auto", help="where lensml keeps its reference cache (auto, cpu)")
    ap.add_argument("--gradient-checkpointing", action="store_true", help="recompute activations in the trained block")
    ap.add_argument("--one-pass", action="store_true",
                    help="probe the training prompts themselves, filling the reference cache in the same forward "
                         "(what `lens run` does when probe and training data coincide, as with the embedded data)")
    ap.add_argument("--profile", type=int, default=0, metavar="N",
                    help="after the timed run, profile training on N prompts and print the top operators")
    ap.add_argument("--progress", action="store_true", help="show the library's progress bars")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--shape-scale", type=int, default=1, help=argparse.SUPPRESS)  # divide the shape: CPU dry runs
    args = ap.parse_args(argv)
    args.probe_max_length = args.probe_max_length or (128 if args.shape else 64)
    args.train_max_length = args.train_max_length or (256 if args.shape else 128)
    if args.authors_steps is None and not args.device.startswith("cuda"):
        args.authors_steps = 3
    return args


def now(device: torch.device) -> float:
    """Wall time after the device has finished its queued work."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()


def peak_mem_gb(device: torch.device) -> dict:
    mem = {"host_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2, 3)}
    if device.type == "cuda":
        mem.update(device_gb=round(torch.cuda.max_memory_allocated(device) / 1024 ** 3, 3),
                   device_reserved_gb=round(torch.cuda.max_memory_reserved(device) / 1024 ** 3, 3))
    return mem


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    with open("/proc/cpuinfo", encoding="utf-8") as f:  # Linux
        cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), platform.machine())
    return f"{cpu} ({os.cpu_count()} cores, torch threads {torch.get_num_threads()})"


def length_stats(seqs: list[list[int]]) -> dict:
    lens = [len(s) for s in seqs]
    return {"min": min(lens), "mean": round(sum(lens) / len(lens), 1), "max": max(lens), "total": sum(lens)}


class Report(dict):
    """The results; written to --json after every stage so a killed run still leaves them."""

    def write(self) -> None:
        if self.get("json"):
            Path(self["json"]).parent.mkdir(parents=True, exist_ok=True)
            Path(self["json"]).write_text(json.dumps(self, indent=1, default=str) + "\n", encoding="utf-8")


def load_real(args, device):
    t = now(device)
    model, tok, name = load_model(ModelConfig(model=args.model, device=str(device)))
    load_s = now(device) - t
    texts = {lang: v[:args.probe_samples] for lang, v in load_texts(args.probe_data, LANGS).items()}
    return model, tok, name, texts, load_rows(args.train_data, LANGS)[:args.train_samples], load_s


def synthetic_text(rng: random.Random, tok, lang: str, n_tokens: int) -> str:
    """A random text of at least n_tokens tokens: templated and cut from the left it is exactly n_tokens."""
    words = ("the model reads every language and answers in the language it was asked in while the data "
             "stays fixed and only the top layers move").split()
    parts: list[str] = []
    while True:
        for _ in range(max(8, n_tokens // 4)):
            parts.append(rng.choice(words) if lang == "en" else "".join(chr(rng.randint(0x4E00, 0x9FA5))
                                                                         for _ in range(rng.randint(1, 3))))
        text = (" " if lang == "en" else "，").join(parts)
        if len(tok(text, add_special_tokens=False)["input_ids"]) >= n_tokens:
            return text


def build_shape(args, device):
    """Llama-3-8B-shaped LlamaForCausalLM with random bf16 weights built on the device, SmolLM2 tokenizer."""
    t = now(device)
    tok_dir = args.tokenizer or resolve_model_path(ModelConfig(model=args.model))[0]
    tok = load_tokenizer(tok_dir, ModelConfig(model=args.model))
    k = args.shape_scale
    model = random_llama(args.shape, tok, device, torch.bfloat16, scale=k, seed=args.seed)
    load_s = now(device) - t
    rng = random.Random(args.seed)
    texts = {lang: [synthetic_text(rng, tok, lang, args.probe_max_length) for _ in range(args.probe_samples)]
             for lang in LANGS}
    pairs = [{lang: synthetic_text(rng, tok, lang, args.train_max_length) for lang in LANGS}
             for _ in range(args.train_samples)]
    name = f"random {args.shape}" + (f" / {k}" if k > 1 else "")
    return model, tok, name, texts, pairs, load_s


def top_params(model, n_top: int = 2) -> list[torch.nn.Parameter]:
    return [p for layer in list(decoder_of(model).layers)[-n_top:] for p in layer.parameters()]


def only_trainable(model, params) -> None:
    for p in model.parameters():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)


def warm_up(model, tok, device) -> None:
    """A few forward passes (decoder and full model) and one backward through the top layers, untimed."""
    ids = torch.randint(3, min(len(tok), 30000), (2, 32), device=device)
    mask = torch.ones_like(ids)
    with torch.no_grad():
        for _ in range(2):
            decoder_of(model)(input_ids=ids, attention_mask=mask, use_cache=False)
            model(input_ids=ids, attention_mask=mask, use_cache=False)
    only_trainable(model, top_params(model))
    out = model(input_ids=ids, attention_mask=mask, use_cache=False, output_hidden_states=True)
    out.hidden_states[-1].float().mean().backward()
    model.zero_grad(set_to_none=True)
    only_trainable(model, [])
    now(device)


def lensml_path(model, tok, name, texts, pairs, args, device, rep: Report, keep: dict) -> None:
    cfg = TrainConfig(start_layer=-2, max_length=args.train_max_length, seed=args.seed, cache_device=args.cache_device,
                      gradient_checkpointing=args.gradient_checkpointing)
    cache = None
    t = now(device)
    if args.one_pass:  # probe texts = training prompts, same budget: the cache fills during probing
        texts = {lang: [r[lang] for r in pairs] for lang in LANGS}
        pcfg = ProbeConfig(samples=len(pairs), max_length=args.train_max_length)
        cache = empty_cache(model, tok, pairs, LANGS, CENTRAL, cfg)
    else:
        pcfg = ProbeConfig(samples=args.probe_samples, max_length=args.probe_max_length)
    keep["sub"] = sub = probe(model, tok, texts, CENTRAL, pcfg, name, args.probe_data, cache=cache)
    rep["probe_s"] = now(device) - t
    rep["one_pass"] = args.one_pass
    print(f"probe{' + reference cache (one pass)' if args.one_pass else ''}: {rep['probe_s']:.2f} s", flush=True)
    rep.write()
    stamps: list[float] = []
    hook = register_optimizer_step_post_hook(lambda *_: stamps.append(now(device)))
    try:
        t = now(device)
        res = train(model, tok, sub, pairs, LANGS, CENTRAL, cfg, cache=cache)
        rep["lensml_s"] = now(device) - t
    finally:
        hook.remove()
    first = t + res.timings_s.get("reference_cache", 0.0)
    step_s = [b - a for a, b in zip([first] + stamps[:-1], stamps)]
    rep["lensml"] = {"steps": res.steps, "batch": f"{cfg.batch_size} prompts x {len(LANGS)} languages, "
                     f"grad_accum {cfg.grad_accum}", "lr": res.lr, "timings_s": res.timings_s,
                     "mean_step_s": res.timings_s.get("steps", 0.0) / max(res.steps, 1), "step_s": step_s,
                     "final_loss": res.history[-1] if res.history else None}
    rep.update(steps=res.steps, trainable_parameters=res.trainable_parameters, total_parameters=res.total_parameters,
               trainable_share=res.trainable_parameters / max(res.total_parameters, 1))
    print(f"lensml train: {rep['lensml_s']:.2f} s ({res.steps} steps, reference cache "
          f"{res.timings_s.get('reference_cache', 0.0):.2f} s)", flush=True)
    rep.write()


def profile_training(model, tok, sub, pairs, args, device, rep: Report) -> None:
    """Profile a short LENS training (its own small cache + a few steps); print the top operators.

    Runs after the timed run, from the trained weights: only the shares matter here, not the loss.
    """
    from torch.profiler import ProfilerActivity, profile

    cfg = TrainConfig(start_layer=-2, max_length=args.train_max_length, seed=args.seed, cache_device=args.cache_device,
                      samples=args.profile)
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=acts) as prof:
        res = train(model, tok, sub, pairs, LANGS, CENTRAL, cfg)
    now(device)
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    tables = {k: prof.key_averages().table(sort_by=k, row_limit=25, max_name_column_width=60)
              for k in dict.fromkeys([key, "self_cpu_time_total"])}
    rep["profile"] = {"prompts": args.profile, "steps": res.steps, "timings_s": res.timings_s, "tables": tables}
    for k, table_ in tables.items():
        print(f"--- profile ({args.profile} prompts, {res.steps} steps; sorted by {k}) ---\n{table_}", flush=True)
    rep.write()


def authors_loop(model, tok, sub, pairs, args, device, rep: Report) -> dict:
    """The authors' design: policy + deep-copied frozen reference, both run in full for every
    prompt (batch 1, 8 accumulation steps), loss on the final post-norm state at the last position."""
    t0 = now(device)
    ref = copy.deepcopy(model).eval().requires_grad_(False)
    policy, params = model, top_params(model)
    only_trainable(policy, params)
    ids = {lang: encode_prompts(tok, [row[lang] for row in pairs], args.train_max_length) for lang in LANGS}
    n, total_steps = len(pairs), math.ceil(len(pairs) / ACCUM)
    run_steps = total_steps if args.authors_steps is None else min(args.authors_steps, total_steps)
    opt = torch.optim.AdamW(params, lr=1e-5, weight_decay=0.1)
    sched = get_cosine_schedule_with_warmup(opt, math.ceil(0.05 * total_steps), total_steps)
    loss_cfg = LossConfig(retain="mean", lambda3=1.0)  # the authors' conventions
    a, m_s = (x.to(device=device, dtype=torch.float32) for x in sub.projectors(-1, loss_cfg.normalize_agnostic))
    deltas = {lang: sub.direction(lang, -1).to(device=device, dtype=torch.float32) for lang in LANGS}
    order = torch.randperm(n, generator=torch.Generator().manual_seed(args.seed)).tolist()
    policy.train()

    def run(net, lang, i):
        b = pad([ids[lang][i]], tok.pad_token_id, side="left").to(device)
        out = net(input_ids=b.input_ids, attention_mask=b.attention_mask, position_ids=b.position_ids,
                  output_hidden_states=True, use_cache=False)  # CausalLM: LM head and logits run, as theirs
        h = out.hidden_states[-1].float()  # the final, post-norm state
        return out, {"last": gather_last(h, b.attention_mask), "mean": masked_mean(h, b.attention_mask)}

    setup_s = now(device) - t0
    step_s, losses = rep.setdefault("authors_step_s_so_far", []), []
    try:
        for s in range(run_steps):
            t = now(device)
            for i in order[s * ACCUM:(s + 1) * ACCUM]:
                states, refs, keep = {}, {}, []
                for lang in LANGS:
                    out, states[lang] = run(policy, lang, i)
                    keep.append(out)  # their outputs (logits, all hidden states) live until backward
                    with torch.no_grad():
                        out, refs[lang] = run(ref, lang, i)
                        keep.append(out)
                terms = lens_loss(states, refs, CENTRAL, a, m_s, deltas, loss_cfg)
                (terms["loss"] / ACCUM).backward()
                del keep
            torch.nn.utils.clip_grad_norm_(params, 1.0)  # HF Trainer / DeepSpeed default max_grad_norm
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            losses.append(float(terms["loss"].detach()))
            step_s.append(now(device) - t)
            print(f"  authors step {s + 1}/{run_steps}: {step_s[-1]:.2f} s", flush=True)
            rep.write()
    finally:
        policy.eval()
        only_trainable(policy, [])
        del ref, opt
    timed = sum(step_s)
    return {"steps_total": total_steps, "steps_timed": run_steps, "extrapolated": run_steps < total_steps,
            "setup_s": setup_s, "timed_steps_s": timed, "mean_step_s": timed / run_steps, "step_s": list(step_s),
            "median_step_s": sorted(step_s)[len(step_s) // 2],
            "loop_s": setup_s + timed / run_steps * total_steps, "last_loss": losses[-1],
            "batch": f"1 prompt x {len(LANGS)} languages, {ACCUM} accumulation steps, policy + reference in full",
            "lr": 1e-5}


def table(rep: dict) -> str:
    au, le = rep.get("authors", {}), rep.get("lensml", {})
    f = (lambda v: "-" if v is None else (f"{v:.2f}" if isinstance(v, float) else str(v)))
    extra = f" (extrapolated from {au['steps_timed']}/{au['steps_total']} steps)" if au.get("extrapolated") else ""
    rows = [("", "authors loop", "lensml"),
            ("training stage (s)", f(rep.get("authors_loop_s")) + extra, f(rep.get("lensml_s"))),
            ("optimiser steps (timed)", f"{f(au.get('steps_total'))} ({f(au.get('steps_timed'))})", f(le.get("steps"))),
            ("mean step (s)", f(au.get("mean_step_s")), f(le.get("mean_step_s"))),
            ("setup / reference cache (s)", f(au.get("setup_s")), f(le.get("timings_s", {}).get("reference_cache"))),
            ("peak memory (GB)", f(rep.get("authors_peak_mem_gb")), f(rep.get("peak_mem_gb")))]
    lines = [f"{a:<30}{b:<46}{c}" for a, b, c in rows]
    lines += [f"ratio authors/lensml: {f(rep.get('ratio'))}x   probe_s: {f(rep.get('probe_s'))}   probe+train: "
              f"{f(rep.get('probe_plus_train_s'))}   end_to_end_s ({rep.get('end_to_end_note', '-')}): "
              f"{f(rep.get('end_to_end_s'))}", f"device: {rep.get('device_name')}   model: {rep.get('model')}   "
              f"load average {rep.get('loadavg_start')} -> {rep.get('loadavg_end')}"]
    return "\n".join(lines + ([f"errors: {list(rep['errors'])}"] if rep["errors"] else []))


def main(argv=None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    if not args.progress:
        os.environ["TQDM_DISABLE"] = "1"  # lensml.progress honours it
    if args.threads:
        torch.set_num_threads(args.threads)
    rep = Report(errors={}, json=args.json)
    rep.update(mode=args.shape or "model", device=str(device), device_name=device_name(device), argv=sys.argv[1:],
               versions={"torch": torch.__version__, "transformers": transformers.__version__,
                         "python": platform.python_version()}, loadavg_start=os.getloadavg(), languages=LANGS)
    model, tok, name, texts, pairs, load_s = (build_shape if args.shape else load_real)(args, device)
    dtype = next(model.parameters()).dtype
    probe_ids = {lang: encode_prompts(tok, v, args.probe_max_length) for lang, v in texts.items()}
    train_ids = {lang: encode_prompts(tok, [r[lang] for r in pairs], args.train_max_length) for lang in LANGS}
    rep.update(model=name, dtype=str(dtype).replace("torch.", ""), load_s=load_s,
               probe_samples={lang: len(v) for lang, v in texts.items()}, train_samples=len(pairs),
               probe_max_length=args.probe_max_length, train_max_length=args.train_max_length,
               probe_tokens={lang: length_stats(v) for lang, v in probe_ids.items()},
               train_tokens={lang: length_stats(v) for lang, v in train_ids.items()},
               num_layers=len(decoder_of(model).layers), trained_layers=2)
    if args.shape:
        for what, ids, want in (("probe", probe_ids, args.probe_max_length),
                                ("train", train_ids, args.train_max_length)):
            bad = {lang: length_stats(v) for lang, v in ids.items() if {len(s) for s in v} != {want}}
            if bad:
                rep["errors"][f"{what}_lengths"] = f"not all exactly {want} tokens: {bad}"
    print(f"{name} ({dtype}) on {rep['device_name']}: load {load_s:.2f} s; probe {rep['probe_samples']} x "
          f"{args.probe_max_length} tok, train {len(pairs)} pairs x {args.train_max_length} tok", flush=True)
    warm_up(model, tok, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        rep["model_memory_gb"] = round(torch.cuda.memory_allocated(device) / 1024 ** 3, 3)
    rep.write()

    original, keep = [p.detach().to("cpu", copy=True) for p in top_params(model)], {}
    try:
        lensml_path(model, tok, name, texts, pairs, args, device, rep, keep)
        rep["probe_plus_train_s"] = rep["probe_s"] + rep["lensml_s"]
        rep["save_s"] = None
        if not args.no_save:
            with tempfile.TemporaryDirectory(prefix="train_speed-") as tmp:
                t = now(device)
                model.save_pretrained(tmp, safe_serialization=True)
                tok.save_pretrained(tmp)
                rep["save_s"] = now(device) - t
        rep["end_to_end_s"] = load_s + rep["probe_s"] + rep["lensml_s"] + (rep["save_s"] or 0.0)
        rep["end_to_end_note"] = "model load + probe + train" + ("" if args.no_save else " + save_pretrained")
    except Exception as err:  # record and go on: the JSON must be written
        rep["errors"]["lensml"] = f"{type(err).__name__}: {err}\n{traceback.format_exc(limit=6)}"
        print(rep["errors"]["lensml"], flush=True)
    rep["peak_mem_gb"] = peak_mem_gb(device)
    rep.write()
    if args.profile and "sub" in keep:
        try:
            profile_training(model, tok, keep["sub"], pairs, args, device, rep)
        except Exception as err:  # the timed numbers are already written
            rep["errors"]["profile"] = f"{type(err).__name__}: {err}"
            print(rep["errors"]["profile"], flush=True)

    if not args.skip_authors and "sub" in keep:
        with torch.no_grad():
            for p, o in zip(top_params(model), original):
                p.copy_(o.to(p.device))
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        try:
            rep["authors"] = authors_loop(model, tok, keep["sub"], pairs, args, device, rep)
            rep.update(authors_loop_s=rep["authors"]["loop_s"], authors_extrapolated=rep["authors"]["extrapolated"])
            if rep.get("lensml_s"):
                rep["ratio"] = rep["authors_loop_s"] / rep["lensml_s"]
        except Exception as err:  # an OOM here must not lose the lensml numbers
            rep["errors"]["authors"] = f"{type(err).__name__}: {err}\n{traceback.format_exc(limit=6)}"
            print(rep["errors"]["authors"], flush=True)
        rep["authors_peak_mem_gb"] = peak_mem_gb(device)
        rep["authors_peak_mem_note"] = "host_gb: process peak (lensml ran first); device_gb: the authors' loop alone"
    rep["loadavg_end"] = os.getloadavg()
    rep.write()
    print(table(rep), flush=True)
    return 1 if "lensml" in rep["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
