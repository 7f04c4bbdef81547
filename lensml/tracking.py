"""What a job records besides its outputs: OUT/run.log, and the experiment trackers of --report-to.

run.log is what a person reads after the fact (a CI log scrolled away, a job killed overnight): every
stage line, the options, warnings (lensml's, Python's and transformers'), and the training loss every
STEP_LOG_EVERY steps. The step lines go to the file only (logger STEPS does not propagate), so the
terminal shows what it always did: the bar, or off a terminal the progress lines of lensml.progress;
the options line too (OPTIONS).

The trackers are the ones HF Trainer and TRL users know, with the same switch (`--report-to
tensorboard,wandb,mlflow`; default none). Each is an optional dependency, imported when a job opens it;
check_trackers runs when the options are read, so a missing package fails in one line that names
its pip extra, before any model loads. While a job runs, its Trackers are the active ones (a
context variable), so the training loop (lensml.training.optimise) reports each step with one call,
log_step, that does nothing when no tracker is open.

Where each writes: TensorBoard event files in OUT/tensorboard (`tensorboard --logdir runs` finds every
run's); MLflow and W&B where they are configured to (MLFLOW_TRACKING_URI and MLFLOW_EXPERIMENT_NAME;
WANDB_PROJECT, WANDB_MODE, WANDB_DIR), under a run named after the output folder.
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib.util
import json
import logging
import math
import os
import struct
import time
import warnings
from pathlib import Path
from typing import Iterable, Iterator

from lensml.errors import LensError

log = logging.getLogger(__name__)

#: --report-to's names -> the module each needs (its pip extra has the tracker's name: lensml[wandb]).
TRACKERS = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}
#: The training loss goes to run.log every this many steps, and at the last step.
STEP_LOG_EVERY = 10
_FILE_ONLY: list[logging.Logger] = []


def file_only(name: str) -> logging.Logger:
    """A logger whose lines go to run.log alone (it does not pass them on to the terminal's handlers)."""
    logger = logging.getLogger(name)
    logger.propagate = False
    _FILE_ONLY.append(logger)
    return logger


#: The loss every few steps (the terminal has the progress bar) and the job's options (a long line).
STEPS = file_only("lensml.steps")
OPTIONS = file_only("lensml.options")
#: Loggers that do not pass their records up to the root logger, whose warnings run.log keeps too.
_OWN_HANDLERS = ("transformers",)
_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def check_trackers(values: Iterable[str]) -> list[str]:
    """--report-to as given (a list, items may be comma-separated) -> tracker names, each one installed.

    "none" alone means none. An unknown name or a tracker whose package is missing is a one-line
    LensError, raised while the options are read, before any model loads.
    """
    names = [n.strip().lower() for v in values for n in str(v).split(",") if n.strip()]
    if "none" in names:
        if len(set(names)) > 1:
            raise LensError(f"--report-to none cannot go with {','.join(sorted(set(names) - {'none'}))}: "
                            f"give trackers, or none alone")
        return []
    unknown = [n for n in names if n not in TRACKERS]
    if unknown:
        raise LensError(f"unknown tracker '{unknown[0]}' in --report-to: choose from {', '.join(TRACKERS)} or none")
    chosen = list(dict.fromkeys(names))
    for name in chosen:
        if not _installed(TRACKERS[name]):
            raise LensError(f"--report-to {name} needs the {TRACKERS[name]} package: pip install 'lensml[{name}]'")
    return chosen


def _installed(module: str) -> bool:
    """Importable, without importing it (W&B and MLflow take seconds to import)."""
    return importlib.util.find_spec(module) is not None


def flatten(doc: dict, prefix: str = "", sep: str = ".") -> dict:
    """{"train": {"lr": 1e-3}} -> {"train.lr": 1e-3}: the flat names trackers show parameters under."""
    flat = {}
    for key, value in doc.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, name + sep, sep))
        else:
            flat[name] = value
    return flat


