"""Supervised fine-tuning baselines: xSFT (top layers) and xSFT-Full (every parameter), as in the LENS paper.

The model learns target-language (prompt, response) pairs under its chat template, with the
loss on response tokens only. xSFT trains exactly the layers LENS trains (--start-layer), so
the comparison isolates the objective; xSFT-Full trains everything. The optimiser, schedule,
epochs, batch (prompts per step, each in every trained language) and seed are LENS's
(lensml.training.optimise), so the runs compare step for step.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from lensml.errors import LensError
from lensml.methods.base import Method, MethodInputs
from lensml.runtime.models import decoder_of, input_device
from lensml.runtime.shared_prefix import after, batch_for, common_prefix_length, run_prefix, shareable
from lensml.runtime.templating import length_sorted_batches, pad, render, tokenize_rendered
from lensml.runtime.topblock import TopBlock
from lensml.training import TrainConfig, TrainResult, optimise, size_defaults

IGNORE = -100


@dataclass
class SFTConfig:
    """Fine-tuning baselines.

    One section for xsft, xsft-full and qalign (lensml.methods registers them all under `sft`):
    they read responses the same way, so one setting of these options compares them fairly.
    """

    include_central: bool = field(default=False, metadata={
        "help": "xsft: also train on the central language's (prompt, response) pairs"})
    max_response_tokens: int = field(default=192, metadata={
        "help": "token budget per response (cut from the right; the end-of-turn token is kept)"})

    def __post_init__(self):
        if self.max_response_tokens < 2:
            raise LensError(f"sft.max_response_tokens must be at least 2, got {self.max_response_tokens}")


def _response_ids(tokenizer, prompt: str, response: str, system: str | None) -> list[int]:
    """Tokens of the assistant turn as the chat template writes it (response + end-of-turn).

    Rendering the whole conversation and cutting off the rendered prompt gives exactly the
    tokens the model would produce, its end-of-turn marker included; a template whose
    conversation does not start with its own generation prompt falls back to response + EOS.
    """
    prefix = render(tokenizer, prompt, system)
    full = render(tokenizer, [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}],
                  system, generation_prompt=False)
    if full.startswith(prefix) and len(full) > len(prefix):
        return tokenizer(full[len(prefix):], add_special_tokens=False)["input_ids"]
    ids = tokenizer(response, add_special_tokens=False)["input_ids"]
    return ids + ([tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else [])


def encode_pair(tokenizer, prompt: str, response: str, max_length: int, max_response: int,
                system: str | None = None) -> tuple[list[int], list[int]]:
    """(input ids, labels) of one templated pair; labels are IGNORE on the prompt.

    The prompt is templated and cut from the left to max_length, as LENS reads prompts;
    the response is cut from the right to max_response tokens, keeping its last token
    (the end-of-turn marker), so the model still learns to stop.
    """
    p = tokenize_rendered(tokenizer, render(tokenizer, prompt, system), max_length)
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
    """Tokenised training items: per row, one (ids, labels) per trained language."""

    ids: list[list[list[int]]]
    labels: list[list[list[int]]]

    def __len__(self) -> int:
        return len(self.ids)


def build_examples(tokenizer, pairs: list[list[tuple[str, str]]], cfg: TrainConfig, sft: SFTConfig) -> Examples:
    """pairs[row] is a list of (prompt, target) in each trained language."""
    ids, labels = [], []
    for row in pairs:
        enc = [encode_pair(tokenizer, p, r, cfg.max_length, sft.max_response_tokens, cfg.system_prompt) for p, r in row]
        ids.append([e[0] for e in enc])
        labels.append([e[1] for e in enc])
    return Examples(ids, labels)


def trainable(model, cfg: TrainConfig, full: bool) -> list[torch.nn.Parameter]:
    """Every parameter (xsft-full) or exactly LENS's trained block (xsft, qalign)."""
    if full:
        return list(model.parameters())
    return TopBlock(model, cfg.start_layer).parameters()


def shared_length(model, examples: Examples, enabled: bool) -> int:
    """Tokens every example starts with (the template prefix), run once per pass (lensml.runtime.shared_prefix)."""
    every = [seq for row in examples.ids for seq in row]
    return common_prefix_length(every) if shareable(model, every, enabled) else 0


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


