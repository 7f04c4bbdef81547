"""Chat templating and tokenisation of prompts, done once and right.

The LENS authors' code re-tokenises the templated string with special tokens
(a second BOS on Llama-3), truncates from the right (cutting the generation
prompt) and reads position -1 under right padding (a pad token). Here the
template is rendered once, tokenised without adding special tokens, truncated
from the left (keeping a leading BOS), and the last real token is located from
the attention mask whatever the padding side.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lensml.errors import LensError


@dataclass
class Batch:
    """A padded batch with explicit positions, so padding never shifts RoPE.

    past_length > 0: the ids follow a cached prefix of that many tokens (lensml.runtime.shared_prefix); the
    mask then covers prefix and ids, and last_index counts within the ids.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    past_length: int = 0

    def to(self, device) -> "Batch":
        return Batch(self.input_ids.to(device), self.attention_mask.to(device), self.position_ids.to(device),
                     self.past_length)

    @property
    def last_index(self) -> torch.Tensor:
        return last_token_index(self.attention_mask) - self.past_length

    @property
    def own_mask(self) -> torch.Tensor:
        """The mask of the ids themselves (without a cached prefix)."""
        return self.attention_mask[:, self.past_length:]


def render(tokenizer, messages: list[dict] | str, system: str | None = None, generation_prompt: bool = True) -> str:
    """Render a user prompt (or a whole conversation) with the model's chat template.

    A template error (one that tries to leave Jinja's sandbox, bad syntax, its own raise_exception)
    is a one-line LensError, not a traceback from inside jinja2.
    """
    if isinstance(messages, str):
        messages = [{"role": "user", "content": messages}]
    if system is not None:
        messages = [{"role": "system", "content": system}, *messages]
    try:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation_prompt)
    except Exception as err:  # jinja2's errors, matched by module: jinja2 is transformers' optional dependency
        if type(err).__module__.split(".")[0] != "jinja2":
            raise
        raise template_error(err, "the chat template") from err


def template_error(err: Exception, source: str) -> LensError:
    """One line for a chat template that jinja2 refused, saying which template and why."""
    first = str(err).splitlines()[0] if str(err) else type(err).__name__
    if type(err).__name__ == "SecurityError":
        return LensError(f"{source} is refused: it tries to reach Python internals outside Jinja's sandbox ({first}); "
                         f"use a template that only formats the messages (--template FILE)")
    if type(err).__name__ == "TemplateSyntaxError":
        return LensError(f"{source} is not a valid Jinja template ({first}): fix it or pass --template FILE")
    return LensError(f"{source} failed to render a conversation ({type(err).__name__}: {first}): "
                     f"fix it or pass --template FILE")


def check_template(tokenizer, source: str) -> None:
    """Render one user turn now, so that a template jinja2 refuses fails when the model loads, not mid-run."""
    try:
        tokenizer.apply_chat_template([{"role": "user", "content": "Hello"}], tokenize=False, add_generation_prompt=True)
    except Exception as err:  # see render
        if type(err).__module__.split(".")[0] != "jinja2":
            raise
        raise template_error(err, source) from err


def tokenize_rendered(tokenizer, text: str, max_length: int | None = None) -> list[int]:
    """Token ids of an already templated string, cut from the left to max_length."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if max_length is not None and len(ids) > max_length:
        bos = tokenizer.bos_token_id
        if bos is not None and ids[0] == bos:
            ids = [bos] + ids[len(ids) - max_length + 1:]
        else:
            ids = ids[len(ids) - max_length:]
    return ids


def encode_prompts(tokenizer, prompts: list[str], max_length: int | None = None, system: str | None = None) -> list[list[int]]:
    """Template and tokenise user prompts; returns unpadded id lists."""
    return [tokenize_rendered(tokenizer, render(tokenizer, p, system), max_length) for p in prompts]


def pad(sequences: list[list[int]], pad_id: int, side: str = "left", width: int | None = None) -> Batch:
    """Pad id lists into a Batch (to width, default the longest); positions count real tokens only."""
    if side not in ("left", "right"):
        raise ValueError(f"padding side must be left or right, got {side}")
    width = max(len(s) for s in sequences) if width is None else width
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for i, seq in enumerate(sequences):
        sl = slice(width - len(seq), width) if side == "left" else slice(0, len(seq))
        ids[i, sl] = torch.tensor(seq, dtype=torch.long)
        mask[i, sl] = 1
    return Batch(ids, mask, position_ids_from_mask(mask))


def position_ids_from_mask(mask: torch.Tensor) -> torch.Tensor:
    return (mask.cumsum(-1) - 1).clamp(min=0)


def last_token_index(mask: torch.Tensor) -> torch.Tensor:
    """Index of the last real token per row, for left or right padding."""
    positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
    return (positions * mask).argmax(dim=1)


def gather_last(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(b, T, d) -> (b, d): the state at each row's last real token."""
    idx = last_token_index(mask)
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), idx]


def masked_mean(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(b, T, d) -> (b, d): mean over real tokens only."""
    m = mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1)


def length_sorted_batches(lengths: list[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar length (less padding, same results)."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
