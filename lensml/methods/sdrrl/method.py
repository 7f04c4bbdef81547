"""SDRRL (Zhang et al., ACL 2024) as the LENS paper compares with it: every parameter fine-tuned on a
transfer set distilled from the model's own central-language answers (lensml.methods.sdrrl.transfer).

The order matters: the model answers and (with the default translator) translates before any of its
weights change, so the teacher is the original model, as in self-distillation.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from lensml.errors import LensError
from lensml.methods.base import MethodInputs
from lensml.methods.finetune import build_examples, fine_tune
from lensml.methods.sdrrl.config import SDRRLConfig
from lensml.methods.sdrrl.transfer import Answer, Question, build_transfer_set
from lensml.methods.sdrrl.translate import check_translator, make_translator
from lensml.methods.sft import SFTMethod
from lensml.runtime.generation import generate
from lensml.runtime.langid import LanguageIdentifier
from lensml.training import TrainConfig, TrainResult

log = logging.getLogger(__name__)


class SDRRLMethod(SFTMethod):
    description = ("SDRRL (LENS paper): fine-tune every parameter on the model's own central-language answers, "
                   "translated and code-switched into each target language, beside the translated (question, answer) "
                   "pairs")

    def response_languages(self, languages: list[str], central: str, options: SDRRLConfig | None = None) -> list[str]:
        cfg = options or SDRRLConfig()
        check_translator(cfg, central, [lang for lang in languages if lang != central])  # before the model loads
        return [central] if "gold" in cfg.kinds else []

    def train(self, model, tokenizer, inputs: MethodInputs, cfg: TrainConfig,
              log_path: Path | None = None, options: SDRRLConfig | None = None) -> TrainResult:
        sd = options or SDRRLConfig()
        central, targets = inputs.central, inputs.targets
        n = cfg.samples if cfg.samples is not None else len(inputs.rows)
        responses = inputs.responses or [None] * len(inputs.rows)
        questions = [Question({lang: row[lang] for lang in inputs.languages}, dict(resp or {}))
                     for row, resp in zip(inputs.rows[:n], responses[:n])]
        t0 = time.perf_counter()
        texts, gens = generate(model, tokenizer, [q.prompts[central] for q in questions],
                               max_new_tokens=sd.max_new_tokens, batch_size=sd.batch_size, system=cfg.system_prompt,
                               desc="sdrrl: the model's own answers")
        answers = [Answer(t, g.stopped) for t, g in zip(texts, gens)]
        t1 = time.perf_counter()
        translator = make_translator(sd, central, targets, model, tokenizer)
        identify = LanguageIdentifier() if "language" in sd.filters else None
        try:
            transfer = build_transfer_set(questions, answers, central, targets, translator, sd, cfg.seed,
                                          lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"]),
                                          identify)
        finally:
            translator.close()
        t2 = time.perf_counter()
        summary = transfer.summary()
        log.info("sdrrl: transfer set of %d pairs, kept %s, dropped %s", summary["pairs"], summary["kept"],
                 summary["dropped"])
        if not transfer.pairs:
            raise LensError(f"sdrrl kept no training pair (dropped: {summary['dropped']}): use a better translator "
                            f"(--sdrrl.translator), fewer filters (--sdrrl.filters) or more --sdrrl.max-new-tokens")
        examples = build_examples(tokenizer, [[(p.prompt, p.response)] for p in transfer.pairs], cfg,
                                  sd.max_response_tokens)
        generation = {"answers": len(answers), "finished": sum(a.finished for a in answers), "decoding": "greedy",
                      "max_new_tokens": sd.max_new_tokens, "batch_size": sd.batch_size,
                      "system_prompt": cfg.system_prompt}
        cfg, params, result = self.start(model, cfg, sd, "sdrrl", instruction_rows=len(transfer.pairs),
                                         transfer_set=summary, translator=translator.describe(),
                                         generation=generation, languages=[central, *targets])
        result.timings_s.update(self_answers=t1 - t0, translate=t2 - t1, tokenize=time.perf_counter() - t2)
        return fine_tune(model, tokenizer, examples, cfg, params, result, log_path, self.block(model, cfg))
