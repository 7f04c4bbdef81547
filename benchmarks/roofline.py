"""How far each stage of `lens run` is from this machine's matrix-multiply peak (a roofline per stage).

One process: load the model, measure the peak of torch's matrix multiply at the shapes the model
uses (nn.functional.linear, as nn.Linear runs it: x (M, K) times a stored (N, K) weight, for every
K, N of a decoder layer and the LM head, at the row counts M the stages use, all threads), then run
the stages of the default `lens run` through the library's own functions (load_inputs, probe with
the reference cache filled in the same pass, quick.answer_before, train_and_save, quick.answer_after,
quick.compare) with a counting meter on the model (benchmarks/roofline_meter.py), and print per stage:
tokens, padding share, forward calls, FLOPs, seconds, GFLOP/s, share of the measured peak and of the
peak at the stage's own row count. Then the peak again (the machine may be shared: compare the two).

How FLOPs are counted (roofline_meter.py): every nn.Linear call adds 2 * rows * in * out (rows =
positions it was given, padding included; x3 for a trained weight under autograd: forward, input and
weight gradients), every attention call 4 * b * q_len * kv_len * heads * head_dim (x3 under autograd).
For a forward of the whole decoder that is 2 * (params in its matmuls) * tokens + 4 * layers * q * kv * d,
the issue's formula. The count is cross-checked against torch.utils.flop_counter.FlopCounterMode on a
probe batch, a training micro-step (forward and backward) and a short decode (its matmuls; on CPU it
does not see the flash-attention kernel, so attention is checked by hand), and the probe stage by hand.

Stages: probe (+ reference cache), train (LENS steps; the final no-grad check step included),
eval_base/{prefill,decode} (the base model's answers; its English NLL comes with the decode's
log-probabilities), eval_enhanced/{prefill,decode,nll} (nll: the enhanced model's NLL of the base
model's English answers, top block and LM head from the states captured in the base decode), save
(model, patch, GGUF; no matmuls), langid (lingua load and scoring; no matmuls).

    python benchmarks/roofline.py --json runs/roofline_cpu.json                 # the default run
    python benchmarks/roofline.py --langs zh zh,sw zh,ja,ko,ar,bn,sw --samples 40 --eval-samples 12
    python benchmarks/roofline.py --device cuda --dtype bfloat16 --json runs/roofline_gpu.json
    python benchmarks/roofline.py --device cuda --shape llama3-8b --tokenizer .bench_tok --langs zh,ja,ko,ar,bn,sw \
        --no-langid --json $OUT/roofline_8b.json   # the lent GPU: benchmarks/device_run.sh

--shape builds a random-weight model of a real shape on the device (benchmarks/shapes.py) instead of loading
one: timing needs shapes, not trained weights, and the GPU machine has no Hub. --no-langid leaves out the
language identification (a CPU stage; lingua cannot be installed there). On CUDA each stage's peak device
memory is read too, and the table ends with the stages' sum: the whole run after the model load.

With several --langs sets each runs after the other in this process, from a fresh model, so their
cost per 1k tokens compares like for like. Decode "tokens" are the answers' tokens (stop token
included); its padding share is the row-steps spent on rows that had already stopped.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.append(str(Path(__file__).resolve().parent))
sys.path.append(str(Path(__file__).resolve().parents[1]))  # an installed lensml first, else this checkout

from roofline_meter import Meter  # noqa: E402
from roofline_report import best_of, peak_table, stage_rows, table, totals  # noqa: E402
from shapes import SHAPES, random_llama  # noqa: E402

from lensml import methods  # noqa: E402
from lensml.evaluation import quick  # noqa: E402
from lensml.lens.probing import probe, shares_prompts  # noqa: E402
from lensml.lens.reference_cache import empty_cache  # noqa: E402
from lensml.recipes.config import RunConfig  # noqa: E402
from lensml.recipes.stages import Stages, load_inputs, method_inputs, response_languages, train_and_save  # noqa: E402
from lensml.results.rundir import RunDir  # noqa: E402
from lensml.runtime.models import ModelConfig, decoder_of, load_model, load_tokenizer, resolve_model_path  # noqa: E402
from lensml.runtime.models import resolve_dtype, steady_attention  # noqa: E402
from lensml.runtime.topblock import TopBlock  # noqa: E402

ROWS = (40, 80, 320, 1280, 2560)  # matmul rows measured: decode batches, training steps, prefill and probe batches


def machine(device: torch.device) -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    out = {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
           "loadavg_start": _load()}
    if device.type == "cuda":
        out["gpu"] = torch.cuda.get_device_name(device)
    return out


def _load() -> str:
    """The 1, 5 and 15 minute load averages: numbers taken on a shared machine say so."""
    return " ".join(Path("/proc/loadavg").read_text().split()[:3]) if Path("/proc/loadavg").exists() else ""


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_rate(m: int, k: int, n: int, device, dtype, seconds: float = 0.25, trials: int = 3) -> float:
    """Best GFLOP/s over trials of F.linear(x (m, k), w (n, k)), each timed for about `seconds`."""
    x = torch.randn(m, k, device=device, dtype=dtype)
    w = torch.randn(n, k, device=device, dtype=dtype)
    with torch.no_grad():
        torch.nn.functional.linear(x, w)
        _sync(device)
        best = 0.0
        for _ in range(trials):
            reps, t0 = 0, time.perf_counter()
            while True:
                torch.nn.functional.linear(x, w)
                reps += 1
                if reps % 4 == 0 or reps == 1:
                    _sync(device)
                    if time.perf_counter() - t0 >= seconds:
                        break
            _sync(device)
            best = max(best, 2.0 * m * k * n * reps / (time.perf_counter() - t0) / 1e9)
    return best


def layer_shapes(model) -> dict[str, tuple[int, int]]:
    """(in, out) of each distinct matmul of a decoder layer and of the LM head."""
    layer = decoder_of(model).layers[0]
    shapes = {name: (m.in_features, m.out_features) for name, m in layer.named_modules()
              if isinstance(m, torch.nn.Linear)}
    head = model.get_output_embeddings()
    shapes["lm_head"] = (head.in_features, head.out_features)
    return shapes


def measure_peak(dims: dict[str, tuple[int, int]], device, dtype, seconds: float = 0.25) -> dict:
    """Per row count: each shape's rate, the decoder layer's mix (its FLOPs over its time) and the LM head's."""
    out = {"dims": dims, "dtype": str(dtype).replace("torch.", ""), "rows": {}, "loadavg": _load()}
    for m in ROWS:
        rates = {name: matmul_rate(m, k, n, device, dtype, seconds) for name, (k, n) in dims.items()}
        layer = [name for name in dims if name != "lm_head"]
        flops = {name: 2.0 * m * k * n for name, (k, n) in dims.items()}
        mix = sum(flops[n] for n in layer) / sum(flops[n] / rates[n] for n in layer)
        out["rows"][m] = {"shapes": rates, "layer_mix": mix}
    out["peak"] = max(r for v in out["rows"].values() for r in v["shapes"].values())
    return out


