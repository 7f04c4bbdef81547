"""RunDir: where each part of a run folder lives, and its readers' one-line errors."""

import json

import pytest

from lensml.errors import LensError
from lensml.results.report import RunReport, TrainSummary
from lensml.results.rundir import RunDir


def _folder(tmp_path, manifest=None, report=None, model=False, steering=False, subspace=False):
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    if manifest is not None:
        run.manifest.write_text(manifest if isinstance(manifest, str) else json.dumps(manifest), encoding="utf-8")
    if report is not None:
        run.report.write_text(json.dumps(report.to_dict()), encoding="utf-8")
    if model:
        run.model.mkdir()
        (run.model / "config.json").write_text("{}")
    if steering:
        run.steering.mkdir()
    if subspace:
        run.subspace.mkdir()
    return run


def test_paths_of_the_layout(tmp_path):
    run = RunDir(str(tmp_path))  # a str is taken too
    assert run.path == tmp_path and run == RunDir(tmp_path)
    expected = {"manifest": "manifest.json", "report": "report.json", "answers": "answers.jsonl",
                "losses": "losses.jsonl", "plot": "report.png", "gguf": "model.gguf", "model": "model",
                "patch": "patch", "subspace": "subspace", "steering": "steering", "model_card": "model/README.md",
                "steering_card": "steering/README.md", "eval_dir": "eval", "eval_base": "eval/base",
                "eval_enhanced": "eval/enhanced", "eval_compare": "eval/compare.md", "analysis": "analysis"}
    for name, rel in expected.items():
        assert getattr(run, name) == tmp_path / rel, name
    assert run.card(True) == run.model_card and run.card(False) == run.steering_card
    with pytest.raises(AttributeError):
        run.path = tmp_path / "other"  # frozen: one folder, one layout


def test_read_manifest_and_base_model(tmp_path):
    run = _folder(tmp_path, {"kind": "run", "base_model": "org/base"})
    assert run.read_manifest()["kind"] == "run" and run.base_model() == "org/base"
    assert run.kind() == "run" and run.is_run()


@pytest.mark.parametrize("make, needle", [
    (lambda p: None, "does not exist or is not a folder: pass a folder written by `lens run`"),
    (lambda p: p.mkdir(), "has no manifest.json, so it is not a run folder"),
    (lambda p: (p.mkdir(), (p / "manifest.json").write_text('{"kind": ')), "manifest.json:1: not valid JSON"),
    (lambda p: (p.mkdir(), (p / "manifest.json").write_bytes(b"\xff\xfe")), "not valid JSON (not UTF-8 text)"),
    (lambda p: (p.mkdir(), (p / "manifest.json").write_text("[1]")), "not a lensml manifest (not a JSON object)"),
])
def test_read_manifest_names_the_problem_and_the_fix(tmp_path, make, needle):
    folder = tmp_path / "run"
    make(folder)
    run = RunDir(folder)
    with pytest.raises(LensError) as err:
        run.read_manifest()
    assert needle in str(err.value) and "\n" not in str(err.value)
    assert run.kind() is None and not run.is_run()  # the predicates never raise


def test_base_model_missing_and_custom_fix(tmp_path):
    run = _folder(tmp_path, {"kind": "probe"})
    with pytest.raises(LensError, match="names no base_model: pass --base"):
        run.base_model()
    assert run.kind() == "probe" and not run.is_run()
    with pytest.raises(LensError, match="has no manifest.json.*: see here"):
        RunDir(tmp_path).read_manifest(fix="see here")


def test_report_of_a_run_folder(tmp_path):
    report = RunReport("m", "en", ["en", "zh"], TrainSummary("lens", 3, 1e-3))
    assert RunReport.load(_folder(tmp_path, {"kind": "run"}, report).path) == report
    with pytest.raises(LensError, match="has no report.json: pass a folder written by `lens run` or `lens train`"):
        RunReport.load(tmp_path)
    with pytest.raises(LensError, match="does not exist"):
        RunReport.load(tmp_path / "nope")
    (tmp_path / "run" / "report.json").write_text("{not json")
    with pytest.raises(LensError, match="is not a valid report"):
        RunReport.load(tmp_path / "run")


def test_model_steering_and_containing(tmp_path):
    weights = _folder(tmp_path, {"kind": "run", "base_model": "b"}, model=True)
    assert weights.model_or_none() == weights.model and weights.steering_or_none() is None
    assert not weights.is_steer_run()
    assert RunDir.containing(weights.path) == weights == RunDir.containing(weights.model)
    assert RunDir.containing(tmp_path) is None
    steer = RunDir(tmp_path / "steer")
    steer.steering.mkdir(parents=True)
    assert not steer.is_steer_run()  # no manifest: not a run
    steer.manifest.write_text('{"kind": "train", "base_model": "b"}')
    assert steer.is_steer_run() and steer.model_or_none() is None and steer.steering_or_none() == steer.steering


def test_find_subspace(tmp_path):
    run = _folder(tmp_path, {"kind": "probe"}, subspace=True)
    assert run.find_subspace() == run.subspace
    assert RunDir(run.subspace).find_subspace() == run.subspace  # a subspace folder itself
    assert RunDir(tmp_path / "nope").find_subspace() == tmp_path / "nope"  # its reader says what is wrong
