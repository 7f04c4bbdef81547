"""QAlign (Zhu et al. 2024): align questions first, then instruction-tune in English.

Stage 1 teaches the model to turn a target-language question into the same question in
the central language (the parallel prompts are exactly that data); stage 2 instruction-tunes
on central-language (prompt, response) pairs. The idea is that the model then routes a
foreign question through the English it understands. Both stages train the same layers
as xSFT/LENS (--start-layer), each with its own pass of the shared optimiser and schedule.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from lensml.methods.base import MethodInputs
from lensml.methods.sft import _SFT, SFTConfig, build_examples, fine_tune, responses_of, trainable
from lensml.training import TrainConfig, TrainResult, size_defaults


def stage_pairs(rows: list[dict[str, str]], responses: list[dict[str, str]] | None, central: str,
                targets: list[str]) -> tuple[list[list[tuple[str, str]]], list[list[tuple[str, str]]]]:
    """(stage 1, stage 2) training pairs per row.

    Stage 1: (question in each target language -> the same question in the central language).
    Stage 2: (central-language question -> its central-language response).
    """
    stage1 = [[(row[lang], row[central]) for lang in targets] for row in rows]
    stage2 = [[(row[central], resp[central])] for row, resp in zip(rows, responses or [])]
    return stage1, stage2


class QAlignMethod(_SFT):
    description = "QAlign: train question translation (target -> central), then instruction-tune on the central language"

    def response_languages(self, languages: list[str], central: str, options: SFTConfig | None = None) -> list[str]:
        return [central]

    def train(self, model, tokenizer, inputs: MethodInputs, cfg: TrainConfig,
              log_path: Path | None = None, options: SFTConfig | None = None) -> TrainResult:
        sft = options or SFTConfig()
        responses = responses_of(inputs, [inputs.central], self.name)
        n = cfg.samples if cfg.samples is not None else len(inputs.rows)
        t0 = time.perf_counter()
        stage1, stage2 = stage_pairs(inputs.rows[:n], responses[:n], inputs.central, inputs.targets)
        ex1, ex2 = build_examples(tokenizer, stage1, cfg, sft), build_examples(tokenizer, stage2, cfg, sft)
        params = trainable(model, cfg, self.full)
        total = sum(p.numel() for p in model.parameters())
        cfg = size_defaults(cfg, total)
        result = TrainResult(method=self.name, steps=0, lr=cfg.lr, trainable_parameters=sum(p.numel() for p in params),
                             total_parameters=total, resolved={**dataclasses.asdict(cfg), "sft": dataclasses.asdict(sft)})
        result.timings_s["tokenize"] = time.perf_counter() - t0
        fine_tune(model, tokenizer, ex1, cfg, params, result, log_path, self.block(model, cfg))
        stage1_s, stage1_steps = result.timings_s["steps"], result.steps
        fine_tune(model, tokenizer, ex2, cfg, params, result, log_path, self.block(model, cfg))
        result.timings_s.update(stage1=stage1_s, stage2=result.timings_s["steps"],
                                steps=stage1_s + result.timings_s["steps"])
        result.resolved["stage1_steps"] = stage1_steps
        result.resolved["stage2_steps"] = result.steps - stage1_steps
        return result
