"""OUT/run.log and the experiment trackers of --report-to (lensml.tracking), all offline.

One tiny `lens run` reports to every tracker installed; TensorBoard's event files, MLflow's file store
and W&B's offline run are read back and compared with the run's own losses.jsonl and report.json. The
W&B and MLflow tests skip where those packages are not installed (they are extras, not dev dependencies).
"""

import gc
import io
import importlib.util
import json
import logging
import struct
import warnings
from pathlib import Path

import pytest

from lensml import progress, tracking
from lensml.cli import build_parser, main
from lensml.cli.args import config_from
from lensml.errors import LensError
from lensml.recipes.config import RunConfig
from lensml.recipes.stages import Stages, output_dir
from lensml.results.report import RunReport
from tests.test_progress import FakeClock

INSTALLED = {name: importlib.util.find_spec(module) is not None for name, module in tracking.TRACKERS.items()}


def needs(name: str):
    return pytest.mark.skipif(not INSTALLED[name], reason=f"{name} is not installed: pip install 'lensml[{name}]'")


def tracker_env(tmp: Path) -> dict[str, str]:
    return {"MLFLOW_TRACKING_URI": (tmp / "mlruns").as_uri(), "MLFLOW_ALLOW_FILE_STORE": "true",
            "WANDB_MODE": "offline", "WANDB_DIR": str(tmp), "WANDB_SILENT": "true"}


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def messages(path: Path) -> list[str]:
    """run.log's messages, without the time, level and logger name in front."""
    return [line.split(": ", 1)[1] for line in path.read_text(encoding="utf-8").splitlines() if ": " in line]


def run_logs() -> list:
    return [h for h in logging.getLogger().handlers if isinstance(h, tracking.RunLog)]


@pytest.fixture(scope="module")
def tracked(tiny_llama, parallel_data, tmp_path_factory):
    """A `lens run` off a terminal (pytest's stderr), with a clock for the bars that says 4 s a reading,
    reporting to every tracker installed; returns (OUT, the trackers, the folder the trackers wrote in)."""
    tmp = tmp_path_factory.mktemp("tracked")
    names = [name for name in tracking.TRACKERS if INSTALLED[name]]
    out = tmp / "run"
    root = logging.getLogger()
    level = root.level
    with pytest.MonkeyPatch.context() as mp:
        for key, value in {**tracker_env(tmp), "LENSML_CACHE": str(tmp / "cache")}.items():
            mp.setenv(key, value)
        mp.setattr(progress, "time", FakeClock(4.0))
        root.setLevel(logging.INFO)  # what `lens` sets (basicConfig leaves pytest's handlers and level alone)
        try:
            code = main(["run", "--model", str(tiny_llama), "--probe-data", str(parallel_data), "--train-data",
                         str(parallel_data), "--eval.data", str(parallel_data), "--eval.samples", "2",
                         "--eval.max-new-tokens", "4", "--langs", "zh", "--lr", "1e-3", "--train.batch-size", "2",
                         "--out", str(out), "--report-to", ",".join(names) or "none"])
        finally:
            root.setLevel(level)
    assert code == 0
    return out, names, tmp


def test_run_log_has_stages_options_warnings_losses_and_progress(tracked):
    out, _, _ = tracked
    text = (out / "run.log").read_text(encoding="utf-8")
    said = messages(out / "run.log")
    for stage in ("data", "load_model", "probe", "eval_base", "train", "save", "eval_enhanced"):
        assert f"{stage}: started" in said and any(m.startswith(f"{stage}: done in ") for m in said), stage
    manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    [options] = [m for m in said if m.startswith("options: ")]
    assert json.loads(options[len("options: "):]) == manifest["config"]
    # The loss every STEP_LOG_EVERY (10) steps and at the last, as losses.jsonl has it.
    losses = jsonl(out / "losses.jsonl")
    assert len(losses) == 12
    steps = [m for m in said if m.startswith("step ")]
    assert [s.split(":")[0] for s in steps] == ["step 10/12", "step 12/12"]
    for line, record in zip(steps, (losses[9], losses[11])):
        logged = dict(kv.split("=") for kv in line.split(": ", 1)[1].split(", "))
        assert set(logged) == set(record) - {"step"}
        assert all(float(logged[k]) == pytest.approx(record[k], rel=1e-5) for k in logged)
    # Progress off a terminal: the training bar's lines (4 s a reading: one every 3 steps), transformers' loading
    # bar made the same way, and no carriage-return bar anywhere.
    training = [m for m in said if m.startswith("training: ")]
    counts = [int(m.split(",")[0].split(" ")[1].split("/")[0]) for m in training]
    assert len(training) >= 3 and counts == sorted(counts) and counts[-1] == 12
    assert any(m.startswith("Loading weights: ") for m in said)
    assert "\r" not in text
    assert not run_logs()  # the job's handler is gone with the job


