"""Supervised fine-tuning baselines, as the LENS paper ran them, and the control it lacks.

- xsft: every parameter, on the run's own target-language (prompt, response) pairs: the same
  rows and volume as LENS (paper, Table 5: 100% of the parameters, 0.8K rows).
- xsft-full: every parameter, on all the target-language instruction data the user gives
  (--sft.full-data, streamed: the paper used the whole of Aya and Bactrian-X, 111.5K rows for
  Chinese). Without --sft.full-data it trains on the run's own rows, which makes it xsft, and says so.
- xsft-top (a control, not in the paper): exactly LENS's trained layers, so that the
  comparison isolates the objective from the number of trained weights.

Any of the paper's baselines given --train.start-layer trains only those layers instead (and is
then reported as a control). The optimiser, schedule, epochs, batch (prompts per step, each in
every trained language) and seed are LENS's (lensml.training.optimise), so runs compare step for step.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import torch

from lensml.data.instructions import Tally, check_full_data, stream_pairs
from lensml.errors import LensError
from lensml.methods.base import Method, MethodInputs
from lensml.methods.finetune import (  # noqa: F401 - re-exported: the fine-tuning pieces' historical home
    IGNORE,
    Examples,
    PackedExamples,
    build_examples,
    cache_inputs,
    cached_response_loss,
    encode_pair,
    fine_tune,
    response_loss,
    shared_length,
)
from lensml.progress import progress
from lensml.runtime.topblock import TopBlock
from lensml.training import TrainConfig, TrainResult, size_defaults, start_layer_given

log = logging.getLogger(__name__)


@dataclass
class SFTConfig:
    """Fine-tuning baselines.

    One section for xsft, xsft-full, xsft-top and qalign (lensml.methods registers them all under
    `sft`): they read responses the same way, so one setting of these options compares them fairly.
    """

    include_central: bool = field(default=False, metadata={
        "help": "xsft: also train on the central language's (prompt, response) pairs"})
    max_response_tokens: int = field(default=192, metadata={
        "help": "token budget per response (cut from the right; the end-of-turn token is kept)"})
    full_data: str | None = field(default=None, metadata={
        "help": "xsft-full: all the target-language instruction data to train on, streamed: files or hf:OWNER/NAME"
                "[:CONFIG][@SPLIT], each with an optional #prompt=COL,response=COL mapping (Alpaca, Aya, "
                "Bactrian-X and chat `messages` rows are recognised), joined by ' + ' (default: none: the run's "
                "own rows, i.e. xsft)"})

    def __post_init__(self):
        if self.max_response_tokens < 2:
            raise LensError(f"sft.max_response_tokens must be at least 2, got {self.max_response_tokens}")


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


def trainable(model, cfg: TrainConfig, full: bool) -> list[torch.nn.Parameter]:
    """Every parameter (full) or exactly LENS's trained block (cfg.start_layer)."""
    if full:
        return list(model.parameters())
    return TopBlock(model, cfg.start_layer).parameters()


