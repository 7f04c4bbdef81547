"""`lens plot subspace RUN` on a tiny run: the files, their content, and bad input."""

import argparse
import json

import pytest

import lensml.cli as cli
from lensml.analysis import plot_subspace
from lensml.cli.plot import add_plot_command
from tests.recipes.test_run import common

PNG = b"\x89PNG"


def lens(argv, monkeypatch):
    """lensml.cli.main with `plot` wired in if the CLI does not have it yet."""
    original = cli.build_parser

    def build():
        parser = original()
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        if "plot" not in sub.choices:
            add_plot_command(sub, parents=[])
        return parser

    monkeypatch.setattr(cli, "build_parser", build)
    return cli.main(argv)


@pytest.fixture(scope="module")
def tiny_run(tiny_llama, parallel_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("plot") / "run"
    assert cli.main(["run", *common(tiny_llama, parallel_data), "--out", str(out), "--eval.no-enabled"]) == 0
    return out


def test_plot_subspace_writes_pictures_and_numbers(tiny_run, monkeypatch, capsys):
    assert lens(["plot", "subspace", str(tiny_run)], monkeypatch) == 0
    assert capsys.readouterr().out.strip().endswith(f"wrote {tiny_run / 'analysis'}")
    folder = tiny_run / "analysis"
    assert sorted(p.name for p in folder.iterdir()) == ["separation.png", "subspace.json", "subspace_pca.png"]
    for name in ("separation.png", "subspace_pca.png"):
        assert (folder / name).read_bytes()[:4] == PNG
    doc = json.loads((folder / "subspace.json").read_text())
    assert doc["languages"] == ["en", "zh", "sw"] and doc["samples"] == 6 and doc["num_layers"] == 4
    assert len(doc["labels"]) == 18
    for side in ("base", "enhanced"):
        entries = doc["separation"][side]
        assert [e["layer"] for e in entries] == [0, 1, 2, 3]
        assert all(0.0 <= e["language_share"] <= 1.0 and e["fisher_ratio"] > 0 for e in entries)
    # Layers 0 and 1 are not trained: the base and enhanced states, and so their separation, agree there.
    for layer in (0, 1):
        assert doc["separation"]["base"][layer] == pytest.approx(doc["separation"]["enhanced"][layer], rel=1e-4)
    assert [p["layer"] for p in doc["pca"]] == [0, 2, 3]
    for entry in doc["pca"]:
        assert all(len(entry["points"][side]) == 18 and len(entry["points"][side][0]) == 2
                   for side in ("base", "enhanced"))
    # A second call refuses to replace the outputs; --overwrite and the library entry point replace them.
    assert lens(["plot", "subspace", str(tiny_run), "--layers", "1"], monkeypatch) == 2
    assert "--overwrite" in capsys.readouterr().err
    again = plot_subspace(tiny_run, layers=[-1, 1], samples=4, overwrite=True)
    assert [p["layer"] for p in again["pca"]] == [1, 3] and again["samples"] == 4
    assert json.loads((folder / "subspace.json").read_text()) == again
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("make, needle", [
    (lambda d: None, "does not exist"),
    (lambda d: d.mkdir(), "no manifest.json"),
    (lambda d: (d.mkdir(), (d / "manifest.json").write_text("{}")), "names no base_model"),
    (lambda d: (d.mkdir(), (d / "manifest.json").write_text('{"kind": "probe", "base_model": "x", "config": {}}')),
     "no trained model"),
])
def test_not_a_run_folder_is_one_line_exit_2(tmp_path, monkeypatch, capsys, make, needle):
    folder = tmp_path / "nope"
    make(folder)
    assert lens(["plot", "subspace", str(folder)], monkeypatch) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and needle in err and "\n" not in err
    assert not (folder / "analysis").exists()


def test_bad_layers_fail_before_any_model_loads(tiny_run, monkeypatch, capsys):
    def no_load(*_a, **_k):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr("lensml.analysis.states.load_model", no_load)
    for flag, needle in (("9", "0..3"), ("a,b", "comma-separated")):
        assert lens(["plot", "subspace", str(tiny_run), "--layers", flag, "--overwrite"], monkeypatch) == 2
        assert needle in capsys.readouterr().err
