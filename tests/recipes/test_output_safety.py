"""What a job may replace and publish: --overwrite replaces only folders lensml wrote, never the current folder,
never an unchanged model called "enhanced", and every file it writes follows the umask (safetensors included)."""

import json
import os
import stat

import pytest
import torch

from lensml.cli import main
from lensml.export.patch import weight_change
from lensml.results.rundir import RunDir

S = ["--probe-samples", "8", "--train-samples", "8", "--eval.no-enabled", "--langs", "zh"]


def args(model, data, out, *more):
    return ["run", "--model", str(model), "--probe-data", str(data), "--train-data", str(data), *S, "--out", str(out),
            *more]


def no_model_load(monkeypatch):
    """Refusals must come before any model time: loading one fails the test."""
    from lensml.recipes import apply, run, sweep

    def boom(*_a, **_k):
        raise AssertionError("a model was loaded before the output was checked")

    for module in (run, apply, sweep):
        monkeypatch.setattr(module, "load_model", boom)


def user_folder(path):
    (path / "sub").mkdir(parents=True)
    (path / "notes.txt").write_text("x")
    return path


def files_of(path):
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


@pytest.fixture(scope="module")
def run_022(tiny_llama, parallel_data, tmp_path_factory):
    """One run under umask 022, then `lens apply` of its patch; their folders for the checks below."""
    root = tmp_path_factory.mktemp("safety")
    old = os.umask(0o022)
    try:
        assert main(args(tiny_llama, parallel_data, root / "run")) == 0
        assert main(["apply", str(root / "run"), "--out", str(root / "applied")]) == 0
    finally:
        os.umask(old)
    return root


def test_every_output_follows_the_umask_safetensors_included(run_022):
    weights = sorted(run_022.rglob("*.safetensors"))
    assert {p.relative_to(run_022).as_posix() for p in weights} == {
        "run/model/model.safetensors", "run/patch/patch.safetensors", "run/subspace/subspace.safetensors",
        "applied/model.safetensors"}
    for path in run_022.rglob("*"):
        mode = stat.S_IMODE(path.stat().st_mode)
        assert mode == (0o755 if path.is_dir() else 0o644), (path, oct(mode))


@pytest.mark.parametrize("job", ["run", "apply", "sweep"])
def test_overwrite_refuses_a_folder_lensml_did_not_write(job, run_022, tiny_llama, parallel_data, tmp_path, capsys,
                                                         monkeypatch):
    out = user_folder(tmp_path / "mine")
    no_model_load(monkeypatch)
    argv = {"run": args(tiny_llama, parallel_data, out, "--overwrite"),
            "apply": ["apply", str(run_022 / "run"), "--out", str(out), "--overwrite"],
            "sweep": ["sweep", "--model", str(tiny_llama), "--grid", "train.lr=1e-3", "--out", str(out), "--overwrite"]}
    assert main(argv[job]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == (f"error: output {out} exists and was not written by lensml (no lensml manifest), so --overwrite "
                       f"will not replace it: remove it yourself or choose another --out")
    assert files_of(out) == ["notes.txt", "sub"] and (out / "notes.txt").read_text() == "x"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]  # nothing staged beside it


def test_overwrite_replaces_what_lensml_wrote_and_empty_folders(run_022, tiny_llama, parallel_data, tmp_path):
    assert RunDir(run_022 / "run").kind() == "run" and RunDir(run_022 / "applied").kind() == "apply"
    assert RunDir(run_022 / "applied").base_model() == str(tiny_llama)  # `lens chat APPLIED --compare` finds it
    assert RunDir(run_022 / "applied").written_by_lensml() and not RunDir(tmp_path).written_by_lensml()
    lookalike = tmp_path / "lookalike"  # a manifest.json of the user's own that happens to say "run"
    lookalike.mkdir()
    (lookalike / "manifest.json").write_text('{"kind": "run"}')
    assert RunDir(lookalike).kind() == "run" and not RunDir(lookalike).written_by_lensml()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["apply", str(run_022 / "run"), "--out", str(empty), "--overwrite"]) == 0  # an empty folder loses nothing
    assert main(["apply", str(run_022 / "run"), "--out", str(empty), "--overwrite"]) == 0  # its own earlier output
    assert RunDir(empty).kind() == "apply" and (empty / "model.safetensors").is_file()


