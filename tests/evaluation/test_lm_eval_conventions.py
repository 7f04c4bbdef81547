"""What an lm-eval user expects: its task names, --limit as the first N items, its result and sample shapes;
and benchmark data found (or said missing) when the options are built, before any model loads."""

import json
import sys
import types

import pytest

from lensml.cli import build_parser, main
from lensml.cli.args import overrides_of
from lensml.errors import LensError
from lensml.evaluation import benchmarks
from lensml.evaluation.scoring import ScoringConfig
from lensml.evaluation.suite import EvalConfig, evaluate, is_result_file
from lensml.evaluation.tasks import TaskSpec, load_task, parse_tasks
from lensml.recipes.config import load_config
from lensml.results.benchmark_results import comparison_table

LM_EVAL_KEYS = {"results", "configs", "versions", "n-shot", "higher_is_better", "n-samples", "config"}


@pytest.mark.parametrize("lm_eval, ours", [("xcopa_zh", "xcopa:zh"), ("xwinograd_jp", "xwinograd:ja"),
                                           ("xstorycloze_zh", "xstorycloze:zh"), ("m_mmlu_zh", "m_mmlu:zh"),
                                           ("XCOPA_SW", "xcopa:sw"), ("mt_bench_en", "mtbench:en")])
def test_lm_eval_names_resolve_to_the_same_task(lm_eval, ours):
    assert parse_tasks(lm_eval) == parse_tasks(ours)
    assert parse_tasks(f"{lm_eval}@/data/x.jsonl")[0].path == "/data/x.jsonl"
    spec = parse_tasks(ours)[0]
    if spec.name != "mtbench":  # lm-eval has no MT-Bench: its name is ours
        assert benchmarks.lm_eval_name(spec.name, spec.lang) == lm_eval.lower()


def test_lm_eval_names_in_errors():
    assert parse_tasks("xwinograd_ja") == parse_tasks("xwinograd_jp")  # our language code works too
    with pytest.raises(LensError, match="listed twice"):
        parse_tasks("xcopa_zh,xcopa:zh")
    with pytest.raises(LensError, match="unknown task 'hellaswag_zh'.*xcopa_zh"):
        parse_tasks("hellaswag_zh")
    with pytest.raises(LensError, match="'m_mmlu' has no language"):
        parse_tasks("m_mmlu")


def _xcopa_rows(path, n):
    rows = [{"premise": f"前提{i}。", "choice1": f"甲{i}", "choice2": f"乙{i}", "question": "cause", "label": i % 2}
            for i in range(n)]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def test_limit_is_the_first_items_and_sample_a_seeded_draw(tmp_path):
    spec = TaskSpec("xcopa", "zh", str(_xcopa_rows(tmp_path / "val.zh.jsonl", 40)))
    first, _, total = load_task(spec, limit=3)
    assert total == 40 and [it.doc_id for it in first] == [0, 1, 2]
    assert [it.doc["premise"] for it in first] == ["前提0。", "前提1。", "前提2。"]
    drawn, _, _ = load_task(spec, sample=3, seed=7)
    again, _, _ = load_task(spec, sample=3, seed=7)
    other, _, _ = load_task(spec, sample=3, seed=8)
    ids = [it.doc_id for it in drawn]
    assert ids == [it.doc_id for it in again] == sorted(ids) and len(set(ids)) == 3
    assert ids != [0, 1, 2] and ids != [it.doc_id for it in other]
    assert [it.doc["premise"] for it in drawn] == [f"前提{i}。" for i in ids]
    assert len(load_task(spec)[0]) == 40 and len(load_task(spec, limit=100)[0]) == 40
    with pytest.raises(LensError, match="--limit and --sample are both set"):
        EvalConfig(limit=3, sample=3)
    with pytest.raises(LensError, match="--sample 1 or more"):
        EvalConfig(sample=0)


