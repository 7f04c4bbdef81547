"""Greedy decoding of evaluation answers, shaped for what a decode step costs.

`generate()` answers a batch correctly but wastes work on the quick evaluation's shape
(80 prompts of 40 to 120 tokens, 64 new tokens each; SmolLM2 on a 2-core CPU):
- it prefills the whole batch padded to its longest prompt: the embedded Chinese prompts
  pad to 4000 tokens for 1763 real ones. Here the prompts are prefilled in chunks of
  similar length (`chunk_plan`) and their caches put side by side, left-padded.
- its DynamicCache concatenates every layer's keys and values at every step (27 of a
  200 ms step at batch 40); a StaticCache writes one slot in place.
- it gives no log-probabilities; here each chosen token's comes with it, so the NLL of a
  model's own answers costs no second pass.
The answers are the ones `generate()` gives: the same argmax over float32 logits, the same
stop and padding rules (tests compare ids). Steering hooks are paused while prompts are
prefilled, so they steer from each prompt's last token on, as under `generate()`; other
forward hooks and sequences longer than a sliding window keep `generate()`.
"""

from __future__ import annotations

import functools
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

import torch
from transformers import DynamicCache, StaticCache
from transformers.cache_utils import StaticLayer

from lensml.progress import progress as tqdm
from lensml.runtime import known_hooks
from lensml.runtime.models import decoder_of, input_device
from lensml.runtime.prefill_store import PrefillStore
from lensml.runtime.shared_prefix import fits_window, output_cache, past_kwargs, run_prefix, shareable, split
from lensml.runtime.templating import length_sorted_batches, pad
from lensml.runtime.topblock import TopBlock

CHUNK_OVERHEAD = 32  # a prefill forward's fixed cost, in padded tokens' worth (measured: 15 ms, 2 ms a token)


@dataclass
class Generation:
    """One greedy answer: its tokens (stop token excluded), whether it stopped on its own, and
    log p(token | prompt, earlier tokens) of each token under the model that wrote it."""

    ids: list[int]
    stopped: bool
    logprobs: list[float]
    states: torch.Tensor | None = None  # with greedy(capture=layer): that layer's inputs at prompt + ids[:-1]


def chunk_plan(lengths: list[int], overhead: int = CHUNK_OVERHEAD) -> list[list[int]]:
    """Indices grouped into prefill chunks: minimal padded tokens + overhead per chunk (exact DP
    over the length-sorted order, where an optimal grouping is contiguous)."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    n = len(order)
    best = [0] + [float("inf")] * n  # best[j]: cost of the first j sorted items
    cut = [0] * (n + 1)
    for j in range(1, n + 1):
        for i in range(j):
            cost = best[i] + overhead + (j - i) * lengths[order[j - 1]]
            if cost < best[j]:
                best[j], cut[j] = cost, i
    chunks, j = [], n
    while j > 0:
        chunks.append(order[cut[j]:j])
        j = cut[j]
    return chunks[::-1]


@torch.no_grad()
def greedy(model, prompts: list[list[int]], max_new_tokens: int, stop_ids: list[int], pad_id: int,
           batch_size: int = 16, share_prefix: bool = True, desc: str = "generate",
           capture: int | None = None, keep: PrefillStore | None = None,
           reuse: PrefillStore | None = None) -> list[Generation]:
    """Greedy answers to templated prompt ids, in order; batches are length-sorted.

    capture=layer records that decoder layer's inputs for every position an answer's NLL reads
    (Generation.states; not on the generate() path, where they stay None).
    keep: a PrefillStore that records this model's prompt prefill (lensml.runtime.prefill_store);
    reuse: one filled by a model equal to this one below its start layer, whose prefill then runs
    only this model's layers from there up. Neither is used on the generate() path.
    """
    if not prompts:
        return []
    if keep is not None and (reuse is not None or capture not in (None, keep.start)):
        raise ValueError("a prefill store records its own start layer's inputs: no other capture, and no reuse")
    if reuse is not None and capture is not None:
        raise ValueError("a reused prefill does not run the lower layers, so it cannot capture their outputs")
    steering = known_hooks.known_only(model)
    if steering is None or not fits_window(model, max(len(p) for p in prompts) + max_new_tokens):
        return _with_generate(model, prompts, max_new_tokens, stop_ids, pad_id, batch_size, desc)
    layer = capture if capture is not None else keep.start if keep is not None else None
    with ExitStack() as stack:
        # cap["h"]: the captured layer's input in the latest forward (TopBlock.capturing)
        block = TopBlock(model, layer) if layer is not None else None
        cap = stack.enter_context(block.capturing()) if block is not None else None
        pre, tails, head_states = None, prompts, None
        if shareable(model, prompts, share_prefix, max_new_tokens):
            head, tails = split(prompts)
            if head:
                with _paused(steering):
                    pre = reuse.prefix(model, head) if reuse is not None else None
                    ran = pre is None
                    if ran:
                        pre = run_prefix(decoder_of(model), head, input_device(model))[0]
                if ran:
                    head_states = cap["h"][0] if cap is not None else None
                    if keep is not None:
                        keep.keep_prefix(pre, cap["h"], block.as_tuple)
        prefill = _Prefill(cap, keep, reuse, block)
        out: list[Generation | None] = [None] * len(prompts)
        for idx in tqdm(length_sorted_batches([len(t) for t in tails], batch_size), desc=desc, leave=False):
            gens = _decode(model, pre, [tails[i] for i in idx], max_new_tokens, stop_ids, pad_id, prefill,
                           head_states if capture is not None else None, steering, capture is not None)
            for i, g in zip(idx, gens):
                out[i] = g
    return out


@dataclass
class _Prefill:
    """How a decode's prompts are prefilled: captured layer inputs (cap), and a store to fill or to serve from."""

    cap: dict | None = None
    keep: PrefillStore | None = None
    reuse: PrefillStore | None = None
    block: TopBlock | None = None


