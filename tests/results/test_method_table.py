"""`lens compare` of run folders, cell by cell: Table 1 (quality), Table 5 (cost), controls, the paper's reference."""

import json

import pytest

from lensml.cli import main
from lensml.errors import LensError
from lensml.io import write_json_atomic
from lensml.results.method_table import PAPER_TABLE5, compare_runs, load_run
from lensml.results.report import LanguageScores, QuickEval, Retention, RunReport, TrainSummary


def _fake_run(folder, method, zh_fid, zh_clean, nll_after, share, base_fid=0.25, resolved=None, rows=200):
    """A run folder with hand-set numbers: every table cell can be checked."""
    def scores(fid, clean):
        return LanguageScores(n=40, fidelity=fid, clean_fidelity=clean, echo=0.1, loop=0.05, empty=0.0, degenerate=0.15)

    q = QuickEval(40, {"en": scores(1.0, 0.95), "zh": scores(base_fid, 0.2)},
                  {"en": scores(1.0, 0.9), "zh": scores(zh_fid, zh_clean)}, Retention(0.8, nll_after))
    report = RunReport("m", "en", ["en", "zh"], TrainSummary(method, 25, 1e-3, {}, int(share * 1000), 1000), q,
                       timings_s={"train": 12.5, "total": 100.0})
    folder.mkdir()
    write_json_atomic(folder / "report.json", report.to_dict())
    manifest = {"kind": "run", "method": method, "peak_memory": {"host_gb": 1.5}, "data": {"train_rows": rows},
                "config": {"eval": {"data": "embedded:heldout", "samples": 40}}}
    if resolved is not None:
        manifest["train_resolved"] = resolved
    write_json_atomic(folder / "manifest.json", manifest)
    return folder


def test_methods_table_cells_by_hand(tmp_path):
    a = _fake_run(tmp_path / "a", "lens", 1.0, 0.55, 0.796, 0.3)
    b = _fake_run(tmp_path / "b", "xsft", 0.875, 0.5, 0.88, 1.0, resolved={"role": "paper", "instruction_rows": 1500})
    text = compare_runs([a, b], tmp_path / "t.md")
    quality = text.split("\n\n")[1]  # heading, quality table, Table 5
    assert quality.splitlines()[0].startswith("| run | method | zh fidelity | zh clean | zh echo | zh loop |")
    rows = {line.split(" | ")[0][2:]: line.split(" | ")[1:] for line in quality.splitlines()[2:]}
    assert list(rows) == ["base", "a", "b"] and [rows[k][0] for k in rows] == ["-", "lens", "xsft"]
    assert rows["base"][1:5] == ["25.0", "20.0", "10.0", "5.0"]
    assert rows["a"][1:5] == ["100.0", "55.0", "10.0", "5.0"] and rows["a"][5:7] == ["100.0", "90.0"]
    assert rows["a"][7].startswith("0.7960 (-0.50%)") and rows["b"][7].startswith("0.8800 (+10.00%)")
    assert rows["base"][7].startswith("0.8000 (+0.00%)")
    table5 = text.split("\n\n")[2].splitlines()
    assert table5[0] == ("| run | method | trainable share | instruction rows | steps | peak lr | probe (s) | "
                         "train (s) | total (s) | peak host GB | peak device GB |")
    assert table5[2:] == ["| a | lens | 30.00% | 200 | 25 | 1.0e-03 | - | 12.5 | 100.0 | 1.50 | - |",
                          "| b | xsft | 100.00% | 1.5K | 25 | 1.0e-03 | - | 12.5 | 100.0 | 1.50 | - |"]
    assert "Not comparable" not in text and "(control)" not in text and "paper:" not in text
    c = _fake_run(tmp_path / "c", "qalign", 0.5, 0.5, 0.8, 1.0, base_fid=0.5)  # another base: not like for like
    assert "**Not comparable:** the base answers of c differ from those of a" in compare_runs([a, c])


