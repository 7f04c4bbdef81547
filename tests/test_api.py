"""The public Python API: what a notebook imports."""

import json
import re
import shutil

import pytest

import lensml
from lensml import LensError
from lensml.evaluation.lm_eval_format import result_entries
from tests.evaluation.conftest import FIXTURES


def test_public_names_import():
    from lensml import LanguageSubspace, RunConfig, load_model, probe, run, train  # noqa: F401

    for name in lensml.__all__:
        assert getattr(lensml, name) is not None, name
    assert callable(lensml.run) and callable(lensml.train) and lensml.RunConfig().method == "lens"


def test_notebook_example(tiny_llama, parallel_data):
    """The README's five lines, on a tiny model."""
    from lensml import LanguageSubspace, ModelConfig, ProbeConfig, TrainConfig, load_model, load_rows, load_texts, probe, train

    model, tok, name = load_model(ModelConfig(model=str(tiny_llama)))
    sub = probe(model, tok, load_texts(str(parallel_data), ["en", "zh"]), "en", ProbeConfig())
    result = train(model, tok, sub, load_rows(str(parallel_data), ["en", "zh"]), ["zh"], "en", TrainConfig(lr=1e-3))
    assert isinstance(sub, LanguageSubspace) and result.steps == 3 and result.method == "lens"


def _xcopa_data_dir(root):
    """A LENSML_EVAL_DATA folder holding the test fixture's XCOPA zh items (DATA_DIR/xcopa/zh/)."""
    folder = root / "xcopa" / "zh"
    folder.mkdir(parents=True)
    shutil.copy(FIXTURES / "xcopa" / "val.zh.jsonl", folder)
    return root


def test_the_module_docstring_example_runs_as_written(tiny_llama, parallel_data, tmp_path, monkeypatch):
    """help(lensml)'s example, on the tiny model and data (the model id and the data source swapped, nothing else)."""
    monkeypatch.setenv("LENSML_EVAL_DATA", str(_xcopa_data_dir(tmp_path / "data")))
    lines = [line[4:] for line in lensml.__doc__.splitlines() if line.startswith("    ")]
    code = "\n".join(lines)
    assert code.startswith("from lensml import ") and 'ModelConfig(model="smollm2-135m-instruct")' in code
    code = code.replace("smollm2-135m-instruct", str(tiny_llama)).replace('"embedded"', repr(str(parallel_data)))
    namespace: dict = {}
    exec(compile(code, "lensml.__doc__", "exec"), namespace)  # noqa: S102 - our own docstring
    assert namespace["result"].steps == 3 and namespace["result"].method == "lens"
    (entry,) = result_entries(namespace["scores"])
    assert (entry["task"], entry["language"], entry["n"]) == ("xcopa", "zh", 4) and 0 <= entry["value"] <= 1


def test_evaluate_takes_a_model_or_its_name(tiny_llama, tmp_path, monkeypatch):
    from lensml import EvalConfig, ModelConfig, evaluate, load_model
    from lensml.evaluation.suite import evaluate as suite_evaluate

    tasks = f"xcopa:zh@{FIXTURES / 'xcopa'}"
    by_name = evaluate(str(tiny_llama), [tasks], limit=3)
    model, tok, _ = load_model(ModelConfig(model=str(tiny_llama)))
    given = evaluate(model, tasks, tokenizer=tok, limit=3, out=tmp_path / "r.json", seed=7,
                     scoring={"mode": "loglik"})
    suite = suite_evaluate(model, tok, "tiny", EvalConfig(tasks=tasks, limit=3), tmp_path / "suite")
    values = [[(e["task"], e["n"], e["value"]) for e in result_entries(d)] for d in (by_name, given, suite)]
    assert values[0] == values[1] == values[2] and values[0][0][:2] == ("xcopa", 3)
    assert result_entries(json.loads((tmp_path / "r.json").read_text())) == result_entries(given)
    assert given["options"]["seed"] == 7 and by_name["options"]["save_samples"] is False


XCOPA = f"xcopa:zh@{FIXTURES / 'xcopa'}"


@pytest.mark.parametrize("call, needle", [
    (lambda e, m: e(m, XCOPA, limit=0), "limit"),
    (lambda e, m: e(m, XCOPA, epochs=3), "evaluate() has no option 'epochs'"),
    (lambda e, m: e(m, XCOPA, scoring={"modes": "x"}), "evaluate() has no option 'scoring.modes'"),
    (lambda e, m: e(m, []), "got no task"),
    (lambda e, m: e(m, XCOPA, tokenizer=object()), "tokenizer= goes with a loaded model"),
    (lambda e, m: e(object(), XCOPA), "needs its tokenizer"),
])
def test_evaluate_refuses_bad_input_before_a_model_loads(call, needle, tiny_llama, monkeypatch):
    import lensml.evaluation.api as api
    from lensml import evaluate

    monkeypatch.setattr(api, "load_model", lambda *a, **k: (_ for _ in ()).throw(AssertionError("loaded a model")))
    with pytest.raises(LensError, match=re.escape(needle)):
        call(evaluate, str(tiny_llama))


def test_train_result_repr_is_one_short_line():
    from lensml.training import TrainResult

    history = [{"step": i + 1, "loss": 1.0 / (i + 1), "agnostic": 0.1} for i in range(500)]
    result = TrainResult("lens", 500, 1e-3, history, {"steps": 12.34}, 5_430, 100_000, {"lr": 1e-3, "big": "x" * 999})
    assert repr(result) == ("TrainResult(method='lens', steps=500, lr=0.001, final_loss=0.002, "
                            "trainable=5.43% of 100,000, train_s=12.3)")
    assert repr(TrainResult("xsft", 0, 2e-5)) == "TrainResult(method='xsft', steps=0, lr=2e-05, trainable=0.00% of 0)"