class SFTMethod(Method):
    """Fine-tuning on (prompt, response) pairs; subclasses choose the pairs (pairs_of) and whose setting they are."""

    needs_subspace = False
    needs_responses = True
    #: True: a baseline of the LENS paper, which trains every parameter unless --train.start-layer is given;
    #: False: a control lensml adds, which trains LENS's top layers.
    paper_baseline: ClassVar[bool] = True

    def trains_all(self, cfg: TrainConfig) -> bool:
        return self.paper_baseline and not start_layer_given(cfg)

    def role(self, cfg: TrainConfig) -> str:
        return "paper" if self.trains_all(cfg) else "control"

    def trainable_names(self, model, cfg: TrainConfig) -> list[str]:
        ids = {id(p) for p in trainable(model, cfg, self.trains_all(cfg))}
        return [name for name, p in model.named_parameters() if id(p) in ids]

    def block(self, model, cfg: TrainConfig) -> TopBlock | None:
        """The trained top block whose inputs are cached, or None when every parameter trains."""
        return None if self.trains_all(cfg) else TopBlock(model, cfg.start_layer)

    def response_languages(self, languages: list[str], central: str, options: SFTConfig | None = None) -> list[str]:
        sft = options or SFTConfig()
        return ([central] if sft.include_central else []) + [lang for lang in languages if lang != central]

    def languages(self, inputs: MethodInputs, sft: SFTConfig) -> list[str]:
        return self.response_languages(inputs.languages, inputs.central, sft)

    def start(self, model, cfg: TrainConfig, options, section: str = "sft",
              **resolved) -> tuple[TrainConfig, list, TrainResult]:
        """(cfg with size defaults, trained parameters, an empty TrainResult saying what trains and why).

        options: the method's own config, recorded under section in the result (and so the manifest).
        """
        params = trainable(model, cfg, self.trains_all(cfg))
        total = sum(p.numel() for p in model.parameters())
        cfg = size_defaults(cfg, total)
        layers = "every parameter" if self.trains_all(cfg) else f"layers from {TopBlock(model, cfg.start_layer).start}"
        result = TrainResult(method=self.name, steps=0, lr=cfg.lr, trainable_parameters=sum(p.numel() for p in params),
                             total_parameters=total,
                             resolved={**dataclasses.asdict(cfg), section: dataclasses.asdict(options),
                                       "role": self.role(cfg), "trained": layers, **resolved})
        return cfg, params, result

    def pairs_of(self, inputs: MethodInputs, langs: list[str], n: int) -> list[list[tuple[str, str]]]:
        responses = responses_of(inputs, langs, self.name)
        return [[(row[lang], resp[lang]) for lang in langs] for row, resp in zip(inputs.rows[:n], responses[:n])]

    def train(self, model, tokenizer, inputs: MethodInputs, cfg: TrainConfig,
              log_path: Path | None = None, options: SFTConfig | None = None) -> TrainResult:
        sft = options or SFTConfig()
        langs = self.languages(inputs, sft)
        n = cfg.samples if cfg.samples is not None else len(inputs.rows)
        t0 = time.perf_counter()
        examples = build_examples(tokenizer, self.pairs_of(inputs, langs, n), cfg, sft.max_response_tokens)
        cfg, params, result = self.start(model, cfg, sft, languages=langs, instruction_rows=examples.pairs)
        result.timings_s["tokenize"] = time.perf_counter() - t0
        return fine_tune(model, tokenizer, examples, cfg, params, result, log_path, self.block(model, cfg))


class XSFTMethod(SFTMethod):
    description = "xSFT (LENS paper): fine-tune every parameter on the run's target-language (prompt, response) pairs"


class XSFTTopMethod(SFTMethod):
    description = "xSFT on LENS's layers (control, not in the paper): fine-tune only the top block LENS trains"
    paper_baseline = False


class XSFTFullMethod(SFTMethod):
    description = ("xSFT-Full (LENS paper): fine-tune every parameter on all the target-language instruction data "
                   "given by --sft.full-data (streamed)")

    def response_languages(self, languages: list[str], central: str, options: SFTConfig | None = None) -> list[str]:
        sft = options or SFTConfig()
        langs = super().response_languages(languages, central, sft)
        if sft.full_data is None:
            return langs
        check_full_data(sft.full_data, langs)  # before any model loads: sources open, rows have responses
        return []  # the run's own rows are not trained on

    def train(self, model, tokenizer, inputs: MethodInputs, cfg: TrainConfig,
              log_path: Path | None = None, options: SFTConfig | None = None) -> TrainResult:
        sft = options or SFTConfig()
        if sft.full_data is None:
            log.warning("xsft-full without --sft.full-data trains on the run's own rows: the same data as xsft, "
                        "so this run is xsft")
            result = super().train(model, tokenizer, inputs, cfg, log_path, sft)
            result.resolved["full_data"] = None
            result.resolved["note"] = ("no --sft.full-data: trained on the run's own rows, the same data as xsft, "
                                       "so this run is xsft")
            return result
        langs = super().response_languages(inputs.languages, inputs.central, sft)  # the languages trained
        t0 = time.perf_counter()
        examples, tally = PackedExamples(), Tally()
        bar = progress(desc="reading instruction data", unit=" rows")
        try:
            for pair in stream_pairs(sft.full_data, langs, tally, limit=cfg.samples):
                examples.add(*encode_pair(tokenizer, pair.prompt, pair.response, cfg.max_length,
                                          sft.max_response_tokens, cfg.system_prompt))
                bar.update()
        finally:
            bar.close()
        if len(examples) == 0:
            raise LensError(f"--sft.full-data {sft.full_data} gave no (prompt, response) pair in "
                            f"{', '.join(langs)} ({tally.as_dict()['skipped'] or 'no rows'}): check the sources")
        log.info("xsft-full: %d pairs from %s (%s)", len(examples), sft.full_data, tally.as_dict())
        cfg, params, result = self.start(model, cfg, sft, languages=langs, instruction_rows=len(examples),
                                         full_data={"sources": sft.full_data, **tally.as_dict(),
                                                    "tokens": examples.tokens})
        result.timings_s["tokenize"] = time.perf_counter() - t0
        # Streamed data are never cached (their start-layer states would not fit): with --train.start-layer,
        # every step runs the frozen layers too.
        return fine_tune(model, tokenizer, examples, cfg, params, result, log_path, None)
