"""The run's card: a usage snippet that runs as written, and numbers as a person writes them."""

import contextlib
import io
import re

import pytest
import torch

from lensml.cli import main
from lensml.export.card import EXAMPLE_PROMPTS, human, human_options, write_steering_card
from lensml.results.report import RunReport, TrainSummary
from tests.recipes.test_run import common


@pytest.mark.parametrize("value, text", [
    (0.001, "1e-3"), (1e-05, "1e-5"), (0.30000000000000004, "0.3"), (300, "300"), (300.0, "300"),
    (0.0010000000000000002, "1e-3"), (2.5e-4, "2.5e-4"), (3e-4, "3e-4"), (0.05, "0.05"), (0.123456, "0.1235"),
    (12.5, "12.5"), (12345678.0, "1.235e7"), (-0.002, "-2e-3"), (0.0, "0"), (-3, "-3"), (True, "True"),
    (None, "None"), ("lens", "lens"),
])
def test_numbers_as_a_person_writes_them(value, text):
    assert human(value) == text


def test_options_read_as_name_value_pairs():
    options = {"lr": 0.0010000000000000002, "steps": 25, "loss": {"lambda1": 0.1 + 0.2, "retain": "kl"},
               "layers": [2, 3], "warmup_ratio": 0.1}
    assert human_options(options) == "lr=1e-3, steps=25, loss={lambda1=0.3, retain=kl}, layers=[2, 3], warmup_ratio=0.1"


@pytest.fixture(scope="module")
def tiny_run(tiny_llama, parallel_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("card") / "run"
    assert main(["run", *common(tiny_llama, parallel_data), "--out", str(out), "--eval.no-enabled"]) == 0
    return out


def test_the_cards_usage_snippet_runs_as_written(tiny_run):
    card = (tiny_run / "model" / "README.md").read_text(encoding="utf-8")
    (snippet,) = re.findall(r"```python\n(.*?)```", card, flags=re.S)
    assert snippet.count('"PATH/TO/model"') == 2 and "apply_chat_template" in snippet
    assert f'"content": "{EXAMPLE_PROMPTS["zh"]}"' in snippet  # the run's first target language
    namespace: dict = {}
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(snippet.replace("PATH/TO/model", str(tiny_run / "model")), "card", "exec"), namespace)  # noqa: S102
    inputs, output, tokenizer = namespace["inputs"], namespace["output"], namespace["tokenizer"]
    assert inputs["input_ids"].shape[0] == 1 and output.shape[1] > inputs["input_ids"].shape[1]
    assert torch.equal(output[0, :inputs["input_ids"].shape[1]], inputs["input_ids"][0])  # the prompt, templated
    assert "<|im_start|>assistant" in tokenizer.decode(inputs["input_ids"][0])
    new = tokenizer.decode(output[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    assert printed.getvalue() == new + "\n"


def test_the_cards_numbers_are_written_as_a_person_would(tiny_run):
    card = (tiny_run / "model" / "README.md").read_text(encoding="utf-8")
    assert "peak learning rate 1e-3;" in card and "lr=1e-3" in card
    assert not re.search(r"\d\.\d{8,}", card), re.search(r".{40}\d\.\d{8,}.{10}", card)


def test_the_steering_card_too(tmp_path):
    report = RunReport("m", "en", ["en", "ja"], TrainSummary("steer", 0, 0.0, {}, 0, 1000))
    manifest = {"kind": "run", "base_model": "m", "train_resolved": {"measurement": True, "steer": {
        "strength": 0.1 + 0.2, "grid": [0.1, 0.2, 0.30000000000000004], "start_layer": -2, "pull": 0.0}}}
    write_steering_card(tmp_path / "README.md", report, manifest)
    card = (tmp_path / "README.md").read_text(encoding="utf-8")
    assert "Strength lambda = 0.3 language gaps, chosen by measurement on the training prompts among [0.1, 0.2, 0.3];" \
        in card
    assert "Settings (resolved): `strength=0.3, grid=[0.1, 0.2, 0.3], start_layer=-2, pull=0`." in card