class _MeteredStages(Stages):
    """The recipe's stage timer, also telling the meter which stage runs (train_and_save times "train" and
    "save" inside one call)."""

    def __init__(self, meter: Meter):
        super().__init__()
        self.meter = meter

    @contextlib.contextmanager
    def __call__(self, name: str):
        with super().__call__(name):
            self.meter._switch(name)
            yield


class _Recorded:
    """quick.answer_prompts, recording what each call generated (the decode's useful tokens)."""

    def __init__(self, fn):
        self.fn, self.gens = fn, []

    def __call__(self, *args, **kwargs):
        texts, gens = self.fn(*args, **kwargs)
        self.gens.append([g for lang in gens.values() for g in lang])
        return texts, gens


def run_config(args, langs: list[str], device: torch.device, loaded=None) -> tuple[dict, object, dict]:
    """Every stage of `lens run --langs langs` (method lens) with the meter on; (phases, model, context).
    loaded(model) runs once the model is loaded, before the first stage (the peak measurement)."""
    cfg = _config(langs, args)
    method = methods.get("lens")
    inputs = load_inputs(cfg, probe=True, train=True, held_out=True, responses=response_languages(method, cfg))
    t0 = time.perf_counter()
    model, tok, name = _model(args, cfg, device)
    _sync(device)
    load_s = time.perf_counter() - t0
    if loaded is not None:
        loaded(model)
    meter = Meter(model)
    recorded = _Recorded(quick.answer_prompts)
    quick.answer_prompts = recorded
    try:
        with meter.stage("probe"):
            cache = None
            if shares_prompts(inputs.probe_texts, cfg.probe, inputs.train_rows, cfg.train, cfg.languages):
                cache = empty_cache(model, tok, inputs.train_rows, cfg.languages, cfg.central, cfg.train)
            subspace = probe(model, tok, inputs.probe_texts, cfg.central, cfg.probe, name, cfg.probe_data, cache=cache)
        with meter.stage("eval_base", split=True):
            start = TopBlock(model, cfg.train.start_layer).start
            before = quick.answer_before(model, tok, inputs.held_out, cfg.central, cfg.eval, start)
        with tempfile.TemporaryDirectory(prefix="roofline-") as tmp, meter.stage("train"):
            train_and_save(_MeteredStages(meter), method, model, tok,
                           method_inputs(method, cfg, inputs, subspace, cache), cfg, name, RunDir(Path(tmp)))
        with meter.stage("eval_enhanced", split=True):
            after = quick.answer_after(model, tok, before, cfg.eval, nll=method.answer_nll)
        if not args.no_langid:
            with meter.stage("langid"):
                quick.compare(before, after, cfg.eval)
    finally:
        quick.answer_prompts = recorded.fn
        meter.close()
    for side, gens in zip(("eval_base", "eval_enhanced"), recorded.gens):
        phase = meter.phases.get(f"{side}/decode")
        if phase is not None:
            phase.tokens_out = sum(len(g.ids) + int(g.stopped) for g in gens)
    context = {"langs": [cfg.central, *langs], "load_model_s": load_s, "cache": cache, "subspace": subspace,
               "tokenizer": tok, "cfg": cfg, "prompts": inputs.held_out}
    return meter.phases, model, context