def numbers(doc: dict) -> dict[str, float]:
    """The finite numbers of a flat dict (booleans, None, text and NaN left out): what a tracker can plot."""
    return {k: float(v) for k, v in doc.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


# The trackers. Each takes the job's flat metrics, its config and its pictures; close() ends the tracker's run.
class _TensorBoard:
    """Event files in OUT/tensorboard, written with tensorboard's own writer (no TensorFlow, no torch wrapper)."""

    def __init__(self, folder: Path, run_name: str):
        # optional dependency (lensml[tensorboard]), imported only when asked for
        from tensorboard.compat.proto import event_pb2, summary_pb2, tensor_pb2, tensor_shape_pb2
        from tensorboard.plugins.text import plugin_data_pb2
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        self._pb = (event_pb2, summary_pb2, tensor_pb2, tensor_shape_pb2, plugin_data_pb2)
        self.folder = folder / "tensorboard"
        self.folder.mkdir(parents=True, exist_ok=True)
        self._writer = EventFileWriter(str(self.folder))
        self._step = 0

    def _write(self, summary, step: int) -> None:
        event_pb2 = self._pb[0]
        self._writer.add_event(event_pb2.Event(wall_time=time.time(), step=step, summary=summary))

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        summary_pb2 = self._pb[1]
        self._step = max(self._step, step)
        self._write(summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=k, simple_value=v)
                                               for k, v in metrics.items()]), step)

    def log_config(self, config: dict) -> None:
        _, summary_pb2, tensor_pb2, tensor_shape_pb2, plugin_data_pb2 = self._pb
        text = "\n".join(f"    {k}: {json.dumps(v, ensure_ascii=False)}" for k, v in config.items())  # markdown code
        meta = summary_pb2.SummaryMetadata(plugin_data=summary_pb2.SummaryMetadata.PluginData(
            plugin_name="text", content=plugin_data_pb2.TextPluginData(version=0).SerializeToString()))
        tensor = tensor_pb2.TensorProto(dtype="DT_STRING", string_val=[text.encode("utf-8")],
                                        tensor_shape=tensor_shape_pb2.TensorShapeProto(
                                            dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=1)]))
        self._write(summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag="config", metadata=meta,
                                                                         tensor=tensor)]), 0)

    def log_image(self, path: Path) -> None:
        summary_pb2 = self._pb[1]
        data = path.read_bytes()
        width, height, channels = png_size(data, path)
        image = summary_pb2.Summary.Image(height=height, width=width, colorspace=channels, encoded_image_string=data)
        self._write(summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=path.stem, image=image)]), self._step)

    def close(self, failed: bool) -> None:
        self._writer.close()


class _MLflow:
    """An MLflow run through MlflowClient (no global active run), where MLFLOW_TRACKING_URI points."""

    def __init__(self, folder: Path, run_name: str):
        # optional dependency (lensml[mlflow]), imported only when asked for
        from mlflow.entities import Metric, Param
        from mlflow.tracking import MlflowClient

        self._Metric, self._Param = Metric, Param
        self._client = MlflowClient()
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME", "lensml")
        experiment = self._client.get_experiment_by_name(name)
        experiment_id = experiment.experiment_id if experiment else self._client.create_experiment(name)
        self.run_id = self._client.create_run(experiment_id, run_name=run_name).info.run_id

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        now = int(time.time() * 1000)
        self._client.log_batch(self.run_id, metrics=[self._Metric(_mlflow_key(k), v, now, step)
                                                     for k, v in metrics.items()])

    def log_config(self, config: dict) -> None:
        params = [self._Param(_mlflow_key(k), (v if isinstance(v, str) else json.dumps(v, ensure_ascii=False))[:6000])
                  for k, v in config.items()]
        for i in range(0, len(params), 100):  # MLflow takes at most 100 parameters a call
            self._client.log_batch(self.run_id, params=params[i:i + 100])

    def log_image(self, path: Path) -> None:
        self._client.log_artifact(self.run_id, str(path))

    def close(self, failed: bool) -> None:
        self._client.set_terminated(self.run_id, "FAILED" if failed else "FINISHED")