@contextmanager
def _paused(handles):
    """Steering hooks off for a prefill: generate() steers a prompt from its last token on, which here
    is the first decode step's input."""
    with ExitStack() as stack:
        for h in handles:
            stack.enter_context(h.paused())
        yield


def _decode(model, pre, tails: list[list[int]], max_new_tokens: int, stop_ids: list[int], pad_id: int,
            prefill: _Prefill, head_states: torch.Tensor | None = None, steering=(), states: bool = False):
    device = input_device(model)
    with _paused(steering):
        cache, mask, filled, prompt_states = _prefilled(model, pre, tails, pad_id, max_new_tokens, prefill)
    cap = prefill.cap if states else None
    for h in steering:
        h.restart()  # the languages of this batch are read off its prompts' last tokens at step 0
    rows = len(tails)
    cur = torch.tensor([t[-1] for t in tails], device=device)
    pos = torch.tensor([(len(pre) if pre is not None else 0) + len(t) - 1 for t in tails], device=device)
    stops = torch.tensor(stop_ids, device=device)
    done = torch.zeros(rows, dtype=torch.bool, device=device)
    tokens, logps, steps = [], [], []
    for step in range(max_new_tokens):
        mask[:, filled + step] = 1
        logits = model(input_ids=cur[:, None], attention_mask=mask[:, :filled + step + 1], position_ids=pos[:, None],
                       use_cache=True, logits_to_keep=1, **past_kwargs(model, cache)).logits[:, -1].float()
        if cap is not None:
            steps.append(cap["h"][:, -1])
        nxt = logits.argmax(-1)  # generate()'s greedy choice: argmax over float32 logits
        logps.append(torch.log_softmax(logits, -1).gather(-1, nxt[:, None])[:, 0])
        tokens.append(nxt)
        done |= torch.isin(nxt, stops)
        if bool(done.all()):
            break
        cur, pos = nxt, pos + 1
    gens = _answers(torch.stack(tokens, 1).tolist(), torch.stack(logps, 1).tolist(), stop_ids)
    if cap is not None:
        stepped = torch.stack(steps, 1)  # (rows, steps, d): inputs of the last prompt token and the answer
        for r, g in enumerate(gens):
            own = [prompt_states[r], stepped[r, :max(len(g.ids), 1)]]  # step 0 read the prompt's last token
            g.states = torch.cat([x.cpu() for x in ([head_states] if head_states is not None else []) + own])
    return gens


def _answers(tokens: list[list[int]], logps: list[list[float]], stop_ids: list[int]) -> list[Generation]:
    out = []
    for ids, lp in zip(tokens, logps):
        end = next((k for k, t in enumerate(ids) if t in stop_ids), None)
        n = len(ids) if end is None else end
        out.append(Generation(ids[:n], end is not None, lp[:n]))
    return out