def _model(args, cfg: RunConfig, device: torch.device):
    """(model, tokenizer, name): lens run's own loading, or a random-weight model of --shape built on the device."""
    if not args.shape:
        return load_model(cfg.model)
    tok = load_tokenizer(args.tokenizer or resolve_model_path(ModelConfig())[0], ModelConfig())
    model = random_llama(args.shape, tok, device, resolve_dtype(args.dtype, device), scale=args.shape_scale)
    steady_attention(model)  # what load_model does on CUDA
    return model, tok, f"random {args.shape}" + (f" / {args.shape_scale}" if args.shape_scale > 1 else "")


def _config(langs: list[str], args) -> RunConfig:
    from lensml.evaluation.quick import QuickEvalConfig
    from lensml.lens.probing import ProbeConfig
    from lensml.training import TrainConfig
    name = {"model": args.model} if args.model else {"model": f"random-{args.shape}"} if args.shape else {}
    model = ModelConfig(device=args.device, dtype=args.dtype, **name)  # a --shape model has no files, no GGUF
    return RunConfig(langs=list(langs), model=model,
                     probe=ProbeConfig(samples=args.samples), train=TrainConfig(samples=args.samples),
                     eval=QuickEvalConfig(samples=args.eval_samples, reuse_base=False,
                                          reuse_prefill=not args.no_reuse_prefill))


def cross_check(model, ctx: dict, device) -> dict:
    """The meter's linear FLOPs against FlopCounterMode's matmul FLOPs on three kinds of call."""
    from torch.utils.flop_counter import FlopCounterMode

    from lensml.lens.losses import LensObjective
    from lensml.methods.lens import micro_step, size_defaults
    from lensml.runtime.decoding import greedy
    from lensml.runtime.generation import _stop_ids
    from lensml.runtime.templating import encode_prompts, pad

    tok, cfg, cache = ctx["tokenizer"], ctx["cfg"], ctx["cache"]
    langs = ctx["langs"]
    ids = encode_prompts(tok, ctx["prompts"][langs[-1]][:8], 128)

    def probe_batch():
        b = pad(ids, tok.pad_token_id).to(device)
        with torch.no_grad():
            decoder_of(model)(input_ids=b.input_ids, attention_mask=b.attention_mask, position_ids=b.position_ids,
                              use_cache=False)

    block = TopBlock(model, cache.start, as_tuple=cache.as_tuple)
    loss = size_defaults(cfg.train, sum(p.numel() for p in model.parameters())).loss
    objective = LensObjective.from_subspace(ctx["subspace"], langs, cfg.central, loss, device)

    def train_step():
        params = block.parameters()
        for p in params:
            p.requires_grad_(True)
        try:
            micro_step(block, cache, objective, list(range(min(8, len(cache)))), langs, device, 1.0)
        finally:
            for p in params:
                p.grad = None
                p.requires_grad_(False)

    def decode():
        greedy(model, ids[:4], 8, _stop_ids(model, tok), tok.pad_token_id, 4)

    meter = Meter(model)
    out = {}
    try:
        for name, fn in (("probe batch", probe_batch), ("training micro-step", train_step), ("decode 4x8", decode)):
            counter = FlopCounterMode(display=False)
            with meter.stage(name), counter:
                fn()
            counts = {str(k): v for k, v in counter.get_flop_counts()["Global"].items()}
            matmul = sum(v for k, v in counts.items() if k.split(".")[-1] in ("mm", "addmm", "bmm", "baddbmm"))
            attention = sum(v for k, v in counts.items() if "attention" in k)
            mine = meter.phases[name]
            out[name] = {"meter_linear": mine.linear_flops, "meter_attention": mine.attention_flops,
                         "flopcounter_matmul": matmul, "flopcounter_attention": attention,
                         "linear_ratio": mine.linear_flops / matmul if matmul else None}
    finally:
        meter.close()
    return out