def test_limit_and_sample_flags_of_lens_eval_and_lens_run(monkeypatch):
    monkeypatch.delenv("LENSML_EVAL_DATA", raising=False)
    parser = build_parser()
    ev = parser.parse_args(["eval", "--limit", "20"])
    assert load_config(None, overrides_of(ev, "eval"), EvalConfig).limit == 20
    ev = parser.parse_args(["eval", "--sample", "5", "--seed", "3"])
    cfg = load_config(None, overrides_of(ev, "eval"), EvalConfig)
    assert (cfg.limit, cfg.sample, cfg.seed) == (None, 5, 3)
    run = parser.parse_args(["run", "--limit", "20"])
    assert load_config(None, overrides_of(run, "run")).benchmarks.limit == 20


def test_results_json_is_lm_eval_shaped_and_samples_carry_the_items(tiny, fixtures, tmp_path):
    model, tok = tiny
    tasks = f"xcopa_zh@{fixtures / 'xcopa'},xwinograd:zh@{fixtures / 'xwinograd' / 'zh.jsonl'}"
    doc = evaluate(model, tok, "tiny", EvalConfig(tasks=tasks, limit=3), tmp_path / "out")
    saved = json.loads((tmp_path / "out" / "results.json").read_text(encoding="utf-8"))
    assert LM_EVAL_KEYS <= set(saved) and saved["results"] == json.loads(json.dumps(doc["results"]))
    xcopa, wino = saved["lensml_results"]
    assert list(saved["results"]) == ["xcopa_zh", "xwinograd_zh"]
    row = saved["results"]["xcopa_zh"]
    for metric in ("acc", "acc_norm", "acc_bytes"):
        assert row[f"{metric},none"] == xcopa["metrics"][metric]["value"]
        assert row[f"{metric}_stderr,none"] == xcopa["metrics"][metric]["stderr"]
    assert row["acc,none"] == xcopa["value"] and saved["results"]["xwinograd_zh"]["acc,none"] == wino["value"]
    assert saved["n-samples"] == {"xcopa_zh": {"original": 4, "effective": 3},
                                  "xwinograd_zh": {"original": 3, "effective": 3}}
    assert saved["versions"] == {"xcopa_zh": 1.0, "xwinograd_zh": 1.0} and saved["n-shot"]["xcopa_zh"] == 0
    assert saved["higher_is_better"]["xcopa_zh"] == {"acc": True, "acc_norm": True, "acc_bytes": True}
    assert saved["configs"]["xcopa_zh"]["output_type"] == "multiple_choice"
    assert saved["configs"]["xcopa_zh"]["dataset_path"].endswith("val.zh.jsonl")
    assert saved["config"]["limit"] == 3 and saved["packages"]["lensml"] and is_result_file(tmp_path / "out" / "results.json")

    lines = [json.loads(line) for line in (tmp_path / "out" / "results.xcopa_zh.samples.jsonl").open(encoding="utf-8")]
    source = [json.loads(line) for line in (fixtures / "xcopa" / "val.zh.jsonl").open(encoding="utf-8")][:3]
    assert [line["doc_id"] for line in lines] == [0, 1, 2]
    for line, raw in zip(lines, source):
        assert line["doc"]["premise"] == raw["premise"] and line["target"] == raw["label"]
        assert line["choices"] == [raw["choice1"], raw["choice2"]]  # lm-eval's xcopa choices: first letter lowered
        scores = [resp[0] for resp in line["filtered_resps"]]
        assert line["resps"] == [[r] for r in line["filtered_resps"]] and len(line["arguments"]) == 2
        assert line["prediction"] == max(range(2), key=lambda k: (scores[k], -k))
        assert line["acc"] == float(line["prediction"] == line["target"]) and line["filter"] == "none"
        assert all(isinstance(resp[1], bool) for resp in line["filtered_resps"])
        assert line["arguments"]["gen_args_0"]["arg_1"] == " " + raw["choice1"]
    assert sum(line["acc"] for line in lines) / 3 == row["acc,none"]


