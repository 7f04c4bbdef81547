"""M-MMLU (`alexandrainst/m_mmlu`): instruction, option_a..d, answer A-D; local jsonl or the
release's JSON array.

lm-eval's prompt lists the lettered options after the question and scores the letter
after "Answer:".
"""

from __future__ import annotations

from lensml.evaluation.benchmarks.base import (
    LETTERS,
    HubSource,
    MCItem,
    MultipleChoiceBenchmark,
    label_field,
    letter_message,
    text_field,
)

_OPTIONS = ("option_a", "option_b", "option_c", "option_d")


class MMMLU(MultipleChoiceBenchmark):
    name = "m_mmlu"
    display_name = "M-MMLU"
    aliases = ("mmlu", "m-mmlu")
    hub = HubSource("alexandrainst/m_mmlu", "test")

    def normalise(self, row: dict, where: str, lang: str) -> MCItem:
        doc = {k: text_field(row, k, where) for k in ("instruction", *_OPTIONS)}
        return MCItem(self.name, lang, doc, label_field(row, "answer", {"A": 0, "B": 1, "C": 2, "D": 3}, where), where)

    def loglik_requests(self, item: MCItem) -> tuple[list[tuple[str, str]], list[str]]:
        d = item.doc
        context = (f"{d['instruction'].strip()}\nA. {d['option_a']}\nB. {d['option_b']}\n"
                   f"C. {d['option_c']}\nD. {d['option_d']}\nAnswer:")
        return [(context, " " + c) for c in LETTERS], list(LETTERS)

    def letter_prompt(self, item: MCItem) -> tuple[str, int]:
        d = item.doc
        head = f"Answer the following multiple-choice question.\n\nQuestion: {d['instruction'].strip()}"
        return letter_message(head, [d[k] for k in _OPTIONS])
