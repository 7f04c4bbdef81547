"""Adding a training method is one module and one registration: the recipe, report, config and CLI need no edit."""

import contextlib
import dataclasses
import importlib
import io
import json
import sys

import pytest

from lensml import methods
from lensml.cli import build_parser, main
from lensml.cli.args import config_from
from lensml.config import to_dict
from lensml.errors import LensError
from lensml.methods.base import Method
from lensml.recipes.config import RunConfig, load_config, run_config_class
from lensml.runtime.models import input_device
from lensml.runtime.templating import encode_prompts, pad
from lensml.runtime.topblock import TopBlock
from lensml.training import TrainResult, optimise, size_defaults
from tests.recipes.test_run import common


class CentralLM(Method):
    """A toy method: next-token loss on the central language's prompts, top block only (needs no subspace)."""

    description = "test method"
    needs_subspace = False

    def train(self, model, tokenizer, inputs, cfg, log_path=None, options=None):
        block = TopBlock(model, cfg.start_layer)
        params = block.parameters()
        for p in model.parameters():
            p.requires_grad_(False)
        for p in params:
            p.requires_grad_(True)
        cfg = size_defaults(cfg, sum(p.numel() for p in model.parameters()))
        ids = encode_prompts(tokenizer, [r[inputs.central] for r in inputs.rows], cfg.max_length)
        device = input_device(model)

        def step(idx, weight):
            batch = pad([ids[i] for i in idx], tokenizer.pad_token_id, "right").to(device)
            labels = batch.input_ids.masked_fill(batch.attention_mask == 0, -100)
            loss = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, labels=labels).loss
            if weight is not None:
                (loss * weight).backward()
            return {"loss": float(loss.detach())}

        result = TrainResult(self.name, 0, cfg.lr, trainable_parameters=sum(p.numel() for p in params),
                             total_parameters=sum(p.numel() for p in model.parameters()))
        model.train()
        optimise(params, len(ids), cfg, step, result, ("loss",), device, log_path)
        model.eval()
        return result


@pytest.fixture
def registered():
    methods.register("toy-central-lm", CentralLM)
    yield "toy-central-lm"
    methods.unregister("toy-central-lm")


