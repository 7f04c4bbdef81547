"""The finish stage: one order of writes for every job, the card beside what the run ships."""

import pytest

from lensml import methods
from lensml.recipes import finish
from lensml.recipes.config import RunConfig
from lensml.recipes.finish import Trained, finish_run, push_folder
from lensml.recipes.stages import Stages
from lensml.results.rundir import RunDir
from lensml.training import TrainResult


@pytest.fixture
def writes(monkeypatch):
    """The files finish_run writes, in order (the writers themselves are stubbed: no matplotlib, no Hub card)."""
    order = []
    monkeypatch.setattr(finish, "write_json_atomic", lambda path, doc: order.append(path.name))
    monkeypatch.setattr(finish, "write_card", lambda run, changes, *a: order.append(str(run.card(changes).relative_to(run.path))))
    monkeypatch.setattr(finish, "plot_run", lambda report, history, path: order.append(path.name))
    return order


@pytest.mark.parametrize("method, card", [("lens", "model/README.md"), ("steer", "steering/README.md")])
def test_every_method_finishes_in_one_order(tmp_path, writes, method, card):
    result = TrainResult(method, steps=1, lr=1e-3, history=[{"step": 1, "loss": 0.5}], timings_s={"select": 0.1},
                         trainable_parameters=0, total_parameters=10)
    report = finish_run(RunDir(tmp_path), "train", RunConfig(method=method), "m", Stages(), {"train_rows": 2},
                        Trained(methods.get(method), result))
    assert writes == ["manifest.json", "report.json", card, "report.png"]
    assert report.method == method and report.train.final == {"step": 1, "loss": 0.5} and "total" in report.timings_s


def test_a_probe_finishes_with_its_manifest_alone(tmp_path, writes):
    assert finish_run(RunDir(tmp_path), "probe", RunConfig(), "m", Stages(), {"probe": None}) is None
    assert writes == ["manifest.json"]


def test_push_uploads_what_the_run_ships(tmp_path):
    run = RunDir(tmp_path)
    assert push_folder(run, methods.get("steer"), patch=True) == run.steering
    assert push_folder(run, methods.get("lens"), patch=False) == run.model
    assert push_folder(run, methods.get("lens"), patch=True) == run.patch
