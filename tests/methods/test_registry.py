"""Adding a training method is one class and its registration: the recipe, report and CLI need no edit."""

import json

import pytest

from lensml import methods
from lensml.runtime.topblock import TopBlock
from lensml.cli import main
from lensml.errors import LensError
from lensml.methods.base import Method
from lensml.runtime.models import input_device
from lensml.runtime.templating import encode_prompts, pad
from lensml.training import TrainResult, optimise, size_defaults
from tests.recipes.test_run import common


class CentralLM(Method):
    """A toy method: next-token loss on the central language's prompts, top block only (needs no subspace)."""

    name = "toy-central-lm"
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
    methods.register(CentralLM)
    yield CentralLM
    methods._REGISTRY.pop(CentralLM.name)


def test_a_registered_method_runs_through_lens_run(registered, tiny_llama, parallel_data, tmp_path):
    out = tmp_path / "run"
    assert main(["run", *common(tiny_llama, parallel_data), "--out", str(out), "--method", registered.name,
                 "--train.batch-size", "4"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["train"]["method"] == registered.name and report["train"]["steps"] == 6
    assert json.loads((out / "manifest.json").read_text())["method"] == registered.name
    assert not (out / "subspace").exists()  # no probing for a method that needs no subspace
    assert report["quick_eval"]["base"]["zh"]["n"] == 6


def test_registry_lists_lens_and_refuses_unknown_names():
    assert "lens" in methods.names() and methods.get("lens").needs_subspace
    with pytest.raises(LensError, match="unknown method 'nope'"):
        methods.get("nope")
    with pytest.raises(ValueError, match="already registered"):
        methods.register(type("Other", (CentralLM,), {"name": "lens"}))


def test_lens_method_needs_a_subspace():
    from lensml.methods.base import MethodInputs
    with pytest.raises(LensError, match="needs a probed subspace"):
        methods.get("lens").train(None, None, MethodInputs([], ["en", "zh"], "en", None), None)