def _prefilled(model, pre, tails: list[list[int]], pad_id: int, max_new_tokens: int, prefill: _Prefill | None = None):
    """A cache holding the prefix and every prompt but its last token, left-padded to one width.

    Returns (cache, attention mask with room for the new tokens, filled slots, each row's captured
    layer inputs at those prompt tokens (None without prefill.cap)). Prompts run in
    chunks of similar length (chunk_plan); each chunk's keys and values, already rotated for
    their positions, are copied to the right end of their rows. A chunk prefill.reuse kept runs
    only its top layers; prefill.keep records each chunk that runs whole.
    """
    prefill = prefill or _Prefill()
    cap = prefill.cap
    device, decoder = input_device(model), decoder_of(model)
    p = len(pre) if pre is not None else 0
    heads = [t[:-1] for t in tails]
    width = max(len(h) for h in heads)
    rows, filled = len(tails), p + width
    keys: list[torch.Tensor] | None = None
    values: list[torch.Tensor] | None = None
    states: list[torch.Tensor] | None = None
    if cap is not None:
        weight = model.get_input_embeddings().weight
        states = [weight.new_zeros(0, weight.shape[1]) for _ in heads]
    if pre is not None:
        keys, values = _layer_tensors(_kv(pre.cache), rows, filled)
        for k, v, (pk, pv) in zip(keys, values, _kv(pre.cache)):
            k[:, :, :p], v[:, :, :p] = pk, pv
    for chunk in chunk_plan([len(h) for h in heads]) if width else []:
        w = max(len(heads[i]) for i in chunk)
        if w == 0:
            continue
        part = [heads[i] for i in chunk]
        batch = (pre.batch(part, pad_id) if pre is not None else pad(part, pad_id)).to(device)
        got = prefill.reuse.chunk(model, pre, part, batch) if prefill.reuse is not None else None
        if got is None:
            past = pre.past(len(chunk)) if pre is not None else None
            out = decoder(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                          position_ids=batch.position_ids, use_cache=True, **past_kwargs(decoder, past))
            got = [(k[:, :, -w:], v[:, :, -w:]) for k, v in _kv(output_cache(out))]
            if cap is not None:
                x = cap["h"]
                for row, i in enumerate(chunk):
                    states[i] = x[row, x.shape[1] - len(heads[i]):]
            if prefill.keep is not None:
                prefill.keep.keep_chunk(pre.ids if pre is not None else None, part, got, cap["h"],
                                        prefill.block.as_tuple)
        if keys is None:
            keys, values = _layer_tensors(got, rows, filled)
        sel = torch.tensor(chunk, device=device)
        for k, v, (ck, cv) in zip(keys, values, got):
            at = sel.to(k.device)  # under a device_map each layer's cache lives on that layer's device
            k[at, :, filled - w:], v[at, :, filled - w:] = ck.to(k.device), cv.to(k.device)
    mask = torch.zeros(rows, filled + max_new_tokens, dtype=torch.long, device=device)
    mask[:, :p] = 1
    for r, h in enumerate(heads):
        mask[r, filled - len(h):filled] = 1
    cache = _new_cache(model, filled + max_new_tokens)
    for layer, (k, v) in enumerate(zip(keys or [], values or [])):
        cache.update(k, v, layer)
    return cache, mask, filled, states


def _kv(cache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(layer.keys, layer.values) for layer in cache.layers]


def _layer_tensors(kv: list[tuple[torch.Tensor, torch.Tensor]], rows: int, length: int):
    """Zeroed (rows, heads, length, dim) key and value tensors shaped like each layer's (keys, values) in kv."""
    keys = [torch.zeros(rows, k.shape[1], length, k.shape[3], dtype=k.dtype, device=k.device) for k, _ in kv]
    values = [torch.zeros(rows, v.shape[1], length, v.shape[3], dtype=v.dtype, device=v.device) for _, v in kv]
    return keys, values


def _new_cache(model, length: int):
    config = model.config
    if _static_appends():
        return StaticCache(config=config, max_cache_len=length)
    return DynamicCache(config=config)


@functools.lru_cache(maxsize=1)
def _static_appends() -> bool:
    """Does transformers' static cache layer append by its own count (5.17+)? Older ones write where
    a cache_position says, which a forward given position_ids does not pass; they get DynamicCache."""
    return isinstance(getattr(StaticLayer(max_cache_len=1), "cumulative_length", None), torch.Tensor)


def _with_generate(model, prompts, max_new_tokens, stop_ids, pad_id, batch_size, desc) -> list[Generation]:
    """transformers' generate(), whole prompts: for hooked models and sliding windows too short to share."""
    device = input_device(model)
    out: list[Generation | None] = [None] * len(prompts)
    for idx in tqdm(length_sorted_batches([len(p) for p in prompts], batch_size), desc=desc, leave=False):
        batch = pad([prompts[i] for i in idx], pad_id).to(device)
        res = model.generate(input_ids=batch.input_ids, attention_mask=batch.attention_mask, do_sample=False,
                             max_new_tokens=max_new_tokens, pad_token_id=pad_id, eos_token_id=stop_ids,
                             temperature=None, top_p=None, top_k=None, output_logits=True,
                             return_dict_in_generate=True)
        new = res.sequences[:, batch.input_ids.shape[1]:]
        logits = torch.stack(res.logits, 1).float()
        logps = torch.log_softmax(logits, -1).gather(-1, new[..., None])[..., 0]
        for i, g in zip(idx, _answers(new.tolist(), logps.tolist(), stop_ids)):
            out[i] = g
    return out
