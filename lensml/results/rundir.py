"""The layout of a run folder: the one place that knows where each output of a job lives.

`lens run`, `lens train` and `lens probe` write through these paths and every reader (`lens chat`,
`lens compare`, `lens plot`, `lens apply`, `lens train --subspace`) finds things through them, so
the layout changes in one place and a reader's error names the missing file and the job that
writes it. The formats inside the artifact folders (a model/ checkpoint, patch/, subspace/,
steering/) belong to their own writers; this class only knows where those folders are.

    OUT/manifest.json    what produced the folder (kind run/train/probe, base model, config)
    OUT/config.yaml      every option of the job, resolved: `lens run --config OUT/config.yaml` runs it again
    OUT/report.json      the RunReport (lensml.results.report: RunReport.load(OUT) reads it)
    OUT/answers.jsonl    the quick evaluation's answers, base beside enhanced
    OUT/losses.jsonl     the per-step training log, written while training runs
    OUT/run.log          the job's log: stage lines, options, warnings, the loss every few steps (lensml.tracking)
    OUT/report.png       the loss terms and fidelity before/after
    OUT/report.html      the table, pictures and answers side by side, in one page (runs with answers)
    OUT/model/           the trained checkpoint and its card (README.md), when weights changed
    OUT/patch/           the changed tensors alone (lens apply)
    OUT/model.gguf       the trained model as GGUF, when it came in as GGUF
    OUT/Modelfile        beside model.gguf: for `ollama create NAME -f OUT/Modelfile`
    OUT/subspace/        the probed language subspace
    OUT/steering/        steering settings and subspace, and their card, when no weight changed
    OUT/eval/            benchmark results: base/, enhanced/, compare.md
    OUT/analysis/        pictures made afterwards (lens plot)
    OUT/tensorboard/     TensorBoard event files, with --report-to tensorboard
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from lensml.errors import LensError

#: What to do when a folder is not what a reader needs: point at one the jobs write.
WRITTEN_BY_A_JOB = "pass a folder written by `lens run`, `lens train` or `lens probe`"

CARD = "README.md"            # the Hub's name for a model card
#: manifest["kind"] of each job that writes a folder (run, train and probe folders; `lens apply`'s checkpoint;
#: `lens sweep`'s tables): a folder whose manifest names one of them is lensml's, and --overwrite may replace it.
JOB_KINDS = ("run", "train", "probe", "apply", "sweep")
MODEL_CONFIG = "config.json"  # present in every saved transformers checkpoint


@dataclass(frozen=True)
class RunDir:
    """A run folder (finished, or the temporary folder a job is writing) and the path of each of its parts."""

    path: Path

    def __post_init__(self):
        object.__setattr__(self, "path", Path(self.path))

    @classmethod
    def containing(cls, path: str | Path) -> RunDir | None:
        """The run folder that path is, or whose part it is (OUT/model, OUT/steering); None if neither has a manifest.

        `lens chat OUT/model --compare` needs the base model, which OUT's manifest names.
        """
        path = Path(path)
        for folder in (path, path.parent):
            if cls(folder).manifest.is_file():
                return cls(folder)
        return None

    # Files at the top of the folder.
    @property
    def manifest(self) -> Path:
        return self.path / "manifest.json"

    @property
    def report(self) -> Path:
        return self.path / "report.json"

    @property
    def answers(self) -> Path:
        return self.path / "answers.jsonl"

    @property
    def losses(self) -> Path:
        return self.path / "losses.jsonl"

    @property
    def run_log(self) -> Path:
        return self.path / "run.log"

    @property
    def tensorboard(self) -> Path:
        return self.path / "tensorboard"

    @property
    def config_yaml(self) -> Path:
        return self.path / "config.yaml"

    # Only in an unfinished run's folder (.OUT.partial), removed before it becomes OUT (lensml.recipes.resume).
    @property
    def progress(self) -> Path:
        """The options and inputs the run started with, and the stages it finished."""
        return self.path / "progress.json"

    @property
    def checkpoints(self) -> Path:
        """What finished stages handed on that is not an output of its own (the base answers, the TrainResult)."""
        return self.path / "checkpoints"

    @property
    def plot(self) -> Path:
        return self.path / "report.png"

    @property
    def report_html(self) -> Path:
        return self.path / "report.html"

    @property
    def gguf(self) -> Path:
        return self.path / "model.gguf"

    # Artifact folders.
    @property
    def model(self) -> Path:
        return self.path / "model"

    @property
    def patch(self) -> Path:
        return self.path / "patch"

    @property
    def subspace(self) -> Path:
        return self.path / "subspace"

    @property
    def steering(self) -> Path:
        return self.path / "steering"

    @property
    def model_card(self) -> Path:
        """The card of a method that changed weights: beside the checkpoint, as the Hub shows it."""
        return self.model / CARD

    @property
    def steering_card(self) -> Path:
        """The card of a method that changed no weight: beside the settings that reproduce it."""
        return self.steering / CARD

    def card(self, changes_weights: bool) -> Path:
        return self.model_card if changes_weights else self.steering_card

    # Benchmarks and later analysis.
    @property
    def eval_dir(self) -> Path:
        return self.path / "eval"

    @property
    def eval_base(self) -> Path:
        return self.eval_dir / "base"

    @property
    def eval_enhanced(self) -> Path:
        return self.eval_dir / "enhanced"

    @property
    def eval_compare(self) -> Path:
        return self.eval_dir / "compare.md"

    @property
    def analysis(self) -> Path:
        return self.path / "analysis"

    # Readers: each names the problem and the fix in one line.
    def read_manifest(self, fix: str = WRITTEN_BY_A_JOB) -> dict:
        """manifest.json as a dict; fix is the advice for a folder that is not a run folder at all."""
        if not self.path.is_dir():
            raise LensError(f"run folder {self.path} does not exist or is not a folder: {fix}")
        if not self.manifest.is_file():
            raise LensError(f"{self.path} has no manifest.json, so it is not a run folder: {fix}")
        redo = f"rerun the job that wrote {self.path}"
        try:
            doc = json.loads(self.manifest.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise LensError(f"{self.manifest}:{err.lineno}: not valid JSON ({err.msg}): {redo}") from err
        except UnicodeDecodeError as err:
            raise LensError(f"{self.manifest} is not valid JSON (not UTF-8 text): {redo}") from err
        if not isinstance(doc, dict):
            raise LensError(f"{self.manifest} is not a lensml manifest (not a JSON object): {redo}")
        return doc

    def kind(self) -> str | None:
        """The job that wrote the folder per its manifest (JOB_KINDS); None for anything without a readable one."""
        try:
            kind = self.read_manifest().get("kind")
        except (LensError, OSError):
            return None
        return kind if isinstance(kind, str) else None

    def written_by_lensml(self) -> bool:
        """A folder one of lensml's jobs wrote: its manifest names the job (JOB_KINDS) and the lensml version
        that wrote it. The only kind of folder --overwrite replaces."""
        try:
            doc = self.read_manifest()
        except (LensError, OSError):
            return False
        versions = doc.get("versions")
        return doc.get("kind") in JOB_KINDS and isinstance(versions, dict) and "lensml" in versions

    def is_run(self) -> bool:
        """A folder written by `lens run` (what `lens compare` puts in its methods table)."""
        return self.kind() == "run"

    def base_model(self, fix: str = "pass --base") -> str:
        """The model the job started from (what --compare loads beside the enhanced one)."""
        base = self.read_manifest().get("base_model")
        if not isinstance(base, str) or not base:
            raise LensError(f"{self.manifest} names no base_model: {fix}")
        return base

    def model_or_none(self) -> Path | None:
        """OUT/model when the job saved a checkpoint there (methods that change weights), else None."""
        return self.model if (self.model / MODEL_CONFIG).is_file() else None

    def steering_or_none(self) -> Path | None:
        """OUT/steering when the job saved steering there (a method that changes no weight), else None."""
        return self.steering if self.steering.is_dir() else None

    def is_steer_run(self) -> bool:
        """A steering run: a manifest and steering settings, no model of its own (its model is the base)."""
        return self.manifest.is_file() and self.steering_or_none() is not None and self.model_or_none() is None

    def find_subspace(self) -> Path:
        """The probed subspace: OUT/subspace of a run, train or probe folder, or the path itself (a subspace folder).

        The subspace's own reader (LanguageSubspace.from_pretrained) checks what is there, a missing folder
        included, and names the fix.
        """
        return self.subspace if self.subspace.is_dir() else self.path
