"""`lens run --resume`: an interrupted run takes up again after its last finished stage.

`lens run` stages its outputs in `.OUT.partial` beside OUT (lensml.io.staged_dir with keep),
renamed to OUT only when the run is complete, so OUT is never half-written; a run that fails or
is interrupted leaves the partial folder where it is. Its progress.json holds the options, the
inputs' hashes and the lensml version the run started with, and each stage once what the stage
hands on is on disk:

    probe            the subspace (OUT/subspace)
    eval_base        the base model's answers (checkpoints/: the answers, and the layer states they carry)
    benchmarks_base  the base model's benchmark results (OUT/eval/base; checkpoints/benchmarks_base.json)
    train            the trained model (OUT/model, OUT/patch, OUT/model.gguf; checkpoints/train_result.json)

`lens run --resume` checks options, inputs and version against progress.json and refuses any
difference, naming it (a stage finished on other options or data is not this run's stage), removes
what unfinished stages left, and skips the finished ones: the subspace is read back, the answers
and results loaded, the trained weights put into the freshly loaded base model from OUT/patch
(whose fingerprint check refuses a model that is not the base it was cut from). The stages after
them then run on the same values as in an uninterrupted run, so the report is the same. Without
--resume an earlier partial folder is replaced, and said so.

Whole stages, not training steps: what a stage hands on is small and exact (a subspace, answers,
a patch), where a mid-training checkpoint would need the optimiser and the data order as well.
A method that changes no weight (steering) keeps nothing of its training stage, which only
measures, and measures again. Not compared: the model's weights (named by the options; the patch
check covers the trained tensors) and benchmark data (named by --eval-tasks).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import shutil
import socket
from pathlib import Path
from typing import Iterator

import torch
from safetensors.torch import load_file, save_file

from lensml import __version__, distributed
from lensml.config import to_dict
from lensml.errors import LensError
from lensml.evaluation.quick import Answers
from lensml.export.modelfile import NAME as MODELFILE
from lensml.export.patch import apply_patch
from lensml.io import folder_size, pid_alive, write_json_atomic
from lensml.recipes.config import RunConfig
from lensml.recipes.stages import Inputs, Stages, output_dir
from lensml.results.rundir import RunDir
from lensml.training import TrainResult

log = logging.getLogger(__name__)

FORMAT = 1
#: Options that say where and how the results go, not what they are: a resume may change them.
IGNORED = ("out", "overwrite", "push_to_hub", "push_patch", "report_to")


def partial_folder(out: Path) -> Path:
    """Where `lens run` stages OUT (and leaves it when interrupted): `.OUT.partial` beside it."""
    return out.parent / f".{out.name}.partial"


def _outputs(run: RunDir, stage: str) -> list[Path]:
    """What a finished stage left in the folder; on resume everything else there is removed."""
    return {"probe": [run.subspace], "eval_base": [], "benchmarks_base": [run.eval_base],
            "train": [run.model, run.patch, run.gguf, run.gguf.parent / MODELFILE, run.losses]}[stage]


def _flat(doc: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in doc.items():
        if isinstance(value, dict) and value:
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def options_of(cfg: RunConfig) -> dict:
    """The options that decide what the run computes, dotted name -> value as JSON holds it."""
    flat = _flat(json.loads(json.dumps(to_dict(cfg), default=str)))
    return {k: v for k, v in flat.items() if k.split(".")[0] not in IGNORED}


def input_hashes(inputs: Inputs) -> dict[str, str | None]:
    """sha256 of the data each role read (None: not read), whatever its source (file, Hub, embedded)."""
    def digest(value) -> str | None:
        if value is None:
            return None
        return hashlib.sha256(json.dumps(value, sort_keys=True, ensure_ascii=False).encode()).hexdigest()
    return {"probe": digest(inputs.probe_texts), "train": digest(inputs.train_rows), "eval": digest(inputs.held_out)}


def _shown(value) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 40 else text[:37] + "..."


def _difference(folder: Path, then: dict, now: dict) -> str | None:
    """What differs between the run in folder and this one, in a clause; None when nothing does."""
    if then.get("format") != now["format"] or then.get("lensml") != now["lensml"]:
        return f"{folder} was written by lensml {then.get('lensml')}, this is {now['lensml']}"
    old, new = then.get("options") or {}, now["options"]
    keys = [k for k in sorted(set(old) | set(new)) if old.get(k, "(unset)") != new.get(k, "(unset)")]
    if keys:
        shown = "; ".join(f"{k}: {_shown(old.get(k, '(unset)'))} then, {_shown(new.get(k, '(unset)'))} now"
                          for k in keys[:2])
        more = f"; and {len(keys) - 2} more" if len(keys) > 2 else ""
        return f"{folder} was started with other options ({shown}{more})"
    old, new = then.get("inputs") or {}, now["inputs"]
    roles = [r for r in new if old.get(r) != new[r]]
    if roles:
        r = roles[0]
        return (f"the {r} data differ from those {folder} was started with "
                f"(sha256 {str(old.get(r))[:12]} then, {str(new[r])[:12]} now)")
    return None


def _read_progress(folder: Path) -> dict | None:
    """The partial folder's progress.json; None for no folder or an empty one; a folder that is not one is refused."""
    if not folder.exists() and not folder.is_symlink():
        return None
    if folder.is_dir() and not folder.is_symlink() and next(folder.iterdir(), None) is None:
        return None
    path = RunDir(folder).progress
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise LensError(f"{folder} is in the way of this run and holds no readable progress.json, so it is not an "
                        f"unfinished lensml run: remove it") from err
    if not isinstance(doc, dict) or not isinstance(doc.get("finished"), dict):
        raise LensError(f"{path} is not a lensml progress record: remove {folder}")
    return doc


