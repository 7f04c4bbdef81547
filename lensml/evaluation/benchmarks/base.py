"""What a benchmark is: the one interface the suite, the scorer and the table talk to.

In the spirit of lm-evaluation-harness's `Task`: a benchmark says where its data live
(Hub repository and split, accepted local files, its folder under --data-dir), how a
raw row becomes a validated item, and either how an item is scored (multiple choice:
log-likelihood requests and the letter prompt) or how the whole benchmark runs
(generation: `run`). Nothing outside a benchmark's own module knows its field names,
so adding a benchmark is one module plus one line in the registry
(`lensml.evaluation.benchmarks`).

Generic loading (local file or Hub, sampling) stays in `lensml.evaluation.tasks`;
generic scoring in `lensml.evaluation.scoring`. This module imports neither, so a
benchmark module can import them without a cycle.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Iterator

from lensml.data.readers import iter_csv as read_table  # noqa: F401  (re-exported for benchmark modules)
from lensml.data.readers import iter_json_array as read_json_array
from lensml.data.readers import iter_jsonl
from lensml.errors import LensError
from lensml.runtime.langid import LanguageIdentifier

if TYPE_CHECKING:  # only for annotations: the suite imports this module
    from lensml.evaluation.suite import EvalConfig

MULTIPLE_CHOICE = "multiple_choice"
GENERATION = "generation"
LETTERS = "ABCD"


@dataclass(frozen=True)
class HubSource:
    """A Hub dataset: per-language configs (with renamings such as xwinograd ja -> jp) or one config."""

    repo: str
    split: str
    lang_alias: dict[str, str] = field(default_factory=dict)
    per_language: bool = True
    languages: tuple[str, ...] | None = None  # None: any language may be asked for

    def config_for(self, lang: str) -> str | None:
        return self.lang_alias.get(lang, lang) if self.per_language else None


@dataclass(frozen=True)
class TaskSpec:
    """One `name:lang[@path]` entry of --tasks."""

    name: str
    lang: str
    path: str | None = None

    def __str__(self) -> str:
        return f"{self.name}:{self.lang}" + (f"@{self.path}" if self.path else "")


@dataclass
class MCItem:
    """A multiple-choice item in its Hub field names; `where` locates it for error messages, `doc_id` is its
    position in the source (lm-eval's doc_id, so a sample line names the same item under --limit or --sample)."""

    task: str
    lang: str
    doc: dict
    label: int
    where: str
    doc_id: int | None = None


@dataclass
class GenerationConfig:
    """Greedy answering for generation benchmarks (MT-Bench turns)."""

    max_new_tokens: int = field(default=1024, metadata={"help": "tokens per answer (FastChat: 1024)"})
    batch_size: int = field(default=8, metadata={"help": "conversations per generation batch"})
    max_length: int = field(default=4096, metadata={"help": "longest conversation prompt in tokens (cut from the left)"})

    def __post_init__(self):
        for name in ("max_new_tokens", "batch_size", "max_length"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise LensError(f"generation.{name} must be a whole number of at least 1, got {value!r}: "
                                f"pass --generation.{name.replace('_', '-')} 1 or more")


@dataclass
class RunContext:
    """What a generation benchmark's `run` may use besides the model: options, output place, language id.

    Language identifiers are built on first use (and by `prepare`, so a missing backend
    fails before any model time is spent), and shared by every benchmark of one run.
    """

    model_name: str
    cfg: "EvalConfig"
    out_dir: Path
    stem: str
    _ids: dict = field(default_factory=dict, repr=False)

    def path(self, spec: TaskSpec, suffix: str) -> Path:
        """A per-task file beside the result: <stem>.<task>_<lang>.<suffix>."""
        return self.out_dir / f"{self.stem}.{spec.name}_{spec.lang}.{suffix}"

    @property
    def identify(self):
        if "main" not in self._ids:
            self._ids["main"] = LanguageIdentifier(self.cfg.langid)
        return self._ids["main"]

    @property
    def glotlid(self):
        if "glotlid" not in self._ids:
            self._ids["glotlid"] = (LanguageIdentifier("glotlid", self.cfg.glotlid_model)
                                    if self.cfg.glotlid_model else None)
        return self._ids["glotlid"]


class Benchmark(ABC):
    """Data location and description shared by both kinds; subclass one of the two below."""

    name: ClassVar[str] = ""
    display_name: ClassVar[str] = ""
    aliases: ClassVar[tuple[str, ...]] = ()
    kind: ClassVar[str] = ""
    hub: ClassVar[HubSource | None] = None
    extensions: ClassVar[tuple[str, ...]] = (".jsonl", ".json")
    data_dir_name: ClassVar[str | None] = None  # folder under --data-dir; None: the name
    preferred_file: ClassVar[str | None] = None  # in a folder, this file name wins (MT-Bench: question.jsonl)
    #: lensml's version of the task's prompt and scoring (the result JSON's lm-eval `versions`): raise it when a
    #: change would move the numbers, so results of different versions are not compared unawares.
    version: ClassVar[float] = 1.0
    #: metrics where lower is better (lm-eval's higher_is_better is False for them)
    lower_is_better: ClassVar[frozenset[str]] = frozenset()

    @property
    def folder(self) -> str:
        return self.data_dir_name or self.name

    def read_local(self, path: Path, lang: str) -> Iterator[tuple[dict, str]]:
        """(row, where) of a local file; JSONL and JSON arrays here, other formats in subclasses."""
        suffix = path.suffix.lower()
        if suffix == ".jsonl" and suffix in self.extensions:
            return iter_jsonl(path)
        if suffix == ".json" and suffix in self.extensions:
            return read_json_array(path)
        raise LensError(f"{path}: unsupported file type for {self.name}: use {'/'.join(self.extensions)}")

    def prepare(self, spec: TaskSpec, ctx: RunContext) -> None:
        """Checks to run before any task of the run starts (misconfiguration fails before model time is spent)."""

    def describe(self, entry: dict) -> str:
        """One line of `lens eval`'s printout for a result entry."""
        return f"{entry['task']}:{entry['language']} n={entry['n']}: {entry['metric']} {entry['value']:.4f}"

    def metrics_of(self, entry: dict) -> dict[str, tuple[float | None, float | None]]:
        """metric -> (value, standard error) of a result entry, for the lm-eval-shaped `results` section."""
        return {entry["metric"]: (entry["value"], entry.get("stderr"))}


class MultipleChoiceBenchmark(Benchmark):
    """Items with one gold choice, scored by lensml.evaluation.scoring (loglik or letter mode)."""

    kind: ClassVar[str] = MULTIPLE_CHOICE

    @abstractmethod
    def normalise(self, row: dict, where: str, lang: str) -> MCItem:
        """Check the fields the benchmark needs and return the item with its gold index."""
        raise NotImplementedError

    @abstractmethod
    def loglik_requests(self, item: MCItem) -> tuple[list[tuple[str, str]], list[str]]:
        """(context, continuation) per choice (lm-eval's prompt), and the strings acc_norm divides by."""
        raise NotImplementedError

    @abstractmethod
    def letter_prompt(self, item: MCItem) -> tuple[str, int]:
        """The user message of the letter protocol and its option count (use `letter_message`)."""
        raise NotImplementedError

    def choices(self, item: MCItem) -> list[str]:
        """The answer options as lm-eval's doc_to_choice gives them (the strings its acc_norm divides by)."""
        return self.loglik_requests(item)[1]

    def metrics_of(self, entry: dict) -> dict[str, tuple[float | None, float | None]]:
        return {name: (m["value"], m.get("stderr")) for name, m in entry.get("metrics", {}).items()} or \
            super().metrics_of(entry)

    def describe(self, entry: dict) -> str:
        pct = lambda x: "-" if x is None else f"{100 * x:.1f}"  # noqa: E731
        extra = ", ".join(f"{k} {pct(m['value'])}%" for k, m in entry.get("metrics", {}).items() if k != "acc")
        return (f"{entry['task']}:{entry['language']} {entry['mode']} n={entry['n']}: acc {pct(entry['value'])}% "
                f"± {pct(entry['stderr'])}" + (f" ({extra})" if extra else ""))


class GenerationBenchmark(Benchmark):
    """Benchmarks that generate answers and grade them (MT-Bench): the benchmark runs itself."""

    kind: ClassVar[str] = GENERATION

    @abstractmethod
    def run(self, model, tokenizer, spec: TaskSpec, ctx: RunContext) -> dict[str, Any]:
        """Answer, grade, write per-item files via ctx.path; return the result entry (task, language, mode,
        n, metric, value, stderr, timings_s)."""
        raise NotImplementedError


# ---------------------------------------------------------------- helpers for benchmark modules

def letter_message(head: str, texts: list[str]) -> tuple[str, int]:
    """The LENS letter prompt: the task line(s), lettered options, and which letters to answer with."""
    letters = LETTERS[:len(texts)]
    options = "\n".join(f"{LETTERS[i]}. {t}" for i, t in enumerate(texts))
    answer = " or ".join(letters) if len(letters) == 2 else ", ".join(letters[:-1]) + f" or {letters[-1]}"
    return f"{head}\n{options}\n\nAnswer with {answer} only.", len(texts)


def text_field(row: dict, key: str, where: str) -> str:
    value = row.get(key)
    if value is None or (isinstance(value, str) and not value.strip()):
        raise LensError(f"{where}: missing field '{key}'")
    return str(value)


def label_field(row: dict, key: str, allowed: dict, where: str) -> int:
    """The gold index of a label given as any of allowed's keys (1, "1", 1.0 all match 1)."""
    value = row.get(key)
    if value is None or (isinstance(value, str) and not value.strip()):
        raise LensError(f"{where}: missing field '{key}'")
    norm = value.strip() if isinstance(value, str) else value
    if isinstance(norm, float) and norm.is_integer():
        norm = int(norm)
    for k, v in allowed.items():
        if norm == k or str(norm) == str(k):
            return v
    raise LensError(f"{where}: {key} {value!r} out of range (expected one of {', '.join(map(str, allowed))})")
