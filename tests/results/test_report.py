"""RunReport: the numbers every reader shows, on a hand-made report."""

import json

import pytest

from lensml.errors import LensError
from lensml.results.report import SCHEMA_VERSION, LanguageScores, QuickEval, Retention, RunReport, TrainSummary


def _scores(fid, clean, echo, loop, empty=0.0):
    return {"n": 40, "fidelity": fid, "clean_fidelity": clean, "echo": echo, "loop": loop, "empty": empty,
            "degenerate": echo + loop + empty, "detected": ["zh"] * 40}


def _report():
    quick = QuickEval(40, {"en": LanguageScores.from_scores(_scores(1.0, 0.975, 0.0, 0.025)),
                           "zh": LanguageScores.from_scores(_scores(0.875, 0.475, 0.25, 0.25))},
                      {"en": LanguageScores.from_scores(_scores(1.0, 0.95, 0.0, 0.05)),
                       "zh": LanguageScores.from_scores(_scores(1.0, 0.55, 0.125, 0.35))},
                      Retention(0.8, 0.78))
    return RunReport("m", "en", ["en", "zh"], TrainSummary("lens", 25, 1e-3, {"loss": 0.3}, 53, 1000), quick,
                     timings_s={"total": 12.0})


def test_numbers_by_hand():
    r = _report()
    assert r.quick_eval.retention.relative_change == pytest.approx(-0.025)
    assert r.train.trainable_share == pytest.approx(0.053)
    zh = r.quick_eval.enhanced["zh"]
    assert (zh.fidelity, zh.clean_fidelity, zh.echo, zh.loop) == (1.0, 0.55, 0.125, 0.35)
    assert r.quick_eval.metric("clean_fidelity", "base") == {"en": 0.975, "zh": 0.475}


def test_table_shows_echo_and_loop_in_their_own_columns():
    lines = _report().table().splitlines()
    head = lines.index("| lang | fidelity | clean | echo | loop | empty |")
    assert lines[head - 1] == "held-out answers, base -> enhanced (40 prompts per language):"
    assert lines[head + 1] == "|---|---|---|---|---|---|"
    zh = next(line for line in lines if line.startswith("| zh |"))
    assert [c.strip() for c in zh.split("|")[1:-1]] == [
        "zh", "87.5% -> 100.0%", "47.5% -> 55.0%", "25.0% -> 12.5%", "25.0% -> 35.0%", "0.0% -> 0.0%"]
    en = next(line for line in lines if line.startswith("| en |"))
    assert en == "| en | 100.0% -> 100.0% | 97.5% -> 95.0% | 0.0% -> 0.0% | 2.5% -> 5.0% | 0.0% -> 0.0% |"
    assert "base 0.8000, enhanced 0.7800 (-2.50%)" in _report().table()
    assert "5.3% of parameters" in _report().table()


def test_json_round_trip_and_errors(tmp_path):
    r = _report()
    doc = r.to_dict()
    assert doc["schema_version"] == SCHEMA_VERSION and doc["quick_eval"]["retention"]["relative_change"] == pytest.approx(-0.025)
    (tmp_path / "report.json").write_text(json.dumps(doc))
    back = RunReport.load(tmp_path / "report.json")
    assert back == r == RunReport.load(tmp_path)
    (tmp_path / "report.json").write_text(json.dumps({**doc, "schema_version": 1}))
    with pytest.raises(LensError, match="schema version 1"):
        RunReport.load(tmp_path / "report.json")
    (tmp_path / "report.json").write_text("[1, 2]")
    with pytest.raises(LensError, match="not a lensml run report"):
        RunReport.load(tmp_path)
