"""`lens sweep`: the grid, restoring the weights between settings, failures, and the files it writes."""

import csv
import json
from pathlib import Path

import pytest
import torch

from lensml.cli import main
from lensml.errors import LensError
from lensml.lens.reference_cache import fill_caches
from lensml.recipes import sweep
from lensml.recipes.stages import load_inputs
from lensml.recipes.sweep import Originals, SweepSpec, combine, layer_counts, parse_grid, read_grid_file, sweep_model
from lensml.results.rundir import RunDir
from lensml.runtime.models import ModelConfig, load_model
from tests.helpers import write_parallel_data

ROOT = Path(__file__).parents[2]


def base_options(model_dir, data) -> dict:
    """The fast options of tests/recipes/test_run.py's common(), as dotted overrides (one target language)."""
    return {"model.model": str(model_dir), "probe_data": str(data), "train_data": str(data), "eval.data": str(data),
            "eval.samples": "6", "eval.max_new_tokens": "8", "langs": "zh", "train.lr": "1e-3"}


def cli_options(model_dir, data) -> list[str]:
    return ["--model", str(model_dir), "--probe-data", str(data), "--train-data", str(data), "--eval.data", str(data),
            "--eval.samples", "6", "--eval.max-new-tokens", "8", "--langs", "zh", "--lr", "1e-3"]


@pytest.fixture
def lens():
    """The `lens` command (lensml.cli.main; `lens sweep` is lensml.cli.sweep)."""
    return main


# --- the grid ---------------------------------------------------------------------------------

def test_grid_names_are_dotted_and_values_coerced():
    lr = parse_grid("train.lr=3e-4,1e-3")
    assert [s.overrides for s in lr] == [{"train.lr": 3e-4}, {"train.lr": 1e-3}]
    assert all(isinstance(s.overrides["train.lr"], float) for s in lr)
    start = parse_grid("--start-layer=-1,-2,-4")  # aliases and dashes are accepted
    assert [s.overrides["train.start_layer"] for s in start] == [-1, -2, -4]
    assert all(type(s.overrides["train.start_layer"]) is int for s in start)
    lambdas = parse_grid("train.loss.lambdas=zh=1,sw=0.5;zh=0.25")
    assert [s.overrides["train.loss.lambdas"] for s in lambdas] == [{"zh": 1.0, "sw": 0.5}, {"zh": 0.25}]
    assert [s.overrides for s in parse_grid("train.loss.lambdas.zh=1,0.5")] == \
        [{"train.loss.lambdas.zh": 1.0}, {"train.loss.lambdas.zh": 0.5}]
    assert [s.overrides["train.loss.retain"] for s in parse_grid("train.loss.retain=mean,both")] == ["mean", "both"]
    assert [s.overrides["train.gradient_checkpointing"] for s in parse_grid("train.gradient-checkpointing=yes,0")] == \
        [True, False]
    grid = combine([lr, start])
    assert len(grid) == 6 and grid[5].overrides == {"train.lr": 1e-3, "train.start_layer": -4}
    assert grid[5].label == "lr=0.001, start_layer=-4"


@pytest.mark.parametrize("text, message", [
    ("train.nope=1,2", "unknown option 'train.nope'"),
    ("train.lr", "write NAME=V1,V2"),
    ("train.epochs=1.5", "whole number"),
    ("train.lr=fast", "cannot read 'fast'"),
    ("probe.max_length=32,64", "only train.* options can"),
    ("train.lr=", "gives no values"),
])
def test_bad_grids_are_refused_with_the_reason(text, message):
    with pytest.raises(LensError, match=message):
        parse_grid(text)


def test_an_option_in_two_grids_is_refused():
    with pytest.raises(LensError, match="set by two grids"):
        combine([parse_grid("train.lr=1e-3"), parse_grid("lr=2e-3")])
    with pytest.raises(LensError, match="set by two grids"):
        combine([parse_grid("train.loss.lambdas=zh=1"), parse_grid("train.loss.lambdas.zh=0.5")])