def test_probe_writes_its_run_log_too(tiny_llama, parallel_data, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    out = tmp_path / "probe"
    assert main(["probe", "--model", str(tiny_llama), "--probe-data", str(parallel_data), "--langs", "zh",
                 "--out", str(out)]) == 0
    said = messages(out / "run.log")
    assert said[:2] == ["data: started", said[1]] and said[1].startswith("data: done in ")
    assert json.loads([m for m in said if m.startswith("options: ")][0][len("options: "):])["langs"] == ["zh"]
    assert "probe: started" in said and any(m.startswith("probe: done in ") for m in said)


def test_a_job_that_fails_before_its_folder_leaves_no_handler(tiny_llama, tmp_path, capsys):
    assert main(["run", "--model", str(tiny_llama), "--train-data", str(tmp_path / "missing.jsonl"),
                 "--out", str(tmp_path / "out")]) == 2
    gc.collect()
    assert not run_logs() and not (tmp_path / "out").exists()


def test_run_log_holds_the_jobs_lines_from_its_start_and_warnings_from_anywhere(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    terminal = io.StringIO()
    shown = logging.StreamHandler(terminal)  # what `lens` puts on the root logger (logging.basicConfig)
    logging.getLogger().addHandler(shown)
    run_log = tracking.RunLog()
    try:
        logging.getLogger("lensml.recipes.stages").info("data: started")  # before the folder exists: held
        logging.getLogger("urllib3").info("connection pool")  # another library's chatter stays out
        run_log.write_to(tmp_path / "run.log")
        logging.getLogger("lensml.x").warning("careful")
        logging.getLogger("transformers.modeling_utils").warning("weights not initialised")  # does not propagate
        warnings.warn("an old flag", FutureWarning)
        for step in range(1, 13):
            tracking.log_step({"step": step, "loss": 1 / step, "lr": 1e-3}, 12)
    finally:
        run_log.close()
        logging.getLogger().removeHandler(shown)
    logging.getLogger("lensml.x").warning("after the job")
    said = messages(tmp_path / "run.log")
    assert said[:3] == ["data: started", "careful", "weights not initialised"]
    assert "FutureWarning: an old flag" in said[3]
    assert said[4:] == ["step 10/12: loss=0.1, lr=0.001", "step 12/12: loss=0.0833333, lr=0.001"]
    assert "careful" in terminal.getvalue() and "step " not in terminal.getvalue()  # the terminal: as before
    assert not run_logs()


def test_report_to_is_checked_when_the_options_are_read(monkeypatch):
    assert RunConfig().report_to == [] and RunConfig(report_to=["none"]).report_to == []
    monkeypatch.setattr(tracking, "_installed", lambda module: True)
    assert RunConfig(report_to=["TensorBoard,wandb", "mlflow", "wandb"]).report_to == ["tensorboard", "wandb", "mlflow"]
    args = build_parser().parse_args(["run", "--report-to", "tensorboard", "--report-to", "mlflow,wandb"])
    assert config_from(args).report_to == ["tensorboard", "mlflow", "wandb"]  # repeated and comma-separated
    with pytest.raises(LensError, match="unknown tracker 'tensorbord' in --report-to: choose from tensorboard, "
                                        "wandb, mlflow or none"):
        RunConfig(report_to=["tensorbord"])
    with pytest.raises(LensError, match="--report-to none cannot go with wandb"):
        RunConfig(report_to=["none", "wandb"])
    monkeypatch.setattr(tracking, "_installed", lambda module: module != "wandb")
    with pytest.raises(LensError) as err:
        RunConfig(report_to=["tensorboard", "wandb"])
    assert str(err.value) == "--report-to wandb needs the wandb package: pip install 'lensml[wandb]'"


def test_a_missing_tracker_fails_before_the_model_loads(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(tracking, "_installed", lambda module: False)
    assert main(["train", "--model", str(tmp_path / "no-such-model"), "--report-to", "mlflow",
                 "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: --report-to mlflow needs the mlflow package: pip install 'lensml[mlflow]'"]


def test_a_tracker_that_cannot_start_fails_in_one_line_and_the_others_end(monkeypatch, tmp_path):
    ended = []

    class Started:  # a tracker that started (what the others do when one fails is the point here)
        def __init__(self, folder, run_name):
            pass

        def close(self, failed):
            ended.append(failed)

    class NoLogin:
        def __init__(self, folder, run_name):
            raise RuntimeError("api_key not configured (no-tty)\ncall wandb.login(key=[your_api_key])")

    monkeypatch.setitem(tracking._BACKENDS, "tensorboard", Started)
    monkeypatch.setitem(tracking._BACKENDS, "wandb", NoLogin)
    with pytest.raises(LensError) as err:
        tracking.open_trackers(["tensorboard", "wandb"], tmp_path, "run")
    assert str(err.value) == ("--report-to wandb could not start a run (api_key not configured (no-tty)): "
                              "run `wandb login`, or set WANDB_MODE=offline")
    assert ended == [True]


def test_no_tracker_no_effect(tmp_path):
    trackers = tracking.active()
    assert not trackers
    tracking.log_step({"step": 1, "loss": 0.5, "lr": 1e-3}, 10)  # outside a job: nothing to reach, no error
    trackers.log_metrics({"a": 1.0}, 1)


@needs("tensorboard")
def test_tensorboard_event_files_hold_losses_metrics_config_and_picture(tracked):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out, _, _ = tracked
    events = EventAccumulator(str(out / "tensorboard"), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    events.Reload()
    losses = jsonl(out / "losses.jsonl")
    loss = events.Scalars("train/loss")
    assert [e.step for e in loss] == list(range(1, 13))
    assert [e.value for e in loss] == pytest.approx([r["loss"] for r in losses], rel=1e-6)  # float32 in the file
    assert [e.value for e in events.Scalars("train/learning_rate")] == pytest.approx([r["lr"] for r in losses],
                                                                                      rel=1e-6)
    report = RunReport.load(out)
    q = report.quick_eval
    for tag, value in [("eval/base/zh/fidelity", q.base["zh"].fidelity),
                       ("eval/enhanced/zh/clean_fidelity", q.enhanced["zh"].clean_fidelity),
                       ("eval/base/en_nll", q.retention.base_nll), ("eval/enhanced/en_nll", q.retention.enhanced_nll),
                       ("train/trainable_share", report.train.trainable_share)]:
        [event] = events.Scalars(tag)
        assert event.step == 12 and event.value == pytest.approx(value, rel=1e-6), tag
    [image] = events.Images("report")
    png = (out / "report.png").read_bytes()
    assert image.encoded_image_string == png and (image.width, image.height) == struct.unpack(">II", png[16:24])
    texts = [e.tensor_proto.string_val[0].decode() for e in events.Tensors("config")]
    assert "train.lr: 0.001" in texts[0] and "method: \"lens\"" in texts[0]
    assert "resolved.lr: 0.001" in texts[1]


@needs("mlflow")
def test_mlflow_file_store_holds_losses_metrics_params_and_picture(tracked):
    from mlflow.tracking import MlflowClient

    out, _, tmp = tracked
    client = MlflowClient((tmp / "mlruns").as_uri())
    [run] = client.search_runs([client.get_experiment_by_name("lensml").experiment_id])
    assert run.info.run_name == "run" and run.info.status == "FINISHED"
    history = sorted(client.get_metric_history(run.info.run_id, "train/loss"), key=lambda m: m.step)
    losses = jsonl(out / "losses.jsonl")
    assert [(m.step, m.value) for m in history] == [(r["step"], pytest.approx(r["loss"])) for r in losses]
    report = RunReport.load(out)
    metrics = run.data.metrics
    assert metrics["eval/enhanced/en_nll"] == pytest.approx(report.quick_eval.retention.enhanced_nll)
    assert metrics["eval/base/en_nll"] == pytest.approx(report.quick_eval.retention.base_nll)
    assert metrics["eval/base/zh/fidelity"] == pytest.approx(report.quick_eval.base["zh"].fidelity)
    params = run.data.params
    assert params["train.lr"] == "0.001" and params["method"] == "lens" and params["resolved.lr"] == "0.001"
    assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["report.png"]


def wandb_records(path: Path) -> list:
    """The records of a W&B run file: LevelDB's log format (32 KiB blocks of checksummed chunks) after a 7-byte
    header, each record a wandb_internal_pb2.Record."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    records, pending, pos, block = [], b"", 7, 32768
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # a block's tail too short for a chunk header is padding
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        pending += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # a whole record, or the last chunk of one
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def _put(doc: dict, item) -> None:
    """An item of a history or config record into doc: ("report", "_type") -> doc["report"]["_type"]."""
    *parents, leaf = list(item.nested_key) or [item.key]
    for key in parents:
        doc = doc.setdefault(key, {})
    doc[leaf] = json.loads(item.value_json)


@needs("wandb")
def test_wandb_offline_run_holds_losses_metrics_config_and_picture(tracked):
    out, _, tmp = tracked
    [run_dir] = (tmp / "wandb").glob("offline-run-*")
    records = wandb_records(next(run_dir.glob("run-*.wandb")))
    [run] = [r.run for r in records if r.WhichOneof("record_type") == "run"]
    assert run.display_name == "run" and run.project == "lensml"
    history: dict[int, dict] = {}
    for r in records:
        if r.WhichOneof("record_type") == "history":
            for item in r.history.item:
                _put(history.setdefault(r.history.step.num, {}), item)
    losses = jsonl(out / "losses.jsonl")
    assert sorted(history) == list(range(1, 13))
    assert [history[r["step"]]["train/loss"] for r in losses] == pytest.approx([r["loss"] for r in losses])
    assert [history[r["step"]]["train/learning_rate"] for r in losses] == pytest.approx([r["lr"] for r in losses])
    report = RunReport.load(out)
    assert history[12]["eval/enhanced/zh/fidelity"] == pytest.approx(report.quick_eval.enhanced["zh"].fidelity)
    image = history[12]["report"]
    assert image["_type"] == "image-file" and (run_dir / "files" / image["path"]).is_file()
    config: dict = {}
    for r in records:
        if r.WhichOneof("record_type") == "config":
            for update in r.config.update:
                _put(config, update)
    assert config["train.lr"] == 0.001 and config["method"] == "lens" and config["resolved.lr"] == 0.001


@needs("mlflow")
def test_a_failed_job_ends_its_tracker_runs_as_failed(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    for key, value in tracker_env(tmp_path).items():
        monkeypatch.setenv(key, value)
    cfg = RunConfig(out=str(tmp_path / "out"), report_to=["mlflow"])
    stages = Stages(cfg)  # the job starts (its log and trackers are the job's while it is referenced)
    with pytest.raises(RuntimeError, match="interrupted"):
        with output_dir(Path(cfg.out), False):
            tracking.log_step({"step": 1, "loss": 0.5, "lr": 1e-3}, 10)
            raise RuntimeError("interrupted")
    client = MlflowClient((tmp_path / "mlruns").as_uri())
    [run] = client.search_runs([client.get_experiment_by_name("lensml").experiment_id])
    assert run.info.status == "FAILED" and run.data.metrics["train/loss"] == 0.5
    assert not (tmp_path / "out").exists() and not run_logs() and stages.run_log.path is not None