def test_controls_are_marked_and_old_runs_get_their_role(tmp_path):
    # Runs written before roles were recorded: a paper baseline on LENS's layers was a control.
    old_top = _fake_run(tmp_path / "old", "xsft", 0.9, 0.5, 0.85, 0.3)
    old_full = _fake_run(tmp_path / "full", "xsft-full", 0.9, 0.5, 0.85, 1.0)
    steer = _fake_run(tmp_path / "steer", "steer", 0.9, 0.6, 0.8, 0.0)
    given = _fake_run(tmp_path / "given", "sdrrl", 0.9, 0.5, 0.85, 0.3, resolved={"role": "control"})
    assert [load_run(p).role for p in (old_top, old_full, steer, given)] == ["control", "paper", "control", "control"]
    text = compare_runs([old_top, old_full, steer, given], reference="paper")
    lines = text.split("\n\n")[1].splitlines()[2:]
    assert [line.split(" | ")[0][2:] for line in lines] == ["base", "old", "full", "steer", "given"]
    assert [line.split(" | ")[1] for line in lines] == ["-", "xsft (control)", "xsft-full", "steer (control)",
                                                         "sdrrl (control)"]
    assert "(control): not a row of the LENS paper" in text
    paper = {line.split(" | ")[0][2:]: line.split(" | ")[-3:] for line in text.splitlines()
             if line.startswith("| ") and "%" in line and line.count(" | ") == 13}
    assert paper["full"] == ["100%", "111.5K", "192 min 35 s |"] and paper["old"] == ["-", "-", "- |"]
    assert "Paper: the LENS paper's Table 5 (LLaMA-3-8B-Instruct" in text


def test_reference_json_and_errors(tmp_path, capsys):
    a = _fake_run(tmp_path / "a", "lens", 1.0, 0.55, 0.796, 0.0543)
    compare_runs([a], tmp_path / "out", reference="paper")
    doc = json.loads((tmp_path / "out" / "compare.json").read_text())
    assert doc["reference"]["paper"] == PAPER_TABLE5 and doc["groups"][0]["cost"][0]["paper"] == PAPER_TABLE5["lens"]
    assert set(PAPER_TABLE5) == {"lens", "xsft", "xsft-full", "sdrrl", "qalign"}
    with pytest.raises(LensError, match="--reference table9: the one reference is paper"):
        compare_runs([a], reference="table9")
    result = tmp_path / "r.json"
    result.write_text(json.dumps({"model": "m", "results": []}), encoding="utf-8")
    assert main(["compare", str(result), "--reference", "paper"]) == 2
    assert "--reference compares run folders" in capsys.readouterr().err


def test_rows_are_labelled_by_folder_and_two_lens_runs_are_told_apart(tmp_path, capsys):
    a = _fake_run(tmp_path / "lr-1e-3", "lens", 1.0, 0.55, 0.796, 0.3)
    b = _fake_run(tmp_path / "lr-3e-4", "lens", 0.9, 0.45, 0.79, 0.3)
    (tmp_path / "x").mkdir()
    (tmp_path / "y").mkdir()
    c = _fake_run(tmp_path / "x" / "out", "lens", 0.8, 0.4, 0.79, 0.3)
    d = _fake_run(tmp_path / "y" / "out", "xsft", 0.8, 0.4, 0.79, 1.0)
    assert main(["compare", str(a), str(b), str(c), str(d), "--out", str(tmp_path / "cmp")]) == 0
    quality = capsys.readouterr().out.split("\n\n")[1].splitlines()[2:]
    cells = [[cell.strip() for cell in line.split("|")[1:4]] for line in quality]
    assert cells == [["base", "-", "25.0"], ["lr-1e-3", "lens", "100.0"], ["lr-3e-4", "lens", "90.0"],
                     ["x/out", "lens", "80.0"], ["y/out", "xsft", "80.0"]]
    doc = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    q = doc["groups"][0]["quality"]
    assert [(r["label"], r["method"]) for r in q] == [("base", None), ("lr-1e-3", "lens"), ("lr-3e-4", "lens"),
                                                      ("x/out", "lens"), ("y/out", "xsft")]
    assert q[1]["run"] == str(a) and [r["label"] for r in doc["groups"][0]["cost"]] == [r["label"] for r in q[1:]]


@pytest.mark.parametrize("kind", ["empty folder", "missing", "unfinished run", "probe folder"])
@pytest.mark.parametrize("first", [True, False])
def test_the_folder_without_results_is_the_one_named(kind, first, tmp_path, capsys):
    good = _fake_run(tmp_path / "good", "lens", 1.0, 0.55, 0.796, 0.3)  # no benchmarks: the old error blamed it
    bad = tmp_path / "bad"
    if kind == "empty folder":
        bad.mkdir()
    elif kind == "unfinished run":
        _fake_run(bad, "xsft", 0.9, 0.5, 0.8, 1.0)
        (bad / "report.json").unlink()
    elif kind == "probe folder":
        bad.mkdir()
        write_json_atomic(bad / "manifest.json", {"kind": "probe"})
    files = [str(good), str(bad)] if first else [str(bad), str(good)]
    assert main(["compare", *files]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"error: {bad} ") or err.startswith(f"error: run folder {bad} "), err
    assert str(good) not in err
    why = {"empty folder": "(has no manifest.json)", "missing": "does not exist", "unfinished run": "has no results",
           "probe folder": "(was written by `lens probe`)"}[kind]
    assert why in err, err
