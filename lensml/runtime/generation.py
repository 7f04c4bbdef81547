"""Greedy chat answers (texts and tokens) and the NLL a model gives answers."""

from __future__ import annotations

import re
from typing import Callable

import torch
from transformers.generation.streamers import BaseStreamer

from lensml.runtime.decoding import Generation, greedy
from lensml.runtime.models import decoder_of, input_device
from lensml.runtime.prefill_store import PrefillStore
from lensml.runtime.shared_prefix import batch_for, hooked, past_kwargs, run_prefix, shareable, split
from lensml.runtime.templating import length_sorted_batches, pad, render, tokenize_rendered
from lensml.runtime.topblock import TopBlock


def _prefix_for(model, ids: list[list[int]], share_prefix: bool, new_tokens: int = 0):
    """The prompts' common prefix run once (lensml.runtime.shared_prefix), unless hooks must see whole prompts."""
    if not shareable(model, ids, share_prefix, new_tokens) or hooked(model):
        return None, ids
    head, tails = split(ids)
    if not head:
        return None, ids
    return run_prefix(decoder_of(model), head, input_device(model))[0], tails


MAX_PROMPT_TOKENS = 512  # prompts are cut from the left to this many tokens


def generate(model, tokenizer, conversations: list[list[dict] | str], max_new_tokens: int = 64,
             batch_size: int = 16, max_length: int = MAX_PROMPT_TOKENS, system: str | None = None,
             desc: str = "generate", share_prefix: bool = True, capture: int | None = None,
             keep: PrefillStore | None = None, reuse: PrefillStore | None = None) -> tuple[list[str], list[Generation]]:
    """Greedy answers to user prompts (or whole conversations ending in a user turn): their texts,
    and their tokens with log-probabilities (lensml.runtime.decoding; capture, keep, reuse: see greedy).

    A batched answer is the answer the prompt would get alone (left padding, explicit positions).
    """
    ids = [tokenize_rendered(tokenizer, render(tokenizer, c, system), max_length) for c in conversations]
    stops = _stop_ids(model, tokenizer)
    out = greedy(model, ids, max_new_tokens, stops, tokenizer.pad_token_id, batch_size, share_prefix, desc, capture,
                 keep, reuse)
    texts = [decode_answer(tokenizer, g.ids, cut=not g.stopped and len(g.ids) >= max_new_tokens) for g in out]
    return texts, out


def generate_answers(model, tokenizer, conversations: list[list[dict] | str], max_new_tokens: int = 64,
                     batch_size: int = 16, max_length: int = 512, system: str | None = None,
                     desc: str = "generate", share_prefix: bool = True) -> list[str]:
    """The texts of generate()."""
    return generate(model, tokenizer, conversations, max_new_tokens, batch_size, max_length, system, desc,
                    share_prefix)[0]


def stream_answer(model, tokenizer, conversation: list[dict] | str, on_text: Callable[[str], None],
                  max_new_tokens: int = 64, max_length: int = MAX_PROMPT_TOKENS, system: str | None = None) -> str:
    """A greedy answer handed to on_text piece by piece as its tokens come; returns its whole text.

    The pieces join to the text generate_answers() gives the prompt (same template, stop tokens and
    trimming): a person reading `lens chat` sees the answer grow rather than waiting for all of it.
    One prompt at a time, through transformers' generate() and its streamer hook.
    """
    ids = tokenize_rendered(tokenizer, render(tokenizer, conversation, system), max_length)
    stops = _stop_ids(model, tokenizer)
    streamer = AnswerStreamer(tokenizer, stops, max_new_tokens, on_text)
    batch = pad([ids], tokenizer.pad_token_id).to(input_device(model))
    model.generate(input_ids=batch.input_ids, attention_mask=batch.attention_mask, do_sample=False,
                   max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id, eos_token_id=stops,
                   temperature=None, top_p=None, top_k=None, streamer=streamer)
    return streamer.text