def _mlflow_key(name: str) -> str:
    """MLflow keys allow letters, digits and _-. /; anything else (':' in benchmark names) becomes '_'."""
    return "".join(c if c.isalnum() or c in "_-. /" else "_" for c in name)


class _WandB:
    """A W&B run (online, or offline with WANDB_MODE=offline), in WANDB_PROJECT (default lensml)."""

    def __init__(self, folder: Path, run_name: str):
        import wandb  # optional dependency (lensml[wandb]), imported only when asked for

        self._wandb = wandb
        self._run = wandb.init(project=os.environ.get("WANDB_PROJECT", "lensml"), name=run_name)
        self._step = 0

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self._step = max(self._step, step)
        self._run.log(metrics, step=step)

    def log_config(self, config: dict) -> None:
        self._run.config.update(config, allow_val_change=True)

    def log_image(self, path: Path) -> None:
        self._run.log({path.stem: self._wandb.Image(str(path))}, step=self._step)

    def close(self, failed: bool) -> None:
        self._run.finish(exit_code=1 if failed else 0)


_BACKENDS = {"tensorboard": _TensorBoard, "wandb": _WandB, "mlflow": _MLflow}


def png_size(data: bytes, path: Path) -> tuple[int, int, int]:
    """(width, height, channels) from a PNG's header: what a TensorBoard image summary declares."""
    if data[:8] != b"\x89PNG\r\n\x1a\n" or data[12:16] != b"IHDR":
        raise LensError(f"{path} is not a PNG image: only PNG pictures go to TensorBoard")
    width, height = struct.unpack(">II", data[16:24])
    channels = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}.get(data[25], 3)
    return width, height, channels


class Trackers:
    """The trackers of one job (possibly none): each call goes to every one of them."""

    def __init__(self, backends: list | None = None):
        self.backends = backends or []

    def __bool__(self) -> bool:
        return bool(self.backends)

    def log_metrics(self, metrics: dict, step: int) -> None:
        values = numbers(metrics)
        if values:
            for backend in self.backends:
                backend.log_metrics(values, step)

    def log_config(self, config: dict) -> None:
        flat = flatten(config)
        for backend in self.backends:
            backend.log_config(flat)

    def log_image(self, path: Path) -> None:
        if Path(path).is_file():  # no matplotlib, no picture: nothing to send
            for backend in self.backends:
                backend.log_image(Path(path))

    def close(self, failed: bool = False) -> None:
        """End every tracker's run (as failed or finished); one that cannot is logged, the others still end."""
        backends, self.backends = self.backends, []
        for backend in backends:
            try:
                backend.close(failed)
            except Exception as err:  # the job's own outcome (its outputs, its error) matters more than this
                log.warning("could not end the %s run: %s", type(backend).__name__.strip("_"), err)


def open_trackers(names: list[str], folder: Path, run_name: str) -> Trackers:
    """Start a run in each tracker of names (check_trackers' output); folder: the job's output folder.

    A tracker that cannot start (no W&B login, an MLflow store it cannot reach) fails the job here,
    before the model loads, in one line; the ones already started are closed as failed.
    """
    trackers = Trackers()
    for name in names:
        try:
            trackers.backends.append(_BACKENDS[name](Path(folder), run_name))
        except LensError:
            trackers.close(failed=True)
            raise
        except Exception as err:  # each library has its own errors: all of them mean "this tracker cannot start"
            trackers.close(failed=True)
            first = (str(err).strip().splitlines() or [type(err).__name__])[0][:300]
            raise LensError(f"--report-to {name} could not start a run ({first}): {_FIX[name]}") from err
    return trackers


_FIX = {"tensorboard": "check that the output folder is writable",
        "wandb": "run `wandb login`, or set WANDB_MODE=offline",
        "mlflow": "set MLFLOW_TRACKING_URI to a server or database it can reach (MLflow 3 takes a file: folder "
                  "only with MLFLOW_ALLOW_FILE_STORE=true)"}

