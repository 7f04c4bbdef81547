"""XStoryCloze (`juletxara/xstory_cloze`, split eval): input_sentence_1..4, sentence_quiz1/2,
answer_right_ending 1/2.

Local files: jsonl/JSON with these names, or CSV/TSV with a header using them or the
original StoryCloze names (InputSentence1..4, RandomFifthSentenceQuiz1/2,
AnswerRightEnding), which are renamed to the Hub's so both give the same prompts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from lensml.evaluation.benchmarks.base import (
    HubSource,
    MCItem,
    MultipleChoiceBenchmark,
    label_field,
    letter_message,
    read_table,
    text_field,
)

_STORY_ORIGINAL = {"InputSentence1": "input_sentence_1", "InputSentence2": "input_sentence_2",
                   "InputSentence3": "input_sentence_3", "InputSentence4": "input_sentence_4",
                   "RandomFifthSentenceQuiz1": "sentence_quiz1", "RandomFifthSentenceQuiz2": "sentence_quiz2",
                   "AnswerRightEnding": "answer_right_ending"}
_KEYS = [f"input_sentence_{i}" for i in range(1, 5)] + ["sentence_quiz1", "sentence_quiz2"]


def _story(doc: dict) -> str:
    return " ".join(doc[f"input_sentence_{i}"] for i in range(1, 5))


class XStoryCloze(MultipleChoiceBenchmark):
    name = "xstorycloze"
    display_name = "XStoryCloze"
    aliases = ("xstory_cloze",)
    hub = HubSource("juletxara/xstory_cloze", "eval")
    extensions = (".jsonl", ".json", ".csv", ".tsv")

    def read_local(self, path: Path, lang: str) -> Iterator[tuple[dict, str]]:
        suffix = path.suffix.lower()
        if suffix in (".csv", ".tsv"):
            rows = read_table(path, delimiter="\t" if suffix == ".tsv" else ",")
            return (({_STORY_ORIGINAL.get(k, k): v for k, v in row.items()}, where) for row, where in rows)
        return super().read_local(path, lang)

    def normalise(self, row: dict, where: str, lang: str) -> MCItem:
        doc = {k: text_field(row, k, where) for k in _KEYS}
        return MCItem(self.name, lang, doc, label_field(row, "answer_right_ending", {1: 0, 2: 1}, where), where)

    def loglik_requests(self, item: MCItem) -> tuple[list[tuple[str, str]], list[str]]:
        choices = [item.doc["sentence_quiz1"], item.doc["sentence_quiz2"]]
        return [(_story(item.doc), " " + c) for c in choices], choices

    def letter_prompt(self, item: MCItem) -> tuple[str, int]:
        head = f"Choose the most plausible ending of the story.\n\nStory: {_story(item.doc)}"
        return letter_message(head, [item.doc["sentence_quiz1"], item.doc["sentence_quiz2"]])
