import json

import pytest

from lensml.cli import main
from lensml.errors import LensError
from lensml.evaluation.benchmarks import mtbench
from lensml.evaluation.benchmarks.base import GenerationConfig
from lensml.results.benchmark_results import comparison_table
from lensml.evaluation.judge import JudgeConfig
from lensml.evaluation.scoring import ScoringConfig
from lensml.evaluation.suite import EvalConfig, evaluate
from tests.evaluation.judge_server import FakeJudge


def _tasks(fixtures) -> str:
    return (f"xcopa:zh@{fixtures / 'xcopa'},xwinograd:zh@{fixtures / 'xwinograd' / 'zh.jsonl'},"
            f"mtbench:zh@{fixtures / 'mt-bench' / 'zh'}")


def test_turn_two_carries_the_conversation(tiny, fixtures, monkeypatch):
    model, tok = tiny
    calls = []

    def fake_generate(model, tokenizer, conversations, *args, **kwargs):
        calls.append(conversations)
        return [f"回答{len(calls)}-{i}" for i in range(len(conversations))]

    monkeypatch.setattr(mtbench, "generate_answers", fake_generate)
    questions, _, _, _ = mtbench.load_questions(mtbench.TaskSpec("mtbench", "zh", str(fixtures / "mt-bench" / "zh")))
    answers = mtbench.answer_questions(model, tok, questions, mtbench.GenerationConfig(max_new_tokens=4))
    assert calls[0][1] == [{"role": "user", "content": "三加五等于多少？"}]
    assert calls[1][1] == [{"role": "user", "content": "三加五等于多少？"}, {"role": "assistant", "content": "回答1-1"},
                           {"role": "user", "content": "再乘以二呢？"}]
    assert answers[1] == ["回答1-1", "回答2-1"]


def test_evaluate_without_judge_reports_no_score(tiny, fixtures, tmp_path):
    model, tok = tiny
    cfg = EvalConfig(tasks=_tasks(fixtures), limit=3, generation=GenerationConfig(max_new_tokens=4))
    doc = evaluate(model, tok, "tiny", cfg, tmp_path / "eval")
    saved = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert saved["lensml_results"] == json.loads(json.dumps(doc["lensml_results"]))
    xcopa, wino, mt = doc["lensml_results"]
    assert (xcopa["task"], xcopa["language"], xcopa["n"], xcopa["metric"]) == ("xcopa", "zh", 3, "acc")
    assert set(xcopa["metrics"]) == {"acc", "acc_norm", "acc_bytes"} and wino["n"] == 3
    assert mt["judged"] is False and "score" not in mt and mt["metric"] == "fidelity" and mt["value"] == mt["fidelity"]
    for key in ("fidelity", "clean_fidelity", "echo", "loop", "empty", "distinct_1", "distinct_2"):
        assert 0.0 <= mt[key] <= 1.0
    rows = [json.loads(line) for line in (tmp_path / "eval" / "results.mtbench_zh.answers.jsonl").open()]
    assert len(rows) == 3 and len(rows[0]["choices"][0]["turns"]) == 2 and len(rows[0]["langid"]) == 2
    assert doc["packages"]["torch"] and doc["options"]["judge"]["api_key_env"] is None
    with pytest.raises(LensError, match="already exists"):
        evaluate(model, tok, "tiny", cfg, tmp_path / "eval")


def test_evaluate_with_judge_scores_and_caches(tiny, fixtures, tmp_path):
    model, tok = tiny
    spec = f"mtbench:zh@{fixtures / 'mt-bench' / 'zh' / 'question.jsonl'}"
    with FakeJudge(reply="Fine. Rating: [[6]]", fail_first=1) as server:
        cfg = EvalConfig(tasks=spec, generation=GenerationConfig(max_new_tokens=4),
                         judge=JudgeConfig(base_url=server.base_url, model="judge-1", cache_dir=str(tmp_path / "cache"),
                                           backoff_s=0.01))
        doc = evaluate(model, tok, "tiny", cfg, tmp_path / "a")
        mt = doc["lensml_results"][0]
        assert mt["judged"] is True and mt["score"] == 6.0 and mt["metric"] == "score" and mt["n_rated"] == 6
        assert len(server.requests) == 7  # 3 questions x 2 turns, plus the retried 500
        again = evaluate(model, tok, "tiny", cfg, tmp_path / "b")["lensml_results"][0]
        assert again["score"] == 6.0 and again["n_cached"] == 6 and len(server.requests) == 7