_HELD_BACK = re.compile(r"[\s\ufffd]+$")  # may still change: whitespace (stripped at the end), part of a character


class AnswerStreamer(BaseStreamer):
    """generate()'s streamer hook turned into text pieces that end equal to decode_answer's text.

    Each new token re-decodes the answer so far (a character can span tokens, and tokenizers join
    pieces with spaces of their own); what is shown is that text without its leading whitespace, minus
    a tail that may still change: trailing whitespace (an answer is stripped) and U+FFFD (the first
    bytes of a character whose last ones have not come yet).
    """

    def __init__(self, tokenizer, stop_ids: list[int], max_new_tokens: int, on_text: Callable[[str], None]):
        self.tokenizer, self.stop_ids, self.on_text = tokenizer, set(stop_ids), on_text
        self.max_new_tokens = max_new_tokens
        self.ids: list[int] = []
        self.shown = ""
        self.text = ""
        self.stopped = False
        self._prompt = True  # generate() first hands over the prompt

    def put(self, value) -> None:
        if self._prompt:
            self._prompt = False
            return
        for token in value.reshape(-1).tolist():
            if self.stopped or token in self.stop_ids:
                self.stopped = True
                break
            self.ids.append(token)
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True).lstrip()
        self._show(_HELD_BACK.sub("", text))

    def end(self) -> None:
        cut = not self.stopped and len(self.ids) >= self.max_new_tokens
        self.text = decode_answer(self.tokenizer, self.ids, cut)
        self._show(self.text)

    def _show(self, text: str) -> None:
        if len(text) > len(self.shown) and text.startswith(self.shown):
            self.on_text(text[len(self.shown):])
            self.shown = text


def decode_answer(tokenizer, ids: list[int], cut: bool) -> str:
    """The text of an answer's ids; an answer cut at the token limit loses a trailing partial character.

    A byte-level tokenizer can spend several tokens on one UTF-8 character (3 bytes for
    most Chinese characters); cut after the first of them, the answer would end in
    U+FFFD (31 of 160 answers of a default run did). Only a cut answer is trimmed: one
    that stopped on its own keeps whatever the model wrote.
    """
    text = tokenizer.decode(ids, skip_special_tokens=True)
    if cut:
        text = text.rstrip("\ufffd")
    return text.strip()


def own_nll(generations: list[Generation]) -> float:
    """Mean per-token NLL of greedy answers under the model that wrote them (from their log-probabilities)."""
    count = sum(len(g.logprobs) for g in generations)
    return -sum(sum(g.logprobs) for g in generations) / max(count, 1)


def _stop_ids(model, tokenizer) -> list[int]:
    stop = {tokenizer.eos_token_id}
    gen_eos = getattr(model.generation_config, "eos_token_id", None)
    stop.update(gen_eos if isinstance(gen_eos, list) else [gen_eos])
    for token in ("<|im_end|>", "<|eot_id|>", "<end_of_turn>"):
        tid = tokenizer.convert_tokens_to_ids(token)
        if isinstance(tid, int) and tid != tokenizer.unk_token_id:
            stop.add(tid)
    return sorted(t for t in stop if t is not None)


