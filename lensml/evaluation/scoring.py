"""Scoring multiple-choice items: lm-eval log-likelihood and the LENS letter protocol.

`loglik` reproduces lm-evaluation-harness (zero-shot, its prompt per task) so numbers
compare with published lm-eval results: the summed log-probability of each
continuation given its context, tokenised as HFLM does (trailing context spaces move
to the continuation, the continuation is the tail of the joint encoding, no special
tokens unless add_bos). acc takes the highest sum; acc_norm divides by the
choice's length in characters (lm-eval's acc_norm) and acc_bytes by its UTF-8
bytes (lm-eval's acc_bytes).

`letter` is the LENS authors' protocol: the item in its own language inside an
English instruction, rendered with the chat template, one forward step at the
generation point, and the prediction is the option letter (A/B, or A-D) whose token
has the highest logit.

Both run in length-sorted batches with left padding and explicit positions, so a
batched score equals the one-at-a-time score; only the last positions' logits are
built (`logits_to_keep`) where the model supports it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from lensml.errors import LensError
from lensml.evaluation import benchmarks
from lensml.evaluation.benchmarks.base import LETTERS, MCItem, MultipleChoiceBenchmark
from lensml.evaluation.metrics import stderr_of_mean
from lensml.progress import progress as tqdm
from lensml.runtime.models import input_device
from lensml.runtime.templating import length_sorted_batches, pad, render, tokenize_rendered

MODES = ("loglik", "letter")


@dataclass
class ScoringConfig:
    """How multiple-choice items are scored."""

    mode: str = field(default="loglik", metadata={"help": "loglik (lm-eval convention) or letter (LENS: chat template, argmax of option letters)",
                                                  "choices": MODES})
    batch_size: int = field(default=16, metadata={"help": "sequences per forward pass"})
    max_length: int = field(default=2048, metadata={"help": "longest input in tokens (cut from the left, as lm-eval)"})
    add_bos: bool = field(default=False, metadata={"help": "prepend BOS in loglik mode (lm-eval's add_bos_token, which lm-eval also leaves off)"})

    def __post_init__(self):
        if self.mode not in MODES:
            raise LensError(f"unknown scoring mode '{self.mode}': use --scoring.mode loglik or letter")
        for name in ("batch_size", "max_length"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise LensError(f"scoring.{name} must be a whole number of at least 1, got {value!r}: "
                                f"pass --scoring.{name.replace('_', '-')} 1 or more")


@dataclass
class ItemResult:
    """Per-item outcome: one score per choice, the predictions of each metric, and per choice whether it is
    what the model would have produced greedily (lm-eval's is_greedy: every continuation token the argmax;
    letter mode: the letter the argmax over the whole vocabulary)."""

    gold: int
    scores: list[float]
    pred: int
    pred_norm: int | None = None
    pred_bytes: int | None = None
    greedy: list[bool] | None = None


def _benchmark(item: MCItem) -> MultipleChoiceBenchmark:
    benchmark = benchmarks.get(item.task)
    if not isinstance(benchmark, MultipleChoiceBenchmark):
        raise LensError(f"task {item.task} is not a multiple-choice task")
    return benchmark


def loglik_requests(item: MCItem) -> tuple[list[tuple[str, str]], list[str]]:
    """(context, continuation) per choice, and the choice strings lm-eval normalises by (the item's benchmark decides)."""
    return _benchmark(item).loglik_requests(item)


def letter_prompt(item: MCItem) -> tuple[str, int]:
    """The user message of the letter protocol (English instruction, native content) and its option count."""
    return _benchmark(item).letter_prompt(item)


def encode_pair(tokenizer, context: str, continuation: str, add_bos: bool = False) -> tuple[list[int], list[int]]:
    """Token ids of (context, continuation) exactly as lm-eval's HFLM splits them."""
    spaces = len(context) - len(context.rstrip())
    if spaces:
        continuation, context = context[-spaces:] + continuation, context[:-spaces]

    def enc(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    whole = enc(context + continuation)
    ctx = enc(context) if context else []
    cont = whole[len(ctx):]
    prefix_id = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    if not ctx:  # lm-eval scores an empty context after one prefix token
        ctx = [prefix_id]
    elif add_bos and tokenizer.bos_token_id is not None:
        ctx = [tokenizer.bos_token_id] + ctx
    if not cont:
        raise LensError(f"continuation {continuation!r} encodes to no tokens after context {context[-40:]!r}")
    return ctx, cont


def last_logits(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor,
                keep: int) -> torch.Tensor:
    """Float logits of the last `keep` positions, (b, keep, V), without building the others when possible."""
    kwargs = dict(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False)
    try:
        logits = model(**kwargs, logits_to_keep=keep).logits
    except TypeError:  # a model without logits_to_keep: full logits, then the tail
        logits = model(**kwargs).logits
    return logits[:, -keep:].float()


def loglik_scores(model, tokenizer, pairs: list[tuple[str, str]], cfg: ScoringConfig,
                  desc: str = "loglik") -> list[float]:
    """Summed log-probability of each continuation given its context."""
    return [score for score, _ in loglik_results(model, tokenizer, pairs, cfg, desc)]


@torch.no_grad()
def loglik_results(model, tokenizer, pairs: list[tuple[str, str]], cfg: ScoringConfig,
                   desc: str = "loglik") -> list[tuple[float, bool]]:
    """(summed log-probability, is_greedy) of each continuation given its context: lm-eval's loglikelihood."""
    seqs, cont_lens = [], []
    for context, continuation in pairs:
        ctx, cont = encode_pair(tokenizer, context, continuation, cfg.add_bos)
        if len(cont) > cfg.max_length:
            raise LensError(f"a continuation of {len(cont)} tokens exceeds max_length {cfg.max_length}")
        seq = (ctx + cont)[-(cfg.max_length + 1):]
        seqs.append(seq)
        cont_lens.append(len(cont))
    device = input_device(model)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    out = [(0.0, False)] * len(seqs)
    for idx in tqdm(length_sorted_batches([len(s) for s in seqs], cfg.batch_size), desc=desc, leave=False):
        batch = pad([seqs[i][:-1] for i in idx], pad_id, "left").to(device)
        keep = max(cont_lens[i] for i in idx)
        logp = torch.log_softmax(last_logits(model, batch.input_ids, batch.attention_mask, batch.position_ids, keep), -1)
        for row, i in enumerate(idx):
            c = cont_lens[i]
            targets = torch.tensor(seqs[i][-c:], device=logp.device)
            own = logp[row, keep - c:]
            out[i] = (own.gather(-1, targets[:, None]).sum().item(), bool((own.argmax(-1) == targets).all()))
    return out


def score_loglik(model, tokenizer, items: list[MCItem], cfg: ScoringConfig, desc: str = "loglik") -> list[ItemResult]:
    """acc / acc_norm / acc_bytes predictions of every item, all choices scored in one batched pass."""
    pairs, owners, norms = [], [], []
    for k, item in enumerate(items):
        requests, choice_strings = loglik_requests(item)
        pairs += requests
        owners += [k] * len(requests)
        norms.append(choice_strings)
    flat = loglik_results(model, tokenizer, pairs, cfg, desc)
    per_item: list[list[float]] = [[] for _ in items]
    greedy: list[list[bool]] = [[] for _ in items]
    for k, (score, is_greedy) in zip(owners, flat):
        per_item[k].append(score)
        greedy[k].append(is_greedy)
    results = []
    for item, scores, flags, choices in zip(items, per_item, greedy, norms):
        chars = [s / max(len(c), 1) for s, c in zip(scores, choices)]
        nbytes = [s / max(len(c.encode("utf-8")), 1) for s, c in zip(scores, choices)]
        results.append(ItemResult(item.label, scores, _argmax(scores), _argmax(chars), _argmax(nbytes), flags))
    return results


def letter_token_ids(tokenizer, n: int) -> list[int]:
    """The single token of each option letter as the model would emit it first."""
    ids = []
    for letter in LETTERS[:n]:
        enc = tokenizer(letter, add_special_tokens=False)["input_ids"]
        if len(enc) != 1:
            raise LensError(f"the tokenizer splits option letter {letter} into {len(enc)} tokens: letter mode needs one")
        ids.append(enc[0])
    return ids


@torch.no_grad()
def score_letter(model, tokenizer, items: list[MCItem], cfg: ScoringConfig, desc: str = "letter") -> list[ItemResult]:
    """Letter-protocol predictions: argmax over the option letters' logits at the generation point."""
    prompts = [letter_prompt(item) for item in items]
    ids = [tokenize_rendered(tokenizer, render(tokenizer, text), cfg.max_length) for text, _ in prompts]
    letter_ids = {n: letter_token_ids(tokenizer, n) for n in {n for _, n in prompts}}
    device = input_device(model)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    results: list[ItemResult | None] = [None] * len(items)
    for idx in tqdm(length_sorted_batches([len(s) for s in ids], cfg.batch_size), desc=desc, leave=False):
        batch = pad([ids[i] for i in idx], pad_id, "left").to(device)
        logits = last_logits(model, batch.input_ids, batch.attention_mask, batch.position_ids, 1)[:, -1]
        top = logits.argmax(-1).tolist()
        for row, i in enumerate(idx):
            option_ids = letter_ids[prompts[i][1]]
            scores = logits[row, option_ids].tolist()
            results[i] = ItemResult(items[i].label, scores, _argmax(scores), greedy=[t == top[row] for t in option_ids])
    return results  # type: ignore[return-value]


def score_items(model, tokenizer, items: list[MCItem], cfg: ScoringConfig, desc: str = "score") -> list[ItemResult]:
    if cfg.mode == "loglik":
        return score_loglik(model, tokenizer, items, cfg, desc)
    if cfg.mode == "letter":
        return score_letter(model, tokenizer, items, cfg, desc)
    raise LensError(f"unknown scoring mode '{cfg.mode}': use loglik or letter")


def _argmax(values: list[float]) -> int:
    """First index of the maximum (ties go to the earlier choice, as numpy.argmax)."""
    return max(range(len(values)), key=lambda i: (values[i], -i))


def accuracy(results: list[ItemResult]) -> dict[str, dict[str, float | None]]:
    """acc (and acc_norm, acc_bytes where defined) with standard errors."""
    n = len(results)
    metrics = {}
    for name, attr in (("acc", "pred"), ("acc_norm", "pred_norm"), ("acc_bytes", "pred_bytes")):
        preds = [getattr(r, attr) for r in results]
        if n and all(p is not None for p in preds):
            p = sum(pr == r.gold for pr, r in zip(preds, results)) / n
            metrics[name] = {"value": p, "stderr": stderr_of_mean(p, n)}
    return metrics