def test_grid_file_mapping_list_and_example(tmp_path):
    mapping = tmp_path / "grid.yaml"
    mapping.write_text("train:\n  lr: [5e-4, 1e-3]\n  loss:\n    lambda3: [1, 10]\n    lambdas: [{zh: 1}, {zh: 0.5}]\n")
    settings = combine(read_grid_file(str(mapping)))
    assert len(settings) == 8
    assert settings[-1].overrides == {"train.lr": 1e-3, "train.loss.lambda3": 10.0, "train.loss.lambdas": {"zh": 0.5}}
    listed = tmp_path / "list.yaml"
    listed.write_text("- {train.lr: 1e-3}\n- {train.lr: 5e-4, train.loss.retain: last}\n- {}\n")
    settings = combine(read_grid_file(str(listed)))
    assert [s.overrides for s in settings] == [{"train.lr": 1e-3}, {"train.lr": 5e-4, "train.loss.retain": "last"}, {}]
    assert settings[2].label == "base options"
    assert len(combine(read_grid_file(str(ROOT / "configs" / "sweep_example.yaml")))) >= 2
    (tmp_path / "bad.yaml").write_text("just text\n")
    with pytest.raises(LensError, match="must be a mapping"):
        read_grid_file(str(tmp_path / "bad.yaml"))


def test_presets_expand_to_the_papers_settings():
    assert layer_counts(4) == [1, 2, 4] and layer_counts(30) == [1, 2, 4, 8, 16, 30] and layer_counts(1) == [1]
    spec = SweepSpec(overrides={"langs": "zh,sw"}, presets=["layers"])
    assert [cfg.train.start_layer for _, cfg in spec.plan(depth=4)] == [-1, -2, -4]
    ablation = SweepSpec(overrides={"langs": "zh,sw", "train.loss.lambda1": "2"}, presets=["ablation"]).plan()
    assert [s.label for s, _ in ablation] == ["full loss", "without L1", "without push", "without L3"]
    losses = [cfg.train.loss for _, cfg in ablation]
    assert [loss.lambda1 for loss in losses] == [2.0, 0.0, 2.0, 2.0]
    assert [loss.lambdas for loss in losses] == [{}, {}, {"zh": 0.0, "sw": 0.0}, {}]
    assert [loss.lambda3 for loss in losses] == [None, None, None, 0.0]
    both = SweepSpec(grids=["train.lr=1e-3,2e-3"], presets=["layers", "ablation"]).plan(depth=2)
    assert len(both) == 2 * 2 * 4
    # One language's push weight merges into the base --lambda.
    (_, cfg), = SweepSpec(overrides={"langs": "zh,sw", "train.loss.lambdas": "zh=1,sw=0.6"},
                          grids=["train.loss.lambdas.sw=0.3"]).plan()
    assert cfg.train.loss.lambdas == {"zh": 1.0, "sw": 0.3}


def test_each_setting_is_validated_as_a_whole():
    with pytest.raises(LensError, match="setting 'lr=-1'.*train.lr must be"):
        SweepSpec(grids=["train.lr=1e-3,-1"]).plan()
    with pytest.raises(LensError, match="not trained"):
        SweepSpec(grids=["train.loss.lambdas=ja=1"]).plan()
    with pytest.raises(LensError, match="nothing to sweep"):
        SweepSpec().plan()


# --- training from the same weights -----------------------------------------------------------

def _same_as_fresh(model, model_dir):
    fresh, _, _ = load_model(ModelConfig(model=str(model_dir)))
    mine, theirs = model.state_dict(), fresh.state_dict()
    assert mine.keys() == theirs.keys()
    assert all(torch.equal(mine[k], theirs[k]) for k in mine)
    assert [(n, p.requires_grad) for n, p in model.named_parameters()] == \
        [(n, p.requires_grad) for n, p in fresh.named_parameters()]
    assert all(p.grad is None for p in model.parameters())


def test_restore_gives_the_fresh_weights_back(tiny_llama, parallel_data):
    from lensml.runtime.topblock import TopBlock

    model, _, _ = load_model(ModelConfig(model=str(tiny_llama)))
    block = {id(p) for p in TopBlock(model, -4).parameters()}
    originals = Originals(model, [n for n, p in model.named_parameters() if id(p) in block])
    with torch.no_grad():
        for p in TopBlock(model, -3).parameters():
            p.add_(1.0)
            p.grad = torch.ones_like(p)
    for p in model.parameters():
        p.requires_grad_(False)
    originals.restore()
    _same_as_fresh(model, tiny_llama)