def fine_tune(model, tokenizer, examples: Examples, cfg: TrainConfig, params: list[torch.nn.Parameter],
              result: TrainResult, log_path: Path | None = None, block: TopBlock | None = None) -> TrainResult:
    """One pass of lensml.training.optimise over examples, training params on the response loss.

    With block (only the top block trains), the layers below run once, not every step.
    """
    device = input_device(model)
    for p in model.parameters():
        p.requires_grad_(False)
    model.eval()
    hidden = None
    skip = shared_length(model, examples, cfg.share_prefix)
    if block is not None:
        t0 = time.perf_counter()
        hidden = cache_inputs(block, examples, tokenizer.pad_token_id, device, skip=skip)
        result.timings_s["input_cache"] = result.timings_s.get("input_cache", 0.0) + time.perf_counter() - t0
    for p in params:
        p.requires_grad_(True)

    def loss_of(idx: list[int]) -> torch.Tensor:
        seqs = [s for i in idx for s in examples.ids[i]]
        labs = [lab for i in idx for lab in examples.labels[i]]
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
        optimise(params, len(examples), cfg, micro_step, result, ("loss",), device, log_path)
    finally:
        model.eval()
        for p in params:
            p.requires_grad_(False)
    return result


def responses_of(inputs: MethodInputs, langs: list[str], method: str) -> list[dict[str, str]]:
    """The rows' responses in langs, or a clear error (the recipe checks this before loading the model too)."""
    if inputs.responses is None:
        raise LensError(f"method '{method}' needs a response per prompt: use training data with responses "
                        f"(the embedded data, a JSONL with \"responses\", Alpaca-style or Bactrian-X files)")
    for i, resp in enumerate(inputs.responses):
        for lang in langs:
            if not (resp or {}).get(lang):
                raise LensError(f"training row {i + 1} has no '{lang}' response: method '{method}' needs one "
                                f"in every trained language")
    return inputs.responses


class _SFT(Method):
    needs_subspace = False
    needs_responses = True
    full: bool = False

    def trainable_names(self, model, cfg: TrainConfig) -> list[str]:
        ids = {id(p) for p in trainable(model, cfg, self.full)}
        return [name for name, p in model.named_parameters() if id(p) in ids]

    def block(self, model, cfg: TrainConfig) -> TopBlock | None:
        """The trained top block whose inputs are cached, or None when every parameter trains."""
        return None if self.full else TopBlock(model, cfg.start_layer)

    def response_languages(self, languages: list[str], central: str, options: SFTConfig | None = None) -> list[str]:
        sft = options or SFTConfig()
        return ([central] if sft.include_central else []) + [lang for lang in languages if lang != central]

    def languages(self, inputs: MethodInputs, sft: SFTConfig) -> list[str]:
        return self.response_languages(inputs.languages, inputs.central, sft)

    def train(self, model, tokenizer, inputs: MethodInputs, cfg: TrainConfig,
              log_path: Path | None = None, options: SFTConfig | None = None) -> TrainResult:
        sft = options or SFTConfig()
        langs = self.languages(inputs, sft)
        responses = responses_of(inputs, langs, self.name)
        n = cfg.samples if cfg.samples is not None else len(inputs.rows)
        t0 = time.perf_counter()
        pairs = [[(row[lang], resp[lang]) for lang in langs] for row, resp in zip(inputs.rows[:n], responses[:n])]
        examples = build_examples(tokenizer, pairs, cfg, sft)
        params = trainable(model, cfg, self.full)
        total = sum(p.numel() for p in model.parameters())
        cfg = size_defaults(cfg, total)
        result = TrainResult(method=self.name, steps=0, lr=cfg.lr, trainable_parameters=sum(p.numel() for p in params),
                             total_parameters=total,
                             resolved={**dataclasses.asdict(cfg), "sft": dataclasses.asdict(sft), "languages": langs})
        result.timings_s["tokenize"] = time.perf_counter() - t0
        return fine_tune(model, tokenizer, examples, cfg, params, result, log_path, self.block(model, cfg))


class XSFTMethod(_SFT):
    description = "xSFT: fine-tune LENS's trainable layers on target-language (prompt, response) pairs"


class XSFTFullMethod(_SFT):
    description = "xSFT-Full: fine-tune every parameter on target-language (prompt, response) pairs"
    full = True
