"""The benchmark registry: built-ins are complete, and a new benchmark needs no library edit."""

import argparse
import json

import pytest

from lensml.errors import LensError
from lensml.evaluation import benchmarks
from lensml.evaluation.benchmarks.base import (GENERATION, GenerationBenchmark, GenerationConfig, HubSource, MCItem,
                                               MultipleChoiceBenchmark, letter_message, text_field)
from lensml.cli import build_parser
from lensml.cli.args import overrides_of
from lensml.recipes.config import load_config
from lensml.cli.eval import format_results
from lensml.results.benchmark_results import comparison_table
from lensml.evaluation.scoring import ScoringConfig
from lensml.evaluation.suite import EvalConfig, evaluate
from lensml.evaluation.tasks import parse_tasks


class Toy(MultipleChoiceBenchmark):
    """Pick the true statement: {"q": ..., "yes": ..., "no": ..., "gold": 0|1}."""

    name, display_name, aliases, hub = "toy", "Toy-QA", ("toy-qa",), HubSource("example/toy", "test")

    def normalise(self, row, where, lang):
        doc = {k: text_field(row, k, where) for k in ("q", "yes", "no")}
        return MCItem(self.name, lang, doc, int(row["gold"]), where)

    def loglik_requests(self, item):
        choices = [item.doc["yes"], item.doc["no"]]
        return [(item.doc["q"], " " + c) for c in choices], choices

    def letter_prompt(self, item):
        return letter_message(f"Question: {item.doc['q']}", [item.doc["yes"], item.doc["no"]])


@pytest.fixture
def toy():
    benchmark = benchmarks.register(Toy())
    yield benchmark
    benchmarks.unregister("toy")


def test_every_builtin_has_a_display_name_and_hub_source():
    assert benchmarks.names()[:5] == ["xcopa", "xwinograd", "xstorycloze", "m_mmlu", "mtbench"]
    for name in benchmarks.names():
        b = benchmarks.get(name)
        assert b.display_name and b.hub.repo and b.hub.split and b.extensions, name
        assert b.kind in (benchmarks.MULTIPLE_CHOICE, GENERATION)
    assert benchmarks.get("MT-Bench").name == "mtbench" and benchmarks.get("mmlu").name == "m_mmlu"
    with pytest.raises(LensError, match="unknown task 'hellaswag'"):
        benchmarks.get("hellaswag")
    with pytest.raises(LensError, match="already registered"):
        benchmarks.register(benchmarks.get("xcopa"))


@pytest.mark.parametrize("mode", ["loglik", "letter"])
def test_a_toy_benchmark_runs_through_evaluate(toy, tiny, tmp_path, mode):
    model, tok = tiny
    data = tmp_path / "toy.zh.jsonl"
    rows = [{"q": "天空是什么颜色？", "yes": "蓝色", "no": "绿色", "gold": 0},
            {"q": "一加一等于几？", "yes": "三", "no": "二", "gold": 1},
            {"q": "猫会叫吗？", "yes": "会", "no": "不会", "gold": 0}]
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    assert parse_tasks(f"toy-qa:zh@{data}")[0].name == "toy"
    cfg = EvalConfig(tasks=f"toy:zh@{data}", scoring=ScoringConfig(mode=mode))
    doc = evaluate(model, tok, "tiny", cfg, tmp_path / "out")
    entry = doc["lensml_results"][0]
    assert (entry["task"], entry["n"], entry["mode"], entry["metric"]) == ("toy", 3, mode, "acc")
    assert entry["value"] in (0.0, 1 / 3, 2 / 3, 1.0)
    assert (tmp_path / "out" / "results.toy_zh.samples.jsonl").is_file()
    assert "toy:zh" in format_results(doc)
    assert comparison_table([tmp_path / "out" / "results.json"]).startswith("| Model | Toy-QA Zh | Avg Zh | Avg |")