def test_compare_reads_both_result_shapes(tmp_path):
    entries = [{"task": "xcopa", "language": "zh", "mode": "loglik", "n": 100, "metric": "acc", "value": 0.5,
                "stderr": 0.05}]
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"model": "m", "results": entries, "versions": {"lensml": "0"}}))
    new = tmp_path / "new.json"
    new.write_text(json.dumps({"model": "m", "results": {"xcopa_zh": {"acc,none": 0.5}}, "lensml_results": entries,
                               "packages": {"lensml": "0"}, "versions": {"xcopa_zh": 1.0}}))
    assert is_result_file(old) and is_result_file(new)
    old_rows, new_rows = (comparison_table([p]).splitlines() for p in (old, new))
    assert old_rows[2] == "| m (old.json) | 50.0 | 50.0 | 50.0 |" and new_rows[2] == "| m (new.json) | 50.0 | 50.0 | 50.0 |"


# ---------------------------------------------------------------- data found before the model loads

def _no_model(monkeypatch):
    """Loading a model fails the test: a missing data folder must be said before any model time."""
    from lensml.cli import eval as eval_cli
    from lensml.recipes import run

    def boom(*_a, **_k):
        raise AssertionError("a model was loaded before the benchmark data were checked")

    monkeypatch.setattr(run, "load_model", boom)
    monkeypatch.setattr(eval_cli, "load_model", boom)


def test_lens_run_with_a_missing_data_dir_fails_before_the_model_loads(monkeypatch, tmp_path, capsys, tiny_llama):
    _no_model(monkeypatch)
    missing = tmp_path / "nope"
    args = ["run", "--model", str(tiny_llama), "--out", str(tmp_path / "run"), "--eval-tasks", "xcopa_zh", "--limit", "20"]
    assert main([*args, "--benchmarks.data-dir", str(missing)]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"benchmark data folder {missing}" in err and "does not exist" in err and "--benchmarks.data-dir" in err
    monkeypatch.setenv("LENSML_EVAL_DATA", str(tmp_path))  # the folder exists, the task's does not
    assert main(args) == 2
    assert f"put its file in {tmp_path / 'xcopa' / 'zh'}/" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_lens_eval_names_the_missing_file_or_folder(monkeypatch, tmp_path, capsys, tiny_llama):
    _no_model(monkeypatch)
    monkeypatch.delenv("LENSML_EVAL_DATA", raising=False)
    out = ["--model", str(tiny_llama), "--out", str(tmp_path / "r.json")]
    assert main(["eval", "--tasks", f"xcopa_zh@{tmp_path / 'gone.jsonl'}", *out]) == 2
    assert f"data path {tmp_path / 'gone.jsonl'} of task xcopa:zh does not exist" in capsys.readouterr().err
    (tmp_path / "data" / "xcopa" / "zh").mkdir(parents=True)
    assert main(["eval", "--tasks", "xcopa_zh", "--data-dir", str(tmp_path / "data"), *out]) == 2
    assert f"directory {tmp_path / 'data' / 'xcopa' / 'zh'} has no .jsonl/.json file for task xcopa:zh" in \
        capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "datasets", None)  # no local data and no datasets: says both fixes
    assert main(["eval", "--tasks", "xcopa_zh", *out]) == 2
    err = capsys.readouterr().err
    assert "no local data" in err and "pip install 'lensml[hub]'" in err and "--data-dir" in err
    assert not (tmp_path / "r.json").exists()


def test_hub_tasks_stay_valid_when_datasets_is_there(monkeypatch):
    monkeypatch.delenv("LENSML_EVAL_DATA", raising=False)
    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=None))
    assert EvalConfig(tasks="xwinograd_jp,m_mmlu:zh").tasks == "xwinograd_jp,m_mmlu:zh"
    with pytest.raises(LensError, match="the Hub has MT-Bench only in en"):
        EvalConfig(tasks="mtbench:zh")


def test_xwinograd_data_folder_in_the_hubs_spelling(tmp_path, fixtures):
    folder = tmp_path / "xwinograd" / "jp"
    folder.mkdir(parents=True)
    (folder / "test.jsonl").write_bytes((fixtures / "xwinograd" / "zh.jsonl").read_bytes())
    items, source, _ = load_task(parse_tasks("xwinograd_jp")[0], data_dir=str(tmp_path))
    assert len(items) == 3 and source == str(folder / "test.jsonl")
    assert EvalConfig(tasks="xwinograd:ja", data_dir=str(tmp_path), scoring=ScoringConfig(mode="letter")).tasks