def test_a_registered_method_runs_through_lens_run(registered, tiny_llama, parallel_data, tmp_path):
    out = tmp_path / "run"
    assert main(["run", *common(tiny_llama, parallel_data), "--out", str(out), "--method", registered,
                 "--train.batch-size", "4"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["train"]["method"] == registered and report["train"]["steps"] == 6
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["method"] == registered and list(manifest["config"]) == list(to_dict(RunConfig()))
    assert not (out / "subspace").exists()  # no probing for a method that needs no subspace
    assert report["quick_eval"]["base"]["zh"]["n"] == 6


def test_registry_lists_lens_and_refuses_unknown_names():
    assert "lens" in methods.names() and methods.get("lens").needs_subspace and methods.get("lens").name == "lens"
    with pytest.raises(LensError, match="unknown method 'nope'"):
        methods.get("nope")
    with pytest.raises(ValueError, match="already registered"):
        methods.register("lens", type("Other", (CentralLM,), {}))
    with pytest.raises(TypeError, match="not a lensml.methods.base.Method"):
        methods.register("toy", object)


def test_built_in_sections_and_their_sharing():
    assert methods.sections() == {"sft": methods.registration("xsft").config, "steer": methods.registration("steer").config,
                                  "sdrrl": methods.registration("sdrrl").config}
    assert list(methods.sections()) == ["sft", "steer", "sdrrl"]
    assert [methods.registration(n).section for n in ("lens", "xsft", "xsft-full", "qalign", "sdrrl", "steer",
                                                      "xsft-top")] == [None, "sft", "sft", "sft", "sdrrl", "steer", "sft"]
    assert methods.section_titles() == {"sft": "fine-tuning baselines (--method xsft, xsft-full, qalign, xsft-top)",
                                        "sdrrl": "SDRRL: self-distillation from the central language (--method sdrrl)",
                                        "steer": "training-free steering (--method steer)"}
    sft = methods.registration("xsft")
    assert methods.register("xsft", sft.method, sft.config, section="sft") == sft  # the same line again: a no-op

    @dataclasses.dataclass
    class Other:
        """Another config."""

    try:
        with pytest.raises(ValueError, match="section 'sft' already holds SFTConfig"):
            methods.register("toy-sft", CentralLM, Other, section="sft")
        methods.register("toy-sft", CentralLM, sft.config, section="sft")  # sharing the same class is the point
        assert methods.section_titles()["sft"].endswith("(--method xsft, xsft-full, qalign, xsft-top, toy-sft)")
        assert methods.options_of("toy-sft", RunConfig(sft=sft.config(max_response_tokens=7))).max_response_tokens == 7
    finally:
        methods.unregister("toy-sft")
    assert "toy-sft" not in methods.names() and methods.options_of("lens", RunConfig()) is None


DUMMY_MODULE = '''"""A method with one option, written by the test as a plugin would be."""

from dataclasses import dataclass, field

from lensml.methods.base import Method


@dataclass
class DummyConfig:
    """Options of the dummy method."""

    option: int = field(default=1, metadata={"help": "how dummy the dummy method is"})


class DummyMethod(Method):
    description = "test method with one option"
    needs_subspace = False

    def train(self, model, tokenizer, inputs, cfg, log_path=None, options=None):
        # A registry double: these tests check registration, flags and config sections, never training.
        raise NotImplementedError("never trained in these tests")
'''


@pytest.fixture
def dummy(tmp_path, monkeypatch):
    """A method module in tmp_path, imported and registered as `dummy`; unregistered afterwards."""
    (tmp_path / "lensml_dummy_method.py").write_text(DUMMY_MODULE, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module("lensml_dummy_method")
    methods.register("dummy", module.DummyMethod, module.DummyConfig)
    yield module
    methods.unregister("dummy")
    sys.modules.pop("lensml_dummy_method", None)


def _help(*argv) -> str:
    text = io.StringIO()
    with contextlib.redirect_stdout(text), pytest.raises(SystemExit):
        build_parser().parse_args([*argv, "--help"])
    return text.getvalue()


def test_a_registered_config_is_a_section_of_the_config_the_flags_and_yaml(dummy, tmp_path):
    for command in ("run", "train", "sweep"):
        text = _help(command)
        assert "options of the dummy method (--method dummy):" in text and "--dummy.option OPTION" in text, command
        assert "how dummy the dummy method is (default: 1)" in text and "--sft.include-central" in text
    cfg = config_from(build_parser().parse_args(["run", "--method", "dummy", "--dummy.option", "3"]))
    assert cfg.method == "dummy" and cfg.dummy.option == 3 and isinstance(cfg.dummy, dummy.DummyConfig)
    assert list(to_dict(cfg)) == [*to_dict(RunConfig()), "dummy"]  # the built-in sections keep their place
    assert methods.options_of("dummy", cfg) is cfg.dummy
    path = tmp_path / "run.yaml"
    path.write_text("method: dummy\ndummy:\n  option: 3\nsft:\n  include_central: true\n")
    loaded = load_config(str(path), {})
    assert loaded.dummy == cfg.dummy and loaded.sft.include_central
    with pytest.raises(LensError, match="cannot read 'many'"):
        load_config(None, {"dummy.option": "many"})
    # A config built before the method registered has no section: the method gets its defaults.
    assert methods.options_of("dummy", RunConfig(method="dummy")) == dummy.DummyConfig()
    assert run_config_class() is cfg.__class__ is not RunConfig


def test_unregistering_gives_the_built_in_config_back(dummy):
    assert run_config_class() is not RunConfig
    methods.unregister("dummy")
    assert run_config_class() is RunConfig and "--dummy.option" not in _help("run")
    with pytest.raises(LensError, match="unknown option 'dummy.option'"):
        load_config(None, {"dummy.option": "3"})
    with pytest.raises(LensError, match="unknown method 'dummy'"):
        load_config(None, {"method": "dummy"})


def test_a_section_that_is_an_option_of_every_run_is_refused():
    methods.register("train", CentralLM, type(RunConfig().probe))
    try:
        with pytest.raises(ValueError, match="section 'train' is an option of every run"):
            run_config_class()
    finally:
        methods.unregister("train")
    assert run_config_class() is RunConfig


def test_lens_method_needs_a_subspace():
    from lensml.methods.base import MethodInputs
    with pytest.raises(LensError, match="needs a probed subspace"):
        methods.get("lens").train(None, None, MethodInputs([], ["en", "zh"], "en", None), None)