def test_a_failing_setting_is_recorded_and_the_sweep_goes_on(tiny_llama, parallel_data, tmp_path, monkeypatch):
    built = []
    monkeypatch.setattr(sweep, "fill_caches", lambda m, caches, *a, **k: built.append([c.start for c in caches])
                        or fill_caches(m, caches, *a, **k))
    spec = SweepSpec(overrides={**base_options(tiny_llama, parallel_data), "train.samples": "8"},
                     grids=["train.lr=1e10,1e-3", "train.start_layer=-2,-1"])
    plan = spec.plan()
    inputs = load_inputs(plan[0][1], probe=True, train=True, held_out=True)
    model, tok, name = load_model(plan[0][1].model)
    result = sweep_model(model, tok, name, plan, inputs, log_dir=tmp_path / "losses")
    statuses = [s.status for s in result.settings]
    assert statuses == ["failed", "failed", "ok", "ok"], [s.error for s in result.settings]
    failed = result.settings[0]
    assert "non-finite" in failed.error and failed.quick is None and "\n" not in failed.error
    ok = result.settings[2]
    assert ok.steps == 1 and ok.quick is not None and ok.trained_layers == 2
    assert set(ok.quick.enhanced) == {"en", "zh"} and ok.quick.retention.base_nll == pytest.approx(result.base_nll)
    # The later settings trained from the original weights, not from the diverged ones.
    assert ok.nll_change is not None and abs(ok.nll_change) < 0.5
    assert len(result.answers) == 2 * 2 * 6
    assert built == [[2, 3]]  # one cache per start layer (0-based), shared by the settings, filled by one pass
    _same_as_fresh(model, tiny_llama)


# --- methods other than LENS -------------------------------------------------------------------

def test_grids_and_presets_of_other_methods():
    assert [s.overrides for s in parse_grid("steer.strength=0.5,1")] == [{"steer.strength": 0.5}, {"steer.strength": 1.0}]
    assert [cfg.sft.max_response_tokens for _, cfg in
            SweepSpec(overrides={"method": "xsft"}, grids=["sft.max-response-tokens=8,16"]).plan()] == [8, 16]
    with pytest.raises(LensError, match="preset ablation switches off the LENS loss terms"):
        SweepSpec(overrides={"method": "xsft"}, presets=["ablation"]).plan()


@pytest.fixture(scope="module")
def response_data(tmp_path_factory):
    return write_parallel_data(tmp_path_factory.mktemp("responses") / "rows.jsonl", langs=("en", "zh"), repeat=1,
                               responses=True)


@pytest.mark.parametrize("method", ["xsft", "xsft-full", "qalign", "xsft-top"])
def test_a_fine_tuning_baseline_sweeps_from_the_original_weights(method, tiny_llama, response_data):
    """No probe and no reference cache; each setting still trains from the original weights (the paper's baselines:
    every layer; the xsft-top control: the top two)."""
    spec = SweepSpec(overrides={**base_options(tiny_llama, response_data), "method": method, "train.samples": "4",
                                "eval.samples": "2"}, grids=["train.lr=1e10,1e-3"])
    plan = spec.plan()
    inputs = load_inputs(plan[0][1], probe=False, train=True, held_out=True, responses=["en", "zh"])
    model, tok, name = load_model(plan[0][1].model)
    result = sweep_model(model, tok, name, plan, inputs)
    assert [s.status for s in result.settings] == ["failed", "ok"], [s.error for s in result.settings]
    ok = result.settings[1]
    assert ok.steps >= 1 and ok.quick is not None and abs(ok.nll_change) < 0.5
    assert ok.trained_layers == (2 if method == "xsft-top" else 4)
    _same_as_fresh(model, tiny_llama)


def _hooked(model) -> bool:
    return any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


def test_steering_sweeps_and_takes_its_hooks_off_between_settings(tiny_llama, parallel_data):
    """Strength 4, then 0: were the first setting's hooks left on, the second's answers would not be the base's."""
    spec = SweepSpec(overrides={**base_options(tiny_llama, parallel_data), "method": "steer", "eval.samples": "3"},
                     grids=["steer.strength=4,0"])
    plan = spec.plan()
    inputs = load_inputs(plan[0][1], probe=True, train=True, held_out=True)
    model, tok, name = load_model(plan[0][1].model)
    result = sweep_model(model, tok, name, plan, inputs)
    assert [s.status for s in result.settings] == ["ok", "ok"], [s.error for s in result.settings]
    assert all(s.steps == 0 and s.trained_layers == 0 for s in result.settings)
    first, second = ([r for r in result.answers if r["setting"] == i] for i in (1, 2))
    assert any(r["base"] != r["enhanced"] for r in first)
    assert all(r["base"] == r["enhanced"] for r in second)
    assert not _hooked(model)
    _same_as_fresh(model, tiny_llama)