def _result(path, model, values, mt=None):
    results = [{"task": t, "language": lang, "mode": "loglik", "n": 100, "metric": "acc", "value": v, "stderr": 0.05}
               for (t, lang), v in values.items()]
    if mt is not None:
        results.append({"task": "mtbench", "language": "zh", "mode": "generate", "n": 80, **mt})
    path.write_text(json.dumps({"model": model, "results": results}))
    return path


def test_compare_table_shape_and_deltas(tmp_path):
    base = _result(tmp_path / "base.json", "base", {("xcopa", "zh"): 0.5, ("xcopa", "en"): 0.6, ("m_mmlu", "zh"): 0.3},
                   {"judged": False, "fidelity": 0.5, "value": 0.5})
    enh = _result(tmp_path / "enh.json", "enh", {("xcopa", "zh"): 0.55, ("xcopa", "en"): 0.6},
                  {"judged": True, "score": 4.25, "fidelity": 0.8, "value": 4.25})
    lines = comparison_table([base, enh]).splitlines()
    assert lines[0] == "| Model | XCOPA En | XCOPA Zh | M-MMLU Zh | Avg En | Avg Zh | Avg | MT-Bench Zh |"
    assert lines[2] == "| base (base.json) | 60.0 | 50.0 | 30.0 | 60.0 | 50.0 | 55.0 | – (50.0%) |"
    assert lines[3] == "| enh (enh.json) | 60.0 | 55.0 | – | 60.0 | 55.0 | 57.5 | 4.25 (80.0%) |"
    assert lines[4] == "| Δ vs base (base.json) | +0.0 | +5.0 | – | +0.0 | +5.0 | +2.5 | – (+30.0) |"
    mt_only = _result(tmp_path / "mt.json", "mt", {}, {"judged": False, "fidelity": 0.9, "value": 0.9})
    lines = comparison_table([base, mt_only]).splitlines()
    assert lines[0] == "| Model | XCOPA En | XCOPA Zh | M-MMLU Zh | MT-Bench Zh |"  # no shared column: no average
    assert all(line.count("|") == 6 for line in lines[:5])
    bad = tmp_path / "bad.json"
    bad.write_text('{"model": "x"}')
    with pytest.raises(LensError, match="not a lens eval result"):
        comparison_table([bad])


def test_cli_eval_and_compare_end_to_end(tiny_llama, fixtures, tmp_path, capsys):
    out = tmp_path / "eval" / "base.json"
    args = ["eval", "--model", str(tiny_llama), "--tasks", _tasks(fixtures), "--out", str(out),
            "--generation.max-new-tokens", "4", "--limit", "2"]
    assert main(args) == 0
    doc = json.loads(out.read_text())
    assert [(r["task"], r["n"]) for r in doc["lensml_results"]] == [("xcopa", 2), ("xwinograd", 2), ("mtbench", 2)]
    assert doc["mode"] == "loglik" and (out.parent / "base.xcopa_zh.samples.jsonl").is_file()
    assert "xcopa:zh loglik n=2: acc" in capsys.readouterr().out
    assert main(args) == 2 and "already exists" in capsys.readouterr().err
    letter = tmp_path / "eval" / "letter.json"
    assert main(args[:-5] + [str(letter), "--scoring.mode", "letter", "--limit", "2", "--generation.max-new-tokens", "4"]) == 0
    assert json.loads(letter.read_text())["lensml_results"][0]["mode"] == "letter"
    capsys.readouterr()
    table = tmp_path / "table.md"
    assert main(["compare", str(out), str(letter), "--out", str(table)]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("| Model | XCOPA Zh | XWinograd Zh | Avg Zh | Avg | MT-Bench Zh |")
    assert "| Δ vs " in printed and table.read_text() in printed
    assert main(["compare", str(out), "--out", str(table)]) == 2


def test_data_dir_from_environment(tiny, fixtures, tmp_path, monkeypatch):
    model, tok = tiny
    folder = tmp_path / "data" / "xcopa" / "zh"
    folder.mkdir(parents=True)
    (folder / "val.zh.jsonl").write_bytes((fixtures / "xcopa" / "val.zh.jsonl").read_bytes())
    monkeypatch.setenv("LENSML_EVAL_DATA", str(tmp_path / "data"))
    doc = evaluate(model, tok, "tiny", EvalConfig(tasks="xcopa:zh", scoring=ScoringConfig(mode="letter")), tmp_path / "out")
    assert doc["lensml_results"][0]["source"] == str(folder / "val.zh.jsonl") and doc["lensml_results"][0]["n"] == 4
