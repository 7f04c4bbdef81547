"""Supervised fine-tuning on (prompt, response) pairs: what xsft, xsft-full, qalign and sdrrl share.

Pairs are templated with the model's chat template, the loss is the next-token cross-entropy
on the response tokens only, and the steps are lensml.training.optimise's (the LENS optimiser,
schedule, batches and seed), so the methods compare step for step. When only a top block
trains, the frozen layers below run once over the data (their outputs are cached) instead of
every step; data streamed from large sources (PackedExamples) are never cached.
"""

from __future__ import annotations

import logging
import time
from array import array
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from lensml import distributed
from lensml.errors import LensError
from lensml.runtime.models import decoder_of, input_device
from lensml.runtime.shared_prefix import MIN_PREFIX, after, batch_for, fits_window, run_prefix
from lensml.runtime.templating import length_sorted_batches, pad, render, tokenize_rendered
from lensml.runtime.topblock import TopBlock
from lensml.training import TrainConfig, TrainResult, optimise

log = logging.getLogger(__name__)

IGNORE = -100


def _turns(prompt: str | list[dict]) -> list[dict]:
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)


def _response_ids(tokenizer, prompt: str | list[dict], response: str, system: str | None) -> list[int]:
    """Tokens of the assistant turn as the chat template writes it (response + end-of-turn).

    Rendering the whole conversation and cutting off the rendered prompt gives exactly the
    tokens the model would produce, its end-of-turn marker included; a template whose
    conversation does not start with its own generation prompt falls back to response + EOS.
    """
    prefix = render(tokenizer, _turns(prompt), system)
    full = render(tokenizer, [*_turns(prompt), {"role": "assistant", "content": response}], system,
                  generation_prompt=False)
    if full.startswith(prefix) and len(full) > len(prefix):
        return tokenizer(full[len(prefix):], add_special_tokens=False)["input_ids"]
    ids = tokenizer(response, add_special_tokens=False)["input_ids"]
    return ids + ([tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else [])


def encode_pair(tokenizer, prompt: str | list[dict], response: str, max_length: int, max_response: int,
                system: str | None = None) -> tuple[list[int], list[int]]:
    """(input ids, labels) of one templated pair; labels are IGNORE on the prompt.

    prompt is a user message or a conversation ending in a user turn (chat data). The prompt
    is templated and cut from the left to max_length, as LENS reads prompts; the response is
    cut from the right to max_response tokens, keeping its last token (the end-of-turn marker),
    so the model still learns to stop.
    """
    p = tokenize_rendered(tokenizer, render(tokenizer, _turns(prompt), system), max_length)
    r = _response_ids(tokenizer, prompt, response, system)
    if len(r) > max_response:
        r = r[:max_response - 1] + r[-1:]
    return p + r, [IGNORE] * len(p) + r


def pad_labels(labels: list[list[int]], width: int) -> torch.Tensor:
    """Right-pad label lists with IGNORE (sequences are right-padded for training)."""
    out = torch.full((len(labels), width), IGNORE, dtype=torch.long)
    for i, seq in enumerate(labels):
        out[i, :len(seq)] = torch.tensor(seq, dtype=torch.long)
    return out


def _loss_of(model, hidden: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy at the labelled positions, from final (post-norm) states.

    Logits are computed only where a label exists (the LM head over a 49k-152k vocabulary is
    the largest activation of a step), which gives the same value as the full computation.
    """
    shifted = target[:, 1:]
    keep = shifted != IGNORE
    if not keep.any():
        raise LensError("no response tokens in a training batch: check the data's responses")
    logits = model.get_output_embeddings()(hidden[:, :-1][keep])
    return F.cross_entropy(logits.float(), shifted[keep])


def response_loss(model, input_ids: list[list[int]], labels: list[list[int]], pad_id: int, device,
                  skip: int = 0) -> torch.Tensor:
    """Mean next-token cross-entropy over the response tokens of a batch (full forward).

    skip > 0: the first skip tokens are the examples' shared prefix (all prompt, no labels):
    it runs once and the batch follows it, gradients included (lensml.runtime.shared_prefix).
    """
    if skip:
        emb = model.get_input_embeddings()
        head = emb(torch.tensor([input_ids[0][:skip]], device=device))
        batch = after(pad([s[skip:] for s in input_ids], pad_id, side="right"), skip).to(device)
        target = pad_labels([lab[skip:] for lab in labels], batch.input_ids.shape[1]).to(device)
        _, (final,) = TopBlock(model, 0, as_tuple=False).after_prefix(head, [(batch, emb(batch.input_ids))])
        return _loss_of(model, final, target)
    batch = pad(input_ids, pad_id, side="right").to(device)
    target = pad_labels(labels, batch.input_ids.shape[1]).to(device)
    hidden = decoder_of(model)(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                               position_ids=batch.position_ids, use_cache=False).last_hidden_state
    return _loss_of(model, hidden, target)


def cached_response_loss(model, block: TopBlock, hidden_in: list[torch.Tensor], input_ids: list[list[int]],
                         labels: list[list[int]], pad_id: int, device, skip: int = 0) -> torch.Tensor:
    """response_loss from cached start-layer inputs: only the trained block and the LM head run."""
    batch = pad([s[skip:] for s in input_ids], pad_id, side="right")
    batch = (after(batch, skip) if skip else batch).to(device)
    target = pad_labels([lab[skip:] for lab in labels], batch.input_ids.shape[1]).to(device)
    h = hidden_in[0].new_zeros((len(input_ids), batch.input_ids.shape[1], hidden_in[0].shape[-1]))
    for row, x in enumerate(hidden_in):
        h[row, :x.shape[0] - skip] = x[skip:]
    if not skip:
        return _loss_of(model, block.forward(batch, h.to(device)), target)
    _, (final,) = block.after_prefix(hidden_in[0][None, :skip].to(device), [(batch, h.to(device))])
    return _loss_of(model, final, target)


@dataclass
class Examples:
    """Tokenised training items held in memory: per item, one (ids, labels) per trained language."""

    ids: list[list[list[int]]]
    labels: list[list[list[int]]]

    def __len__(self) -> int:
        return len(self.ids)

    def item(self, i: int) -> tuple[list[list[int]], list[list[int]]]:
        return self.ids[i], self.labels[i]

    def sequences(self) -> list[list[int]]:
        return [seq for row in self.ids for seq in row]

    def response_tokens(self) -> list[int]:
        """Per item, the tokens its loss is computed on (labels after the first position)."""
        return [sum(t != IGNORE for lab in labels for t in lab[1:]) for labels in self.labels]

    @property
    def pairs(self) -> int:
        """Training pairs (sequences with a loss), what "instruction rows" counts."""
        return sum(len(row) for row in self.ids)


class PackedExamples:
    """Tokenised pairs of data too large for Python lists (streamed sources): 4 bytes a token, one pair an item.

    The prompt length is kept instead of the labels (labels are IGNORE on the prompt, the ids after),
    and the longest common prefix is tracked as pairs arrive, so nothing needs a second pass.
    """

    def __init__(self):
        self._tokens = array("i")
        self._starts = array("q", [0])
        self._prompt = array("i")
        self.common: list[int] | None = None
        self.shortest = self.longest = 0

    def add(self, ids: list[int], labels: list[int]) -> None:
        n_prompt = next((k for k, lab in enumerate(labels) if lab != IGNORE), len(labels))
        self._tokens.extend(ids)
        self._starts.append(len(self._tokens))
        self._prompt.append(n_prompt)
        if self.common is None:
            self.common, self.shortest, self.longest = list(ids), len(ids), len(ids)
            return
        k = 0
        limit = min(len(self.common), len(ids))
        while k < limit and self.common[k] == ids[k]:
            k += 1
        del self.common[k:]
        self.shortest, self.longest = min(self.shortest, len(ids)), max(self.longest, len(ids))

    def __len__(self) -> int:
        return len(self._prompt)

    @property
    def pairs(self) -> int:
        return len(self)

    @property
    def tokens(self) -> int:
        return len(self._tokens)

    def response_tokens(self) -> list[int]:
        """Per item, the tokens its loss is computed on (labels after the first position)."""
        return [end - start - max(n, 1) for start, end, n in zip(self._starts, self._starts[1:], self._prompt)]

    def item(self, i: int) -> tuple[list[list[int]], list[list[int]]]:
        ids = self._tokens[self._starts[i]:self._starts[i + 1]].tolist()
        n = self._prompt[i]
        return [ids], [[IGNORE] * n + ids[n:]]


def build_examples(tokenizer, pairs: list[list[tuple[str, str]]], cfg: TrainConfig, max_response: int) -> Examples:
    """pairs[row] is a list of (prompt, target) in each trained language."""
    ids, labels = [], []
    for row in pairs:
        enc = [encode_pair(tokenizer, p, r, cfg.max_length, max_response, cfg.system_prompt) for p, r in row]
        ids.append([e[0] for e in enc])
        labels.append([e[1] for e in enc])
    return Examples(ids, labels)


def shared_length(model, examples: Examples | PackedExamples, enabled: bool) -> int:
    """Tokens every example starts with (the template prefix), run once per pass (lensml.runtime.shared_prefix)."""
    if isinstance(examples, PackedExamples):
        common, shortest, longest, count = len(examples.common or []), examples.shortest, examples.longest, len(examples)
    else:
        every = examples.sequences()
        if not every:
            return 0
        first, shortest, longest, count = every[0], min(map(len, every)), max(map(len, every)), len(every)
        common = next((k for k in range(len(first)) if any(len(s) <= k or s[k] != first[k] for s in every)),
                      len(first))
    if not enabled or count < 2 or not fits_window(model, longest):
        return 0
    n = min(common, shortest - 1)
    return n if n >= MIN_PREFIX else 0


@torch.no_grad()
def cache_inputs(block: TopBlock, examples: Examples, pad_id: int, device, batch_size: int = 16,
                 skip: int = 0) -> list[list[torch.Tensor]]:
    """Start-layer inputs of every sequence, from one no-grad pass: the frozen layers below never change.

    The same saving LENS takes (lensml.runtime.topblock): each step then runs only the trained block and the LM head.
    skip: the shared prefix length; it runs once and heads every stored sequence.
    """
    flat = [(r, j) for r in range(len(examples)) for j in range(len(examples.ids[r]))]
    hidden: list[list] = [[None] * len(row) for row in examples.ids]
    head = pre = None
    if skip:
        with block.capturing() as captured:
            pre, _ = run_prefix(decoder_of(block.model), examples.ids[0][0][:skip], device)
        head = captured["h"][0]
    for group in length_sorted_batches([len(examples.ids[r][j]) for r, j in flat], batch_size):
        seqs = [examples.ids[flat[g][0]][flat[g][1]] for g in group]
        batch, past = batch_for(pre, seqs, [x[skip:] for x in seqs], list(range(len(seqs))),
                                pad_id, side="right")
        h_in, _ = block.full(batch.to(device), past)
        for k, g in enumerate(group):
            r, j = flat[g]
            own = h_in[k, :len(seqs[k]) - skip]
            hidden[r][j] = (torch.cat([head, own]) if head is not None else own).clone()
    return hidden


def fine_tune(model, tokenizer, examples: Examples | PackedExamples, cfg: TrainConfig,
              params: list[torch.nn.Parameter], result: TrainResult, log_path: Path | None = None,
              block: TopBlock | None = None) -> TrainResult:
    """One pass of lensml.training.optimise over examples, training params on the response loss.

    With block (only the top block trains) and examples in memory, the layers below run once, not every step.
    Launched for sharded training (lensml.distributed.fsdp_requested), a full-model pass trains a sharded
    copy of the model (FSDP2) and gathers the weights back into model afterwards; a top block, small
    by design, stays replicated.
    """
    if len(examples) == 0:
        raise LensError("no training pairs: check the data (every pair needs a prompt and a response)")
    if block is None and distributed.fsdp_requested():
        ids = {id(p) for p in params}
        trained = {name for name, p in model.named_parameters() if id(p) in ids}
        with distributed.sharded(model, lambda m: decoder_of(m).layers, trained) as root:
            shards = [p for name, p in root.model.named_parameters() if name in trained]
            return _fine_tune(root.model, tokenizer, examples, cfg, shards, result, log_path, None, root)
    if distributed.fsdp_requested():
        log.info("only the top block trains: it stays replicated over the processes, not sharded")
    return _fine_tune(model, tokenizer, examples, cfg, params, result, log_path, block, None)


def _fine_tune(model, tokenizer, examples: Examples | PackedExamples, cfg: TrainConfig,
               params: list[torch.nn.Parameter], result: TrainResult, log_path: Path | None,
               block: TopBlock | None, root: distributed.ShardedRoot | None) -> TrainResult:
    """fine_tune's work; root: the FSDP root the full forward runs through (None: not sharded)."""
    device = input_device(model)
    for p in model.parameters():
        p.requires_grad_(False)
    model.eval()
    hidden = None
    # Sharded, the prefix's keys and values would carry gradients past FSDP's backward hooks (they leave a
    # layer through the cache, not its output), reaching weights already resharded: every prompt runs whole.
    skip = shared_length(model, examples, cfg.share_prefix and root is None)
    if block is not None and isinstance(examples, Examples):
        t0 = time.perf_counter()
        hidden = cache_inputs(block, examples, tokenizer.pad_token_id, device, skip=skip)
        result.timings_s["input_cache"] = result.timings_s.get("input_cache", 0.0) + time.perf_counter() - t0
    for p in params:
        p.requires_grad_(True)

    def loss_of(idx: list[int]) -> torch.Tensor:
        items = [examples.item(i) for i in idx]
        seqs = [s for ids, _ in items for s in ids]
        labs = [lab for _, labels in items for lab in labels]
        if root is not None:
            return root(response_loss, seqs, labs, tokenizer.pad_token_id, device, skip)
        if hidden is None:
            return response_loss(model, seqs, labs, tokenizer.pad_token_id, device, skip)
        return cached_response_loss(model, block, [h for i in idx for h in hidden[i]], seqs, labs,
                                    tokenizer.pad_token_id, device, skip)

    def micro_step(idx: list[int], weight: float | None) -> dict[str, float]:
        if weight is None:
            with torch.no_grad():
                return {"loss": float(loss_of(idx))}
        loss = loss_of(idx)
        (loss * weight).backward()
        return {"loss": float(loss.detach())}

    model.train()
    try:
        # Items weigh by their response tokens: each step's loss is the mean over its tokens, as one batch
        # computes it, whether the step runs as one batch, in micro-batches or over processes.
        optimise(params, len(examples), cfg, micro_step, result, ("loss",), device, log_path, model=model,
                 sizes=examples.response_tokens())
    finally:
        model.eval()
        for p in params:
            p.requires_grad_(False)
    return result
