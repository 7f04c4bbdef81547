"""The report of a run: one typed object that the CLI table, the plot, `lens compare` and sweeps read.

`RunReport.to_dict()` is what OUT/report.json holds (with a schema version, so
readers can tell formats apart); `RunReport.load(OUT or OUT/report.json)` reads it back. Nothing else
builds or parses report dictionaries by hand.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from lensml.errors import LensError
from lensml.evaluation.scores import METRICS, LanguageScores, QuickEval, Retention
from lensml.results.benchmark_table import comparison_table_of
from lensml.results.rundir import RunDir

SCHEMA_VERSION = 2
SIDES = ("base", "enhanced")
__all__ = ["METRICS", "SCHEMA_VERSION", "SIDES", "LanguageScores", "QuickEval", "Retention", "RunReport", "TrainSummary"]
@dataclass
class TrainSummary:
    method: str
    steps: int
    lr: float
    final: dict = field(default_factory=dict)
    trainable_parameters: int = 0
    total_parameters: int = 0
    unchanged: bool = False                 # training did not move the weights measurably (--allow-unchanged)
    relative_change: float | None = None    # largest weight change / the tensor's largest weight (export.patch)

    @property
    def trainable_share(self) -> float:
        return self.trainable_parameters / self.total_parameters if self.total_parameters else 0.0


#: The first line of the table of a run saved with --allow-unchanged: its model is the base model.
UNCHANGED = "UNCHANGED: training did not move the weights measurably; this model is the base model, not an enhanced one"


@dataclass
class RunReport:
    """Everything a run measured; OUT/report.json."""

    model: str
    central: str
    languages: list[str]
    train: TrainSummary | None = None
    quick_eval: QuickEval | None = None
    benchmarks: dict[str, dict] | None = None   # side -> the result document of lensml.evaluation.suite
    timings_s: dict[str, float] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION

    @property
    def method(self) -> str | None:
        return self.train.method if self.train else None

    def to_dict(self) -> dict:
        doc = dataclasses.asdict(self)
        if self.quick_eval is not None:
            doc["quick_eval"]["retention"]["relative_change"] = self.quick_eval.retention.relative_change
        if self.train is not None:
            doc["train"]["trainable_share"] = self.train.trainable_share
        return doc

    @classmethod
    def from_dict(cls, doc: dict) -> "RunReport":
        version = doc.get("schema_version")
        if version != SCHEMA_VERSION:
            raise LensError(f"report schema version {version!r} is not {SCHEMA_VERSION}: re-run with this lensml version")
        quick = doc.get("quick_eval")
        if quick is not None:
            quick = QuickEval(quick["samples"],
                              {lang: LanguageScores(**s) for lang, s in quick["base"].items()},
                              {lang: LanguageScores(**s) for lang, s in quick["enhanced"].items()},
                              Retention(quick["retention"]["base_nll"], quick["retention"]["enhanced_nll"]))
        train = doc.get("train")
        if train is not None:
            train = TrainSummary(**{k: train[k] for k in (f.name for f in dataclasses.fields(TrainSummary)) if k in train})
        return cls(doc["model"], doc["central"], doc["languages"], train, quick, doc.get("benchmarks"),
                   doc.get("timings_s", {}), version)

    @classmethod
    def load(cls, path: str | Path) -> "RunReport":
        """From report.json, or a run folder holding one (where: lensml.results.rundir.RunDir)."""
        path = Path(path)
        if path.is_dir():
            path = RunDir(path).report
            if not path.is_file():
                raise LensError(f"{path.parent} has no report.json: pass a folder written by `lens run` or `lens train`")
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as err:
            raise LensError(f"{path} does not exist: point at a run folder or its report.json") from err
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise LensError(f"{path} is not a valid report (not JSON): re-run the job that wrote it") from err
        return cls.from_file_doc(doc, path)

    @classmethod
    def from_file_doc(cls, doc, path: Path) -> "RunReport":
        """from_dict for a document read from path, with the file named in any error."""
        try:
            return cls.from_dict(doc)
        except (KeyError, TypeError, AttributeError) as err:
            raise LensError(f"{path} is not a lensml run report (missing {err}): re-run the job that wrote it") from err

    def table(self) -> str:
        """The before/after table the CLI prints."""
        lines = [f"model: {self.model}   method: {self.method or '-'}   central: {self.central}"]
        if self.train is not None and self.train.unchanged:
            change = self.train.relative_change
            lines.insert(0, UNCHANGED + (f" (largest relative change {change:.2g})" if change else ""))
        q = self.quick_eval
        if q is not None:  # report.json's shares, each its column; a cell reads base -> enhanced
            shares = [("fidelity", "fidelity"), ("clean", "clean_fidelity"), ("echo", "echo"), ("loop", "loop"),
                      ("empty", "empty")]
            lines += [f"held-out answers, base -> enhanced ({q.samples} prompts per language):",
                      "| lang | " + " | ".join(title for title, _ in shares) + " |", "|---" * (len(shares) + 1) + "|"]
            for lang in self.languages:
                b, e = q.base[lang], q.enhanced[lang]
                cells = [f"{_pct(getattr(b, key))} -> {_pct(getattr(e, key))}" for _, key in shares]
                lines.append(f"| {lang} | " + " | ".join(cells) + " |")
            r = q.retention
            lines.append(f"{self.central} answer NLL: base {r.base_nll:.4f}, enhanced {r.enhanced_nll:.4f} "
                         f"({100 * r.relative_change:+.2f}%)")
        if self.benchmarks and all(side in self.benchmarks for side in SIDES):
            lines.append(comparison_table_of([self.benchmarks[s] for s in SIDES], list(SIDES)))
        if self.train is not None:
            final = self.train.final.get("loss")
            lines.append(f"trained {self.train.steps} steps ({self.train.method}), peak lr {self.train.lr:.2e}, "
                         f"{100 * self.train.trainable_share:.1f}% of parameters"
                         + (f", final loss {final:.4g}" if final is not None else ""))
        if self.timings_s:
            lines.append("timings: " + ", ".join(f"{k} {v:.1f}s" for k, v in self.timings_s.items()))
        return "\n".join(lines)


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"