def test_sweep_command_with_another_method(lens, tiny_llama, response_data, tmp_path, capsys):
    out = tmp_path / "sweep"
    assert lens(["sweep", *cli_options(tiny_llama, response_data), "--method", "xsft", "--train-samples", "4",
                 "--eval.samples", "2", "--grid", "sft.max-response-tokens=4,8", "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip().endswith(f"wrote {out}")
    doc = json.loads((out / "sweep.json").read_text())
    assert doc["base_config"]["method"] == "xsft" and [s["status"] for s in doc["settings"]] == ["ok", "ok"]
    assert [s["overrides"] for s in doc["settings"]] == [{"sft.max_response_tokens": 4}, {"sft.max_response_tokens": 8}]


# --- the command -------------------------------------------------------------------------------

def test_sweep_command_writes_every_file(lens, tiny_llama, parallel_data, tmp_path, capsys, monkeypatch):
    built = []
    monkeypatch.setattr(sweep, "fill_caches", lambda *a, **k: built.append(a) or fill_caches(*a, **k))
    out = tmp_path / "sweep"
    assert lens(["sweep", *cli_options(tiny_llama, parallel_data), "--train-samples", "8", "--probe-samples", "8",
                 "--grid", "train.start_layer=-1,-2", "--out", str(out)]) == 0
    assert built == []  # probe and training read the same prompts: the probing pass filled both start layers' caches
    printed = capsys.readouterr().out
    assert "| 0 | base |" in printed and "| 2 | start_layer=-2 |" in printed
    assert printed.strip().endswith(f"wrote {out}")
    doc = json.loads((out / "sweep.json").read_text())
    assert doc["format"] == "lensml-sweep" and doc["languages"] == ["en", "zh"]
    assert RunDir(out).kind() == "sweep" and RunDir(out).written_by_lensml()  # so --overwrite may replace it
    assert [s["overrides"] for s in doc["settings"]] == [{"train.start_layer": -1}, {"train.start_layer": -2}]
    for s in doc["settings"]:
        assert s["status"] == "ok" and s["steps"] == 1 and s["train_s"] > 0
        assert set(s["metrics"]["zh"]) == {"base", "enhanced"} and 0 <= s["metrics"]["zh"]["enhanced"]["fidelity"] <= 1
        assert s["central_nll"]["relative_change"] is not None
    rows = list(csv.DictReader((out / "sweep.csv").open()))
    assert [r["train.start_layer"] for r in rows] == ["-1", "-2"] and "zh.clean_fidelity.enhanced" in rows[0]
    assert (out / "sweep.md").read_text().startswith("| # | setting |")
    for picture in ("layers.png", "tradeoff.png"):
        assert (out / picture).read_bytes()[:4] == b"\x89PNG"
    assert not (out / "ablation.png").exists()
    assert len((out / "losses" / "001.jsonl").read_text().splitlines()) == 1
    assert (out / "answers.jsonl").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("grid, message", [
    (["--grid", "train.nope=1,2"], "unknown option 'train.nope'"),
    (["--grid", "eval.samples=2,3"], "only train.* options can"),
    (["--grid", "train.start_layer=-9"], "outside the model's 4 decoder layers"),
    ([], "nothing to sweep"),
])
def test_bad_input_fails_in_one_line_and_writes_nothing(lens, tiny_llama, parallel_data, tmp_path, capsys, grid,
                                                        message):
    out = tmp_path / "sweep"
    assert lens(["sweep", *cli_options(tiny_llama, parallel_data), *grid, "--out", str(out)]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0]
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_existing_output_is_refused_before_any_work(lens, tiny_llama, parallel_data, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sweep, "load_model", lambda *a, **k: (_ for _ in ()).throw(AssertionError("loaded a model")))
    (tmp_path / "sweep").mkdir()
    assert lens(["sweep", *cli_options(tiny_llama, parallel_data), "--preset", "layers",
                 "--out", str(tmp_path / "sweep")]) == 2
    assert "already exists" in capsys.readouterr().err