def _owner() -> dict:
    return {"pid": os.getpid(), "host": socket.gethostname()}


class Checkpoints:
    """A run's partial folder: which stages finished, and what they handed on. Inactive (folder None)
    on a data-parallel helper process, which keeps nothing."""

    def __init__(self, folder: Path | None, progress: dict | None = None):
        self.folder = folder
        self.progress = progress or {"finished": {}}
        self._closed = False

    @property
    def run(self) -> RunDir:
        return RunDir(self.folder)

    def _file(self, name: str) -> Path:
        return self.run.checkpoints / name

    def done(self, stage: str) -> bool:
        return self.folder is not None and stage in self.progress["finished"]

    def skip(self, stages: Stages, stage: str) -> bool:
        """True when the interrupted run finished stage (its times then go to stages), so it is not done again."""
        if not self.done(stage):
            return False
        stages.resumed(stage, self.progress["finished"][stage])
        return True

    def finished(self, stages: Stages, stage: str, *parts: str) -> None:
        """Record stage as finished, with its times (parts: the Stages names it took), once its outputs are on disk."""
        if self.folder is None:
            return
        self.progress["finished"][stage] = {p: stages.timings[p] for p in (parts or (stage,)) if p in stages.timings}
        write_json_atomic(self.run.progress, self.progress)

    # What the stages hand on, written before finished() and read back on resume.
    def save_answers(self, answers: Answers) -> None:
        if self.folder is None:
            return
        doc = {f.name: getattr(answers, f.name) for f in dataclasses.fields(Answers)
               if f.name not in ("central_states", "prefill")}  # the prefill store lives in memory only
        states = answers.central_states
        if states:  # None: none captured (answer_after then runs the whole model); never an empty list
            path = self._file("base_states.safetensors")
            path.parent.mkdir(exist_ok=True)
            save_file({"states": torch.cat([s.detach().to("cpu") for s in states]).contiguous(),
                       "lengths": torch.tensor([s.shape[0] for s in states])}, str(path))
            doc["states_device"] = str(states[0].device)
        write_json_atomic(self._file("base_answers.json"), doc)

    def load_answers(self) -> Answers:
        doc = json.loads(self._file("base_answers.json").read_text(encoding="utf-8"))
        device = doc.pop("states_device", None)
        states = None
        if device is not None:
            saved = load_file(str(self._file("base_states.safetensors")))
            device = device if device == "cpu" or torch.cuda.is_available() else "cpu"
            states = [s.to(device) for s in torch.split(saved["states"], saved["lengths"].tolist())]
        return Answers(**doc, central_states=states)

    def save_json(self, name: str, doc) -> None:
        if self.folder is not None:
            write_json_atomic(self._file(f"{name}.json"), doc)

    def load_json(self, name: str):
        return json.loads(self._file(f"{name}.json").read_text(encoding="utf-8"))

    def save_train(self, result: TrainResult) -> None:
        self.save_json("train_result", dataclasses.asdict(result))

    def load_train(self, model) -> TrainResult:
        """The trained weights put into model (the base, freshly loaded) from OUT/patch, and what training reported."""
        apply_patch(model, self.run.patch)
        return TrainResult(**self.load_json("train_result"))

    def close(self) -> None:
        """Remove the bookkeeping: the folder is about to become OUT, which holds outputs only."""
        if self.folder is None:
            return
        self._closed = True
        self.run.progress.unlink(missing_ok=True)
        shutil.rmtree(self.run.checkpoints, ignore_errors=True)

    def after_failure(self, out: Path) -> None:
        """Keep the folder when a stage finished (say where, and how to take it up); else nothing is worth keeping."""
        if self.folder is None or not self.folder.is_dir():
            return
        finished = list(self.progress["finished"])
        if self._closed or not finished:
            shutil.rmtree(self.folder, ignore_errors=True)
            return
        log.warning("%s not written; kept what the finished stages (%s) computed in %s: run the same command with "
                    "--resume to take up from there", out, ", ".join(finished), self.folder)


