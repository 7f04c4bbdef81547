"""Batched greedy generation of chat answers."""

from __future__ import annotations

import torch
from lensml.progress import progress as tqdm

from lensml.models import input_device
from lensml.templating import length_sorted_batches, pad, render, tokenize_rendered


@torch.no_grad()
def generate_answers(model, tokenizer, conversations: list[list[dict] | str], max_new_tokens: int = 64,
                     batch_size: int = 16, max_length: int = 512, system: str | None = None,
                     desc: str = "generate") -> list[str]:
    """Greedy answers to user prompts (or whole conversations ending in a user turn).

    Left padding with explicit positions, so a batched answer is the answer the
    prompt would get alone; batches are length-sorted to waste little padding.
    """
    device = input_device(model)
    ids = [tokenize_rendered(tokenizer, render(tokenizer, c, system), max_length) for c in conversations]
    answers: list[str] = [""] * len(ids)
    eos = _stop_ids(model, tokenizer)
    for idx in tqdm(length_sorted_batches([len(s) for s in ids], batch_size), desc=desc, leave=False):
        batch = pad([ids[i] for i in idx], tokenizer.pad_token_id, "left").to(device)
        out = model.generate(input_ids=batch.input_ids, attention_mask=batch.attention_mask, do_sample=False,
                             max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id, eos_token_id=eos,
                             temperature=None, top_p=None, top_k=None)
        for row, i in enumerate(idx):
            answers[i] = decode_answer(tokenizer, out[row, batch.input_ids.shape[1]:].tolist(), eos, max_new_tokens)
    return answers


def decode_answer(tokenizer, ids: list[int], stop_ids: list[int], max_new_tokens: int) -> str:
    """The text of generated ids; an answer cut at max_new_tokens loses a trailing partial character.

    A byte-level tokenizer can spend several tokens on one UTF-8 character (3 bytes for
    most Chinese characters); cut after the first of them, the answer would end in
    U+FFFD (31 of 160 answers of a default run did). Only a cut answer is trimmed: one
    that stopped on its own keeps whatever the model wrote.
    """
    text = tokenizer.decode(ids, skip_special_tokens=True)
    cut = len(ids) >= max_new_tokens and not any(t in stop_ids for t in ids)
    if cut:
        text = text.rstrip("\ufffd")
    return text.strip()


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
def answer_nll(model, tokenizer, prompts: list[str], answers: list[str], batch_size: int = 16,
               system: str | None = None) -> float:
    """Mean per-token negative log-likelihood of answers given their prompts."""
    device = input_device(model)
    total, count = 0.0, 0
    seqs, starts = [], []
    for p, a in zip(prompts, answers):
        prompt_ids = tokenize_rendered(tokenizer, render(tokenizer, p, system))
        answer_ids = tokenizer(a, add_special_tokens=False)["input_ids"]
        if not answer_ids:
            continue
        seqs.append(prompt_ids + answer_ids)
        starts.append(len(prompt_ids))
    for idx in length_sorted_batches([len(s) for s in seqs], batch_size):
        batch = pad([seqs[i] for i in idx], tokenizer.pad_token_id, "right").to(device)
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                       position_ids=batch.position_ids).logits.float()
        logp = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, batch.input_ids[:, 1:, None])[..., 0]
        for row, i in enumerate(idx):
            lo, hi = starts[i] - 1, len(seqs[i]) - 1
            total -= logp[row, lo:hi].sum().item()
            count += hi - lo
    return total / max(count, 1)
