from pathlib import Path

import pytest

from lensml.config import iter_fields

from lensml.recipes.config import RunConfig, load_config
from lensml.errors import LensError


def test_yaml_then_command_line(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("langs: [zh, ja]\ntrain:\n  lr: 2.0e-4\n  loss:\n    lambdas: {zh: 1.5}\n    retain: both\nprobe:\n  samples: 50\n")
    cfg = load_config(str(path), {"train.lr": "3e-4", "train.loss.lambdas": "zh=1,ja=0.6"})
    assert cfg.langs == ["zh", "ja"] and cfg.train.lr == 3e-4 and cfg.probe.samples == 50
    assert cfg.train.loss.lambdas == {"zh": 1.0, "ja": 0.6} and cfg.train.loss.retain == "both"


def test_defaults_follow_the_paper_and_authors():
    cfg = RunConfig()
    assert (cfg.train.epochs, cfg.train.batch_size, cfg.train.weight_decay, cfg.train.warmup_ratio) == (1, 8, 0.1, 0.05)
    assert cfg.train.start_layer == -2 and cfg.central == "en"
    assert (cfg.train.loss.lambda1, cfg.train.loss.reduction, cfg.train.loss.normalize_agnostic) == (1.0, "mean", True)
    # lr (lensml.training.size_defaults), retain and lambda3 (lensml.methods.lens.size_defaults) are filled in by model size.
    assert cfg.train.lr is None and cfg.train.loss.retain is None and cfg.train.loss.lambda3 is None


def test_the_manifest_config_keeps_its_keys_and_order():
    """RunConfig is built from the registry now (recipes.config.run_config_class): the manifest's "config" is as before."""
    import lensml
    from lensml.config import to_dict
    from lensml.recipes.config import RunConfigBase, run_config_class

    assert list(to_dict(RunConfig())) == ["method", "model", "langs", "central", "probe_data", "train_data", "out",
                                          "overwrite", "push_to_hub", "gguf_out", "push_patch", "report_to", "allow_unchanged", "probe", "train",
                                          "eval", "benchmarks", "sft", "steer", "sdrrl"]
    assert run_config_class() is RunConfig is lensml.RunConfig and issubclass(RunConfig, RunConfigBase)
    assert lensml.load_config is load_config and type(load_config(None, {})) is RunConfig
    cfg = RunConfig(langs=["zh", "ja"], method="xsft")
    assert cfg.sft.max_response_tokens == 192 and cfg.steer.strength is None and cfg.languages == ["en", "zh", "ja"]


def test_every_option_has_help():
    for name, _tp, _default, f in iter_fields(RunConfig):
        assert f.metadata.get("help"), f"{name} has no help text"


@pytest.mark.parametrize("overrides, needle", [
    ({"train.nope": "1"}, "unknown option 'train.nope'"),
    ({"probe.samples": "many"}, "cannot read 'many'"),
    ({"train.loss.lambdas": "zh"}, "cannot read 'zh'"),
    ({"overwrite": "maybe"}, "cannot read 'maybe'"),
])
def test_bad_options(overrides, needle):
    with pytest.raises(LensError, match=needle):
        load_config(None, overrides)


def test_bundled_config_parses():
    cfg = load_config(str(Path(__file__).parents[1] / "configs" / "llama3_8b_multilingual.yaml"), {})
    assert cfg.model.model == "meta-llama/Meta-Llama-3-8B-Instruct" and len(cfg.langs) == 6 and cfg.train.lr == 1e-5


def test_gemma_base_config_differs_from_the_defaults_only_where_measured():
    """configs/gemma3_270m_zh.yaml: Gemma's template and lr 1e-4 (README: what fits a base model)."""
    cfg = load_config(str(Path(__file__).parents[1] / "configs" / "gemma3_270m_zh.yaml"), {"model.gguf": "g.gguf"})
    assert cfg.model.template == "configs/templates/gemma.jinja" and cfg.model.gguf == "g.gguf"
    assert cfg.train.lr == 1e-4 and cfg.train.start_layer == -2 and cfg.langs == ["zh"]
    assert (cfg.train.loss.lambda3, cfg.train.loss.retain) == (10.0, "both")


def test_offline_example_config_is_the_default_run():
    cfg = load_config(str(Path(__file__).parents[1] / "configs" / "smollm2_zh.yaml"), {})
    default = RunConfig()
    assert cfg.out == "runs/smollm2-zh"
    cfg.out = default.out
    assert cfg == default


def test_whole_numbers_and_untrained_lambdas():
    with pytest.raises(LensError, match="whole number"):
        load_config(None, {"train.epochs": 1.7})
    assert load_config(None, {"train.epochs": 2.0}).train.epochs == 2
    with pytest.raises(LensError, match="not trained"):
        load_config(None, {"train.loss.lambdas": "sw=1"})
