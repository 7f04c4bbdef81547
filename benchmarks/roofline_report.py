"""The tables benchmarks/roofline.py prints: per stage of a run, its counts against the measured peak."""

from __future__ import annotations

import math


def rate_at(peak: dict, rows: float) -> float:
    """The layer-mix rate at a mean row count, interpolated on log(rows) between measured counts."""
    ms = sorted(peak["rows"], key=int)
    x = min(max(rows, int(ms[0])), int(ms[-1]))
    for a, b in zip(ms, ms[1:]):
        if int(a) <= x <= int(b):
            fa, fb = peak["rows"][a]["layer_mix"], peak["rows"][b]["layer_mix"]
            t = (math.log(x) - math.log(int(a))) / (math.log(int(b)) - math.log(int(a)))
            return fa + t * (fb - fa)
    return peak["rows"][ms[0]]["layer_mix"]


ORDER = ("probe", "train", "eval_base/prefill", "eval_base/decode", "eval_enhanced/prefill", "eval_enhanced/decode",
         "eval_enhanced/nll", "save", "langid")


def stage_rows(phases: dict, peak: dict) -> list[dict]:
    """One row per stage: tokens, padding, calls, FLOPs, seconds, GFLOP/s, shares of the peak, s per 1k tokens."""
    rows = []
    for name in ORDER + tuple(k for k in phases if k not in ORDER):
        p = phases.get(name)
        if p is None:
            continue
        out = p.tokens_out
        tokens = out if out is not None else p.tokens_real
        pad_share = (1 - out / p.tokens_run) if out is not None and p.tokens_run else \
            (1 - p.tokens_real / p.tokens_run) if p.tokens_run else None
        gflops = p.flops / p.seconds / 1e9 if p.seconds > 0 and p.flops else None
        mean_rows = p.linear_rows / p.linear_calls if p.linear_calls else None
        own = rate_at(peak, mean_rows) if mean_rows else None
        rows.append({"stage": name, "tokens": tokens, "padding_share": pad_share, "calls": p.calls,
                     "gflop": p.flops / 1e9, "attention_share": p.attention_flops / p.flops if p.flops else None,
                     "seconds": p.seconds, "cpu_seconds": p.cpu_seconds, "gflops": gflops,
                     "share_of_peak": gflops / peak["peak"] if gflops else None,
                     "mean_matmul_rows": mean_rows, "peak_at_rows": own,
                     "share_of_peak_at_rows": gflops / own if gflops and own else None,
                     "s_per_1k_tokens": p.seconds / tokens * 1000 if tokens else None,
                     "cpu_s_per_1k_tokens": p.cpu_seconds / tokens * 1000 if tokens else None,
                     "peak_gb": p.peak_gb, "raw": p.to_dict()})
    return rows


def _fmt(v, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def table(rows: list[dict]) -> str:
    """The stage table; a peak-memory column where device memory was read (CUDA), and the stages' sum last."""
    memory = any(r.get("peak_gb") is not None for r in rows)
    head = ("| stage | tokens | padding | calls | GFLOP | s | GFLOP/s | % peak | rows/matmul | % peak at rows "
            "| s / 1k tok | CPU s / 1k tok |" + (" peak GiB |" if memory else ""))
    lines = [head, "|" + " --- |" * (13 if memory else 12)]
    for r in rows:
        pad = _fmt(r["padding_share"] and 100 * r["padding_share"], ".1f")
        lines.append(f"| {r['stage']} | {r['tokens']} | {pad}% "
                     f"| {r['calls']} | {_fmt(r['gflop'], '.1f')} | {r['seconds']:.2f} | {_fmt(r['gflops'], '.1f')} "
                     f"| {_fmt(r['share_of_peak'] and 100 * r['share_of_peak'], '.0f')} "
                     f"| {_fmt(r['mean_matmul_rows'], '.0f')} "
                     f"| {_fmt(r['share_of_peak_at_rows'] and 100 * r['share_of_peak_at_rows'], '.0f')} "
                     f"| {_fmt(r['s_per_1k_tokens'], '.3f')} | {_fmt(r['cpu_s_per_1k_tokens'], '.3f')} |"
                     + (f" {_fmt(r.get('peak_gb'), '.1f')} |" if memory else ""))
    total = totals(rows)
    lines.append(f"| all stages (after the load) | | | | {total['gflop']:.1f} | {total['seconds']:.2f} | "
                 f"{_fmt(total['gflops'], '.1f')} | | | | | |" + (f" {_fmt(total['peak_gb'], '.1f')} |" if memory else ""))
    return "\n".join(lines)


def totals(rows: list[dict]) -> dict:
    """The whole run after the model load: summed seconds and FLOPs, their rate, the highest stage memory peak."""
    seconds, gflop = sum(r["seconds"] for r in rows), sum(r["gflop"] for r in rows)
    peaks = [r["peak_gb"] for r in rows if r.get("peak_gb") is not None]
    return {"seconds": seconds, "gflop": gflop, "gflops": gflop / seconds if seconds else None,
            "peak_gb": max(peaks) if peaks else None}


def peak_table(peak: dict) -> str:
    names = list(next(iter(peak["rows"].values()))["shapes"])
    lines = ["| rows | " + " | ".join(names) + " | layer mix |", "|" + " --- |" * (len(names) + 2)]
    for m, v in peak["rows"].items():
        lines.append(f"| {m} | " + " | ".join(f"{v['shapes'][n]:.1f}" for n in names) + f" | {v['layer_mix']:.1f} |")
    return "\n".join(lines)


def best_of(first: dict, second: dict) -> dict:
    """The reference peak: per shape and row count the better of the two measurements (a shared machine
    only ever slows a matmul down)."""
    rows = {}
    for m, v in first["rows"].items():
        w = second["rows"][m]
        rows[m] = {"shapes": {n: max(r, w["shapes"][n]) for n, r in v["shapes"].items()},
                   "layer_mix": max(v["layer_mix"], w["layer_mix"])}
    return {"dims": first["dims"], "dtype": first["dtype"], "rows": rows, "peak": max(first["peak"], second["peak"])}