def checkpoints(out: Path, cfg: RunConfig, inputs: Inputs, resume: bool) -> Checkpoints:
    """The partial folder this run stages in: taken up (resume) or started afresh. Checked before the model loads."""
    if resume and distributed.world_size() > 1:
        raise LensError("--resume takes up a run in one process: run it without torchrun, or start over without "
                        "--resume")
    if not distributed.is_main():
        return Checkpoints(None)
    folder = partial_folder(out)
    now = {"format": FORMAT, "lensml": __version__, "options": options_of(cfg), "inputs": input_hashes(inputs)}
    then = _read_progress(folder)
    if then is not None and then.get("host") == socket.gethostname() and then.get("pid") != os.getpid() \
            and isinstance(then.get("pid"), int) and pid_alive(then["pid"]):
        raise LensError(f"{folder} is being written by another lens run (process {then['pid']}): wait for it to end, "
                        f"choose another --out, or remove {folder} if that process is not lens")
    finished: dict = {}
    if resume and then is not None:
        differs = _difference(folder, then, now)
        if differs:
            raise LensError(f"cannot resume {out}: {differs}: rerun with the same options and data, or without "
                            f"--resume to start over")
        finished = {s: t for s, t in then["finished"].items() if isinstance(t, dict)}
        run = RunDir(folder)
        _prune(folder, {run.progress, run.checkpoints, run.run_log,  # the interrupted run's log goes on
                        *(p for s in finished for p in _outputs(run, s))})
        log.info("resuming %s from %s: %s finished", out, folder, ", ".join(finished) or "no stage")
    else:
        if resume:
            log.warning("--resume: no unfinished run of %s to take up (no %s): starting from the beginning", out,
                        folder)
        if then is not None or folder.is_dir():
            if then is not None:
                log.warning("replacing %s (%.1f MB), left by an unfinished run of %s (finished: %s): pass --resume to "
                            "take it up instead", folder, folder_size(folder) / 1e6, out,
                            ", ".join(then["finished"]) or "no stage")
            shutil.rmtree(folder)
    folder.mkdir(exist_ok=True)
    progress = {**now, **_owner(), "finished": finished}
    write_json_atomic(RunDir(folder).progress, progress)
    return Checkpoints(folder, progress)


def _prune(folder: Path, keep: set[Path]) -> None:
    """Remove everything under folder but the kept paths (and the folders on the way to them)."""
    for entry in folder.iterdir():
        if entry in keep:
            continue
        real_dir = entry.is_dir() and not entry.is_symlink()
        if real_dir and any(entry in k.parents for k in keep):
            _prune(entry, keep)
        elif real_dir:
            shutil.rmtree(entry)
        else:
            entry.unlink()


@contextlib.contextmanager
def staged_output(out: Path, overwrite: bool, ckpt: Checkpoints) -> Iterator[Path]:
    """stages.output_dir in the run's partial folder: OUT when complete, the finished stages kept when not."""
    try:
        with output_dir(out, overwrite, keep=ckpt.folder) as tmp:
            yield tmp
            ckpt.close()
    except BaseException:
        ckpt.after_failure(out)
        raise