_ACTIVE: contextvars.ContextVar[Trackers | None] = contextvars.ContextVar("lensml_trackers", default=None)


@contextlib.contextmanager
def activate(trackers: Trackers) -> Iterator[Trackers]:
    """Make trackers the ones log_step and active() reach for the block."""
    token = _ACTIVE.set(trackers)
    try:
        yield trackers
    finally:
        _ACTIVE.reset(token)


def active() -> Trackers:
    """The running job's trackers (an empty Trackers, whose calls do nothing, outside a job)."""
    return _ACTIVE.get() or Trackers()


def log_step(record: dict, total_steps: int) -> None:
    """One optimiser step's record ({"step", the loss terms, "lr"}): to run.log every STEP_LOG_EVERY steps
    and at the last, and to the active trackers as train/<term> (the rate as train/learning_rate)."""
    step = int(record["step"])
    terms = {k: v for k, v in record.items() if k != "step"}
    if step % STEP_LOG_EVERY == 0 or step == total_steps:
        STEPS.info("step %d/%d: %s", step, total_steps, ", ".join(f"{k}={v:.6g}" for k, v in terms.items()))
    trackers = _ACTIVE.get()
    if trackers:
        trackers.log_metrics({f"train/{'learning_rate' if k == 'lr' else k}": v for k, v in terms.items()}, step)


# The run log.
def _for_run_log(record: logging.LogRecord) -> bool:
    """lensml's records at the level its loggers let through; everything else from warnings up."""
    return record.name == "lensml" or record.name.startswith("lensml.") or record.levelno >= logging.WARNING


class RunLog(logging.Handler):
    """A job's log: its records held in memory from the job's start, then written to OUT/run.log once the
    job's folder exists (write_to), until close.

    Python's warnings are routed through logging meanwhile (logging.captureWarnings), so they are in the
    file too. With no handler on the root logger (a library user who configured none), Python's
    last-resort handler is put there meanwhile, so warnings still reach stderr as they would have.
    """

    def __init__(self, capacity: int = 10_000):
        super().__init__()
        self.addFilter(_for_run_log)
        self.setFormatter(logging.Formatter(_FORMAT))
        self.capacity = capacity  # records held before the folder exists (a job's first lines: a handful)
        self._held: list[logging.LogRecord] = []
        self._file: logging.FileHandler | None = None
        root = logging.getLogger()
        own = [logging.getLogger(name) for name in _OWN_HANDLERS]
        self._loggers = [root, *_FILE_ONLY, *(logger for logger in own if not logger.propagate)]
        self._last_resort = logging.lastResort if not root.handlers and logging.lastResort is not None else None
        if self._last_resort is not None:
            root.addHandler(self._last_resort)
        for logger in self._loggers:
            logger.addHandler(self)
        before = warnings.showwarning
        logging.captureWarnings(True)
        self._captured = warnings.showwarning is not before
        self._closed = False

    @property
    def path(self) -> Path | None:
        return Path(self._file.baseFilename) if self._file is not None else None

    def emit(self, record: logging.LogRecord) -> None:
        if self._file is not None:
            self._file.emit(record)
        elif len(self._held) < self.capacity:
            self._held.append(record)

    def write_to(self, path: Path) -> None:
        """From now on write to path (appending: a resumed run's log goes on), the held records first."""
        self.acquire()
        try:
            self._file = logging.FileHandler(path, encoding="utf-8")
            self._file.setFormatter(self.formatter)
            for record in self._held:
                self._file.emit(record)
            self._held = []
        finally:
            self.release()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for logger in self._loggers:
            logger.removeHandler(self)
        if self._last_resort is not None:
            logging.getLogger().removeHandler(self._last_resort)
        if self._captured:
            logging.captureWarnings(False)
        if self._file is not None:
            self._file.close()
        self._held = []
        super().close()
