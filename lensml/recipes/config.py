"""RunConfig: everything `lens run` does, as one tree of the stages' own config dataclasses.

It sits with the recipes because it gathers the configs of every layer below (model, probing,
training, evaluation, the methods' own sections); the machinery that reads YAML and dotted
overrides into any such tree is lensml.config.

Why RunConfig is built, not written out: each registered method's options are a section of
it (`sft`, `steer`, ...), and the registry (lensml.methods) is the one list of methods. So
RunConfigBase holds the options every run has, and run_config_class() adds one field per
registered section with dataclasses.make_dataclass, caching one class per set of sections.
The module name RunConfig is that class for the built-in methods (same fields, order and
to_dict output as when it was written by hand); what reads a config from YAML or the command
line (load_config, lensml.cli) asks run_config_class() at that moment, so a method registered
later (a plugin, a test) gets its section, its YAML key and its flags without any edit here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import json
import logging
from pathlib import Path

import yaml

from lensml import config as _config
from lensml import methods
from lensml import tracking
from lensml.errors import LensError
from lensml.evaluation.quick import QuickEvalConfig
from lensml.evaluation.suite import EvalConfig
from lensml.languages import check_languages
from lensml.lens.probing import ProbeConfig
from lensml.results.rundir import RunDir
from lensml.runtime.models import ModelConfig
from lensml.training import Default, TrainConfig

log = logging.getLogger(__name__)

#: Short spellings of common options (`--lr` for `--train.lr`): the command line's, and the sweep grid's names.
ALIASES = {
    "model.model": ["--model"], "model.gguf": ["--gguf"], "model.template": ["--template"], "model.device": ["--device"],
    "model.dtype": ["--dtype"], "model.trust_remote_code": ["--trust-remote-code"],
    "train.lr": ["--lr"], "train.loss.lambdas": ["--lambda"], "train.loss.lambda1": ["--lambda1"],
    "train.loss.lambda3": ["--lambda3"], "train.loss.retain": ["--retain"], "train.start_layer": ["--start-layer"],
    "train.epochs": ["--epochs"], "train.samples": ["--train-samples"], "probe.samples": ["--probe-samples"],
    "benchmarks.tasks": ["--eval-tasks"], "benchmarks.limit": ["--limit"],
}


def dotted_name(name: str) -> str:
    """A person's spelling of an option -> its dotted name: `--lr`, `start-layer`, `train.start-layer` all
    give train.start_layer (aliases, leading dashes and dashes in names accepted)."""
    raw = name.strip().lstrip("-")
    aliases = {alias[2:]: dotted for dotted, spellings in ALIASES.items() for alias in spellings}
    return aliases.get(raw, raw.replace("-", "_"))


@dataclass
class RunConfigBase:
    """Everything `lens run` does: probe, evaluate, train, save, evaluate again, report (the methods' own
    sections are added by run_config_class)."""

    method: str = field(default="lens", metadata={"help": "how the model is changed: lens, or a baseline of the LENS paper (every parameter): xsft (the run's (prompt, response) pairs), xsft-full (all the instruction data of --sft.full-data), qalign (question translation, then English instruction tuning), sdrrl (self-distillation from the central language); or a control: xsft-top (xsft on LENS's top layers), steer (no training: add the language direction at inference)", "section": "train"})
    model: ModelConfig = field(default_factory=ModelConfig)
    langs: list[str] = field(default_factory=lambda: ["zh"], metadata={"help": "target languages, comma-separated", "section": "data"})
    central: str = field(default="en", metadata={"help": "the central language whose knowledge is inherited", "section": "data"})
    probe_data: str = field(default="embedded", metadata={"help": "probe texts: embedded, a .jsonl/.json path, a Hub dataset (see README)", "section": "data"})
    train_data: str = field(default="embedded", metadata={"help": "parallel prompts: embedded, a .jsonl/.json path, a Hub dataset (see README)", "section": "data"})
    out: str = field(default="runs/default", metadata={"help": "output folder", "section": "output"})
    overwrite: bool = field(default=False, metadata={"help": "replace an existing output folder (only once the new one is complete)", "section": "output"})
    push_to_hub: str | None = field(default=None, metadata={"help": "upload OUT/model (with its card) to this Hub repo, OWNER/NAME, when the run succeeds (default: none, off)", "section": "output"})
    gguf_out: str = field(default="q8_0", metadata={"help": "when the model came from a GGUF file, also write OUT/model.gguf (and OUT/Modelfile) with the changed matrices stored as: q8_0 (keeps the improvement in llama.cpp, measured), source (the file's own type where gguf-py can quantise it, else F16; a 4-bit source loses the improvement), f16, f32, or none (no GGUF); 1-D tensors are always F32", "section": "output", "choices": ["q8_0", "source", "f16", "f32", "none"]})
    push_patch: bool = field(default=False, metadata={"help": "with --push-to-hub, upload OUT/patch instead of the full model", "section": "output"})
    report_to: list[str] = field(default_factory=list, metadata={"help": "experiment trackers that get the losses per step, the learning rate, the before/after metrics, the options and report.png: tensorboard (OUT/tensorboard), wandb, mlflow, or none; comma-separated or repeated; each is an extra: pip install 'lensml[tensorboard]'", "section": "output", "repeat": True})
    allow_unchanged: bool = field(default=False, metadata={"help": "save the model even when training did not move its weights measurably (the report's first line then says it is unchanged); without it such a run fails", "section": "train"})
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: QuickEvalConfig = field(default_factory=QuickEvalConfig)
    benchmarks: EvalConfig = field(default_factory=EvalConfig)

    def __post_init__(self):
        methods.get(self.method)  # unknown names fail here, listing the known ones
        check_languages(self.langs, self.central)
        self.report_to = tracking.check_trackers(self.report_to)  # a missing tracker fails now, not after loading
        stray = sorted(set(self.train.loss.lambdas) - set(self.langs))
        if stray:
            raise LensError(f"--lambda sets {','.join(stray)}, which is not trained (--langs {','.join(self.langs)}): "
                            f"drop it or add it to --langs")

    @property
    def languages(self) -> list[str]:
        """Central first, then the targets: the order of every per-language table."""
        return [self.central] + [lang for lang in self.langs if lang != self.central]


_CLASSES: dict[tuple, type] = {}


def run_config_class() -> type[RunConfigBase]:
    """RunConfig for the methods registered now: RunConfigBase plus one field per options section, in
    registration order; the same class object for the same sections (equal configs compare equal)."""
    sections = methods.sections()
    key = tuple(sections.items())
    if key not in _CLASSES:
        own = {f.name for f in dataclasses.fields(RunConfigBase)}
        clash = sorted(own & set(sections))
        if clash:
            raise ValueError(f"method options section '{clash[0]}' is an option of every run already: "
                             f"register the method with another section name")
        cls = dataclasses.make_dataclass(
            "RunConfig", [(name, config, field(default_factory=config)) for name, config in sections.items()],
            bases=(RunConfigBase,), namespace={"__doc__": RunConfigBase.__doc__})
        cls.__module__ = __name__
        _CLASSES[key] = cls
    return _CLASSES[key]


RunConfig = run_config_class()


def load_config(path: str | None, overrides: dict[str, object], cls=None):
    """Defaults, then the file's options (read_options), then command-line overrides; validated as a whole.

    cls: the config tree to build (default: RunConfig with every method registered now).
    """
    cls = cls or run_config_class()
    return _config.load_config(None, {**(read_options(path, cls) if path else {}), **overrides}, cls)


#: The jobs whose manifest's "config" is a RunConfig (lensml.recipes.finish.write_manifest).
RUN_JOBS = ("run", "train", "probe")


def read_options(path: str, cls=None) -> dict:
    """The options --config names, dotted name -> value: a YAML file, a job's folder (its config.yaml, else the
    config its manifest.json records) or that manifest.json itself, so that a finished job runs again from it."""
    cls = cls or run_config_class()
    given = Path(path)
    if given.is_dir():
        folder = RunDir(given)
        if not folder.config_yaml.is_file() and not folder.manifest.is_file():
            raise LensError(f"--config {given} is a folder without config.yaml or manifest.json: pass a YAML file "
                            f"or a folder written by lens run, lens train or lens probe")
        given = folder.config_yaml if folder.config_yaml.is_file() else folder.manifest
    doc = _config.read_yaml(str(given))  # JSON is YAML: a manifest reads as it is
    if "kind" not in doc or not isinstance(doc.get("versions"), dict):
        return _config.flat_options(doc)
    exact = RunDir(given.parent).config_yaml
    if doc.get("kind") not in RUN_JOBS or not isinstance(doc.get("config"), dict):
        raise LensError(f"{given} is the manifest of `lens {doc.get('kind')}`, which records no run options: pass "
                        f"the config.yaml of a run, train or probe folder")
    if exact.is_file():
        log.info("options read from %s, the exact record beside %s", exact, given)
        return _config.flat_options(_config.read_yaml(str(exact)))
    log.info("options read from the config %s records", given)
    # A manifest writes an option left at a method-dependent default as its number: read it as not given.
    unset = {name: default for name, _, default, _ in _config.iter_fields(cls) if isinstance(default, Default)}
    return {k: v for k, v in _config.flat_options(doc["config"]).items() if not (k in unset and v == unset[k])}


def config_yaml(cfg, kind: str, resolved: dict | None = None) -> str:
    """OUT/config.yaml: every option of a job, such that `lens KIND --config OUT/config.yaml` builds the same config.

    An option at a default that depends on the method (training.Default: train.start_layer) is left out, so
    it stays not given; an option resolved when the job runs (null: the learning rate and the LENS loss's by
    model size) stays null and resolves again the same way from the same model; its value is in a comment.
    resolved: TrainResult.resolved, the training options as the job resolved them.
    """
    unset: list[str] = []
    doc = _given(cfg, unset)
    found = [f"{k} = {_shown(_lookup(resolved, k.split('.')[1:]))}" for k, v in _config.flat_options(doc).items()
             if v is None and k.startswith("train.") and _lookup(resolved, k.split(".")[1:]) is not None]
    subspace = " --subspace DIR" if kind == "train" else ""
    head = [f"# Every option of this `lens {kind}` job: `lens {kind} --config OUT/config.yaml --out NEW{subspace}` "
            f"runs it again (flags win).",
            "# null: resolved when the job runs (by model size), as it was here" + (": " + ", ".join(found) if found
                                                                                    else "") + ".",
            *([f"# Not written, as not given: {', '.join(unset)} (each method takes its own default)."] if unset
              else [])]
    body = yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, default_flow_style=False)
    return "\n".join(head) + "\n" + body


def _given(obj, unset: list[str], prefix: str = "") -> dict:
    """A config tree as plain data, without the options left at a training.Default (their names go to unset)."""
    out = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            out[f.name] = _given(value, unset, f"{prefix}{f.name}.")
        elif isinstance(value, Default):
            unset.append(prefix + f.name)
        else:
            out[f.name] = json.loads(json.dumps(value))  # plain types only: YAML's safe writer refuses subclasses
    return out


def _shown(value) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)  # 0.001, not 0.0010000000000000002


def _lookup(doc: dict | None, keys: list[str]):
    for key in keys:
        if not isinstance(doc, dict):
            return None
        doc = doc.get(key)
    return doc