def test_a_generation_benchmark_is_dispatched_by_kind(tiny, tmp_path):
    seen = []

    class Echo(GenerationBenchmark):
        name, display_name, hub = "echo", "Echo", HubSource("example/echo", "train")

        def run(self, model, tokenizer, spec, ctx):
            seen.append((spec.lang, ctx.cfg.generation.max_new_tokens, ctx.path(spec, "answers.jsonl").name))
            return {"task": self.name, "language": spec.lang, "mode": "generate", "n": 1, "metric": "fidelity",
                    "value": 1.0, "stderr": None, "judged": False, "fidelity": 1.0, "timings_s": {"total": 0.0}}

    benchmarks.register(Echo())
    prompts = tmp_path / "echo.sw.jsonl"  # its data are looked up when the options are built, though run ignores them
    prompts.write_text('{"text": "habari"}\n', encoding="utf-8")
    try:
        doc = evaluate(*tiny, "tiny", EvalConfig(tasks=f"echo:sw@{prompts}"), tmp_path / "out", result_file="e.json")
        assert comparison_table([tmp_path / "out" / "e.json"]).startswith("| Model | Echo Sw |\n")
    finally:
        benchmarks.unregister("echo")
    assert seen == [("sw", 1024, "e.echo_sw.answers.jsonl")] and doc["lensml_results"][0]["value"] == 1.0
    # a result of a benchmark this lensml does not know keeps its name and is placed by its mode
    assert comparison_table([tmp_path / "out" / "e.json"]).startswith("| Model | echo Sw |\n")


@pytest.mark.parametrize("build, words", [
    (lambda: ScoringConfig(mode="vote"), "scoring.mode loglik or letter"),
    (lambda: ScoringConfig(batch_size=0), "scoring.batch-size"),
    (lambda: ScoringConfig(max_length=0), "scoring.max-length"),
    (lambda: EvalConfig(limit=0), "--limit"),
    (lambda: EvalConfig(generation=GenerationConfig(batch_size=0)), "generation.batch-size"),
    (lambda: EvalConfig(generation=GenerationConfig(max_new_tokens=0)), "generation.max-new-tokens"),
])
def test_options_are_checked_when_built(build, words):
    with pytest.raises(LensError, match=words):
        build()


def test_evaluate_needs_tasks(tiny, tmp_path):
    with pytest.raises(LensError, match="no benchmark task given"):
        evaluate(*tiny, "tiny", EvalConfig(), tmp_path)


def test_cli_flags_come_from_the_nested_config(monkeypatch):
    monkeypatch.delenv("LENSML_EVAL_DATA", raising=False)
    parser = build_parser()

    def config(*flags):
        return load_config(None, overrides_of(parser.parse_args(["eval", "--out", "r.json", *flags]), "eval"), EvalConfig)

    cfg = config("--limit", "5", "--scoring.mode", "letter", "--judge.base-url", "http://j/v1",
                 "--judge.model", "m", "--judge.timeout-s", "9.5", "--no-save-samples",
                 "--scoring.add-bos", "--generation.batch-size", "2")
    assert (cfg.limit, cfg.scoring.mode, cfg.scoring.add_bos, cfg.save_samples) == (5, "letter", True, False)
    assert (cfg.judge.base_url, cfg.judge.model, cfg.judge.timeout_s, cfg.generation.batch_size) == ("http://j/v1", "m", 9.5, 2)
    cfg = config("--mode", "letter", "--max-new-tokens", "3", "--judge-base-url", "u", "--judge-model", "m",
                 "--judge-cache", "/c", "--gen-batch-size", "4", "--add-bos")
    assert (cfg.scoring.mode, cfg.generation.max_new_tokens, cfg.generation.batch_size) == ("letter", 3, 4)
    assert (cfg.judge.base_url, cfg.judge.cache_dir, cfg.scoring.add_bos) == ("u", "/c", True)
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices["eval"]
    help_text = sub.format_help()
    assert "--judge.base-url" in help_text and "--judge-base-url" not in help_text and "--save-samples" in help_text
    with pytest.raises(LensError, match="judge.base-url and --judge.model"):
        config("--judge.model", "m")