def hand_check(model, phases: dict) -> dict:
    """The probe stage by hand: every forward runs every layer, so 2 * layer matmul params * tokens run."""
    per_token = sum(m.weight.numel() for layer in decoder_of(model).layers for m in layer.modules()
                    if isinstance(m, torch.nn.Linear))
    p = phases["probe"]
    return {"decoder_matmul_params": per_token, "probe_tokens_run": p.tokens_run,
            "hand_linear": 2.0 * per_token * p.tokens_run, "meter_linear": p.linear_flops,
            "ratio": p.linear_flops / (2.0 * per_token * p.tokens_run)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--model", default=None, help="any checkpoint lens run takes (default: lens run's own)")
    ap.add_argument("--shape", choices=list(SHAPES), default=None,
                    help="a random-weight model of this shape built on the device instead (benchmarks/shapes.py)")
    ap.add_argument("--shape-scale", type=int, default=1, help=argparse.SUPPRESS)  # divide the shape: CPU dry runs
    ap.add_argument("--tokenizer", default=None, help="tokenizer folder for --shape (default: packaged SmolLM2's)")
    ap.add_argument("--no-langid", action="store_true", help="leave out language identification (needs lingua)")
    ap.add_argument("--no-reuse-prefill", action="store_true",
                    help="the enhanced answers prefill every layer (lens run --eval.no-reuse-prefill)")
    ap.add_argument("--dtype", default="auto", help="auto: float32 on CPU, bfloat16 on a GPU (the peak uses the same)")
    ap.add_argument("--langs", nargs="+", default=["zh"], help="one or more comma-separated target-language sets")
    ap.add_argument("--samples", type=int, default=None, help="probe and training prompts per language (default: all)")
    ap.add_argument("--eval-samples", type=int, default=None, help="held-out prompts per language (default: all)")
    ap.add_argument("--peak-seconds", type=float, default=0.25, help="time per trial of each matmul shape (3 trials)")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads (default: torch's, all cores); 1 on a shared machine makes CPU seconds the work")
    ap.add_argument("--no-cross-check", action="store_true", help="skip the FlopCounterMode cross-check")
    ap.add_argument("--json", default=None, help="write every number here")
    args = ap.parse_args()
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    info = machine(device)
    print(f"machine: {info.get('gpu') or info['cpu']}, {info['cores']} cores, torch {info['torch']} "
          f"({info['torch_threads']} threads); load {info['loadavg_start']}")
    peaks: list[dict] = []

    def first_peak(model) -> None:
        if not peaks:
            peaks.append(measure_peak(layer_shapes(model), device, next(model.parameters()).dtype, args.peak_seconds))

    runs, checks = [], None
    for i, langs in enumerate(args.langs):
        phases, model, ctx = run_config(args, langs.split(","), device, first_peak)
        if i == 0 and not args.no_cross_check:
            checks = {"flopcounter": cross_check(model, ctx, device), "by_hand": hand_check(model, phases)}
        runs.append({"langs": ctx["langs"], "load_model_s": ctx["load_model_s"], "loadavg": _load(), "phases": phases})
        del model
    peaks.append(measure_peak(peaks[0]["dims"], device, getattr(torch, peaks[0]["dtype"]), args.peak_seconds))
    peak = best_of(*peaks)
    print(f"\nmatmul GFLOP/s by rows, {peak['dtype']}, the better of a measurement before the stages (load "
          f"{peaks[0]['loadavg']}, peak {peaks[0]['peak']:.1f}) and one after them (load {peaks[1]['loadavg']}, "
          f"peak {peaks[1]['peak']:.1f}):")
    print(peak_table(peak))
    for run, langs in zip(runs, args.langs):
        run["stages"] = stage_rows(run.pop("phases"), peak)
        run["total"] = totals(run["stages"])
        print(f"\nlens run --langs {langs} (samples {args.samples or 'all'}, eval {args.eval_samples or 'all'}; "
              f"load after it {run['loadavg']}; peak {peak['peak']:.1f} GFLOP/s):")
        print(table(run["stages"]))
    if checks:
        print("\ncross-check, meter linear FLOPs / FlopCounterMode matmul FLOPs:",
              {k: round(v["linear_ratio"], 6) for k, v in checks["flopcounter"].items()},
              "; probe stage, meter / by hand:", round(checks["by_hand"]["ratio"], 6))
    info["loadavg_end"] = _load()
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"machine": info, "args": vars(args), "peak": peak, "peaks": peaks,
                                               "cross_check": checks, "runs": runs}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