@torch.no_grad()
def answer_nll(model, tokenizer, prompts: list[str], answers: list[str] | None = None, batch_size: int = 16,
               system: str | None = None, share_prefix: bool = True,
               answer_ids: list[list[int]] | None = None) -> float:
    """Mean per-token negative log-likelihood of answers given their prompts.

    answer_ids (the tokens a model generated) replace the tokenised answer texts: a model's
    answer is the ids it wrote, which re-tokenising the decoded text need not give back.

    Sequences are left-padded, so every answer ends its row and only the last
    (longest answer + 1) positions need logits; the prompts' common prefix runs once.
    """
    device = input_device(model)
    total, count = 0.0, 0
    given = answer_ids if answer_ids is not None else [tokenizer(a, add_special_tokens=False)["input_ids"]
                                                         for a in answers]
    prompt_ids, answer_ids = [], []
    for p, ans in zip(prompts, given):
        if ans:
            prompt_ids.append(tokenize_rendered(tokenizer, render(tokenizer, p, system)))
            answer_ids.append(list(ans))
    if not answer_ids:
        return 0.0
    longest = max(len(p) + len(a) for p, a in zip(prompt_ids, answer_ids))
    pre, tails = _prefix_for(model, prompt_ids, share_prefix, longest - min(len(p) for p in prompt_ids))
    seqs = [t + a for t, a in zip(tails, answer_ids)]
    for idx in length_sorted_batches([len(s) for s in seqs], batch_size):
        batch, past = batch_for(pre, seqs, seqs, idx, tokenizer.pad_token_id)
        batch, extra = batch.to(device), past_kwargs(model, past)
        keep = min(max(len(answer_ids[i]) for i in idx) + 1, batch.input_ids.shape[1])
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=batch.position_ids,
                       use_cache=False, logits_to_keep=keep, **extra).logits.float()
        targets = batch.input_ids[:, -keep + 1:]
        logp = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, targets[..., None])[..., 0]
        for row, i in enumerate(idx):
            n = len(answer_ids[i])
            total -= logp[row, -n:].sum().item()
            count += n
    return total / max(count, 1)


@torch.no_grad()
def answer_nll_from_states(model, start: int, prompt_ids: list[list[int]], answer_ids: list[list[int]],
                           states: list[torch.Tensor], batch_size: int = 16) -> float | None:
    """answer_nll of a model whose layers below `start` are those that captured `states`.

    states[i] holds layer start's inputs at prompt_ids[i] + answer_ids[i][:-1] (Generation.states
    of the base model's answers): when training left the lower layers as they were, only the
    layers from start up and the LM head need to run, 2 of 30 layers for the default run.
    None where the LM head is more than a linear map with a known scale (logit soft-capping, Cohere's
    logit_scale): use answer_nll. Granite divides its logits by logits_scaling, as its own forward does.
    """
    config = getattr(model.config, "get_text_config", lambda: model.config)()
    if getattr(config, "final_logit_softcapping", None) or getattr(config, "logit_scale", None):
        return None
    divisor = float(getattr(config, "logits_scaling", None) or 1.0)
    device = input_device(model)
    rows = [i for i, a in enumerate(answer_ids) if a]
    if not rows:
        return 0.0
    block = TopBlock(model, start)
    block.full(pad([prompt_ids[rows[0]][:2]], 0).to(device))  # learns how the layers return their states
    seqs = {i: list(prompt_ids[i]) + list(answer_ids[i][:-1]) for i in rows}
    total, count = 0.0, 0
    for part in length_sorted_batches([len(seqs[i]) for i in rows], batch_size):
        idx = [rows[k] for k in part]
        batch = pad([seqs[i] for i in idx], 0).to(device)
        width = batch.input_ids.shape[1]
        hidden = states[idx[0]].new_zeros(len(idx), width, states[idx[0]].shape[-1])
        for row, i in enumerate(idx):
            if states[i].shape[0] != len(seqs[i]):
                raise ValueError(f"answer {i}: {states[i].shape[0]} captured states for {len(seqs[i])} positions")
            hidden[row, width - len(seqs[i]):] = states[i]
        final = block.forward(batch, hidden.to(device))
        keep = max(len(answer_ids[i]) for i in idx)
        logp = torch.log_softmax(model.get_output_embeddings()(final[:, width - keep:]).float() / divisor, -1)
        for row, i in enumerate(idx):
            n = len(answer_ids[i])
            target = torch.tensor(answer_ids[i], device=device)
            total -= logp[row, keep - n:].gather(-1, target[:, None]).sum().item()
            count += n
    return total / count
