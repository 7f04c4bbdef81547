"""QAlign (Zhu et al. 2024): align questions first, then instruction-tune in English.

Stage 1 teaches the model to turn a target-language question into the same question in
the central language (the parallel prompts are exactly that data); stage 2 instruction-tunes
on central-language (prompt, response) pairs. The idea is that the model then routes a
foreign question through the English it understands. As the LENS paper ran it, both stages
train every parameter (Table 5: 100%), each with its own pass of the shared optimiser and
schedule; given --train.start-layer, only those layers (a control).
"""

from __future__ import annotations

import time
from pathlib import Path

from lensml.methods.base import MethodInputs
from lensml.methods.finetune import build_examples, fine_tune
from lensml.methods.sft import SFTConfig, SFTMethod, responses_of
from lensml.training import TrainConfig, TrainResult


def stage_pairs(rows: list[dict[str, str]], responses: list[dict[str, str]] | None, central: str,
                targets: list[str]) -> tuple[list[list[tuple[str, str]]], list[list[tuple[str, str]]]]:
    """(stage 1, stage 2) training pairs per row.

    Stage 1: (question in each target language -> the same question in the central language).
    Stage 2: (central-language question -> its central-language response).
    """
    stage1 = [[(row[lang], row[central]) for lang in targets] for row in rows]
    stage2 = [[(row[central], resp[central])] for row, resp in zip(rows, responses or [])]
    return stage1, stage2


class QAlignMethod(SFTMethod):
    description = ("QAlign (LENS paper): train question translation (target -> central), then instruction-tune on "
                   "the central language; every parameter")

    def response_languages(self, languages: list[str], central: str, options: SFTConfig | None = None) -> list[str]:
        return [central]

    def train(self, model, tokenizer, inputs: MethodInputs, cfg: TrainConfig,
              log_path: Path | None = None, options: SFTConfig | None = None) -> TrainResult:
        sft = options or SFTConfig()
        responses = responses_of(inputs, [inputs.central], self.name)
        n = cfg.samples if cfg.samples is not None else len(inputs.rows)
        t0 = time.perf_counter()
        stage1, stage2 = stage_pairs(inputs.rows[:n], responses[:n], inputs.central, inputs.targets)
        ex1 = build_examples(tokenizer, stage1, cfg, sft.max_response_tokens)
        ex2 = build_examples(tokenizer, stage2, cfg, sft.max_response_tokens)
        cfg, params, result = self.start(model, cfg, sft, instruction_rows=ex1.pairs + ex2.pairs)
        result.timings_s["tokenize"] = time.perf_counter() - t0
        fine_tune(model, tokenizer, ex1, cfg, params, result, log_path, self.block(model, cfg))
        stage1_s, stage1_steps = result.timings_s["steps"], result.steps
        fine_tune(model, tokenizer, ex2, cfg, params, result, log_path, self.block(model, cfg))
        result.timings_s.update(stage1=stage1_s, stage2=result.timings_s["steps"],
                                steps=stage1_s + result.timings_s["steps"])
        result.resolved["stage1_steps"] = stage1_steps
        result.resolved["stage2_steps"] = result.steps - stage1_steps
        return result