@pytest.mark.parametrize("out", ["", ".", ".."])
def test_the_current_folder_is_refused_before_loading(out, tiny_llama, parallel_data, tmp_path, capsys, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    no_model_load(monkeypatch)
    assert main(args(tiny_llama, parallel_data, out, "--overwrite")) == 2
    shown = "''" if out in ("", ".") else out
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"error: output {shown} is the current folder or holds it: name a new folder, e.g. --out runs/NAME")
    assert list(work.iterdir()) == [] and sorted(p.name for p in tmp_path.iterdir()) == ["work"]


def test_eval_overwrite_replaces_only_a_result_file(tiny_llama, tmp_path, capsys):
    notes = tmp_path / "notes.json"
    notes.write_text('{"mine": true}')
    assert main(["eval", "--model", str(tiny_llama), "--tasks", "xcopa:zh", "--out", str(notes), "--overwrite"]) == 2
    assert "is not a lensml result file, so --overwrite will not replace it" in capsys.readouterr().err
    assert notes.read_text() == '{"mine": true}'


@pytest.mark.parametrize("flags", [
    ["--lambda1", "0", "--lambda3", "0", "--lambda", "zh=0", "--train.weight-decay", "0"],  # every loss weight 0
    ["--lr", "1e-30"],                                                                       # a step too small to move
])
def test_a_run_that_moved_no_weight_fails_in_one_line(flags, tiny_llama, parallel_data, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(args(tiny_llama, parallel_data, out, *flags)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == ("error: training did not change the weights measurably (none of the 18 trained tensors changed "
                       "at all): nothing enhanced to save; raise --lr or the loss weights, or pass --allow-unchanged "
                       "to save the unchanged model anyway")
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == [".run.partial"]  # the probe, for --resume


def test_allow_unchanged_saves_it_and_says_so_first(tiny_llama, parallel_data, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(args(tiny_llama, parallel_data, out, "--lr", "1e-30", "--allow-unchanged")) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == "UNCHANGED: training did not move the weights measurably; this model is the base model, " \
                         "not an enhanced one"
    report = json.loads((out / "report.json").read_text())
    assert report["train"]["unchanged"] is True and report["train"]["relative_change"] == 0.0
    change = RunDir(out).read_manifest()["weight_change"]
    assert change == json.loads((out / "patch" / "patch_config.json").read_text())["weight_change"]
    assert (change["moved"], change["changed_tensors"], change["tensors"]) == (False, 0, 18)
    card = (out / "model" / "README.md").read_text()
    assert "this is the base model, not an enhanced one" in card and "UNCHANGED" in card


def _model(weights: dict[str, torch.Tensor]):
    model = torch.nn.Module()
    for name, w in weights.items():
        model.register_parameter(name, torch.nn.Parameter(w.clone()))
    return model


def test_weight_change_is_measured_against_each_tensors_scale():
    w = torch.tensor([0.0, 0.5, -0.25, 0.125])
    before = {"w": w.clone()}
    model = _model({"w": w})
    assert weight_change(model, before).changed_tensors == 0
    with torch.no_grad():
        model.w[0] += 5e-31  # lr 1e-30: only a weight at exactly 0 registers it
    change = weight_change(model, before)
    assert change.changed_tensors == 1 and change.relative == pytest.approx(1e-30) and not change.moved
    assert change.bound == torch.finfo(torch.float32).eps ** 2
    with torch.no_grad():
        model.w[1] += 1e-7 * 0.5  # a tiny but real step: far above float32 eps^2
    assert weight_change(model, before).moved and weight_change(model, before).tensor == "w"
    # bfloat16: the bound is its own eps^2 (6.1e-5); one unit in the last place of the largest weight moves it.
    b = torch.tensor([0.0, 1.0, -0.5], dtype=torch.bfloat16)
    model = _model({"b": b})
    with torch.no_grad():
        model.b[1] = 1 + 2 ** -7  # the next bfloat16 after 1
    change = weight_change(model, {"b": b.clone()})
    assert change.bound == pytest.approx(torch.finfo(torch.bfloat16).eps ** 2) and change.relative == 2 ** -7
    assert change.moved
    # An all-zero tensor is measured against the largest weight of all trained tensors.
    model = _model({"z": torch.zeros(3), "w": torch.tensor([2.0])})
    with torch.no_grad():
        model.z[0] = 1e-3
    change = weight_change(model, {"z": torch.zeros(3), "w": torch.tensor([2.0])})
    assert change.relative == pytest.approx(5e-4) and change.tensor == "z"
