"""XCOPA (`cambridgeltl/xcopa`; also the GitHub release's jsonl): premise, choice1, choice2,
question (cause/effect), label 0/1.

The log-likelihood prompt is lm-eval's: the premise without its final punctuation, a
connector word for "because"/"therefore" in the item's language, and each choice with
a lower-cased first letter as the continuation.
"""

from __future__ import annotations

from lensml.errors import LensError
from lensml.evaluation.benchmarks.base import (
    HubSource,
    MCItem,
    MultipleChoiceBenchmark,
    label_field,
    letter_message,
    text_field,
)

#: lm-eval's XCOPA connectors (lm_eval/tasks/xcopa/utils.py); English as in its COPA task.
XCOPA_CONNECTORS: dict[str, tuple[str, str]] = {
    "en": ("because", "therefore"), "et": ("sest", "seetõttu"), "ht": ("poukisa", "donk sa"),
    "it": ("perché", "quindi"), "id": ("karena", "maka"), "qu": ("imataq", "chaymi"),
    "sw": ("kwa sababu", "kwa hiyo"), "zh": ("因为", "所以"), "ta": ("காரணமாக", "எனவே"),
    "th": ("เพราะ", "ดังนั้น"), "tr": ("çünkü", "bu yüzden"), "vi": ("bởi vì", "vì vậy"),
}


def _lower_first(text: str) -> str:
    return text[0].lower() + text[1:]


class XCOPA(MultipleChoiceBenchmark):
    name = "xcopa"
    display_name = "XCOPA"
    hub = HubSource("cambridgeltl/xcopa", "test")

    def normalise(self, row: dict, where: str, lang: str) -> MCItem:
        doc = {k: text_field(row, k, where) for k in ("premise", "choice1", "choice2", "question")}
        if doc["question"] not in ("cause", "effect"):
            raise LensError(f"{where}: question {doc['question']!r} must be 'cause' or 'effect'")
        return MCItem(self.name, lang, doc, label_field(row, "label", {0: 0, 1: 1}, where), where)

    def loglik_requests(self, item: MCItem) -> tuple[list[tuple[str, str]], list[str]]:
        d = item.doc
        if item.lang not in XCOPA_CONNECTORS:
            raise LensError(f"no XCOPA connector words for language '{item.lang}': use one of "
                            f"{', '.join(sorted(XCOPA_CONNECTORS))}")
        cause, effect = XCOPA_CONNECTORS[item.lang]
        context = d["premise"].strip()[:-1] + f" {cause if d['question'] == 'cause' else effect}"
        choices = [_lower_first(d["choice1"]), _lower_first(d["choice2"])]
        return [(context, " " + c) for c in choices], choices

    def letter_prompt(self, item: MCItem) -> tuple[str, int]:
        d = item.doc
        relation = "cause" if d["question"] == "cause" else "effect"
        head = f"Choose the more plausible {relation} of the premise.\n\nPremise: {d['premise']}"
        return letter_message(head, [d["choice1"], d["choice2"]])
