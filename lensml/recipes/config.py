"""RunConfig: everything `lens run` does, as one tree of the stages' own config dataclasses.

It sits with the recipes because it gathers the configs of every layer below (model, probing,
training, evaluation, the methods' own sections); the machinery that reads YAML and dotted
overrides into any such tree is lensml.config.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lensml import config as _config
from lensml import methods
from lensml.errors import LensError
from lensml.evaluation.quick import QuickEvalConfig
from lensml.evaluation.suite import EvalConfig
from lensml.languages import check_languages
from lensml.lens.probing import ProbeConfig
from lensml.methods.sft import SFTConfig
from lensml.methods.steer.hooks import SteerConfig
from lensml.runtime.models import ModelConfig
from lensml.training import TrainConfig


@dataclass
class RunConfig:
    """Everything `lens run` does: probe, evaluate, train, save, evaluate again, report."""

    method: str = field(default="lens", metadata={"help": "how the model is changed: lens, or a baseline to compare with: xsft (fine-tune the same top layers on (prompt, response) pairs), xsft-full (every parameter), qalign (question translation, then English instruction tuning), steer (no training: add the language direction at inference)", "section": "train"})
    model: ModelConfig = field(default_factory=ModelConfig)
    langs: list[str] = field(default_factory=lambda: ["zh"], metadata={"help": "target languages, comma-separated", "section": "data"})
    central: str = field(default="en", metadata={"help": "the central language whose knowledge is inherited", "section": "data"})
    probe_data: str = field(default="embedded", metadata={"help": "probe texts: embedded, a .jsonl/.json path, a Hub dataset (see README)", "section": "data"})
    train_data: str = field(default="embedded", metadata={"help": "parallel prompts: embedded, a .jsonl/.json path, a Hub dataset (see README)", "section": "data"})
    out: str = field(default="runs/default", metadata={"help": "output folder", "section": "output"})
    overwrite: bool = field(default=False, metadata={"help": "replace an existing output folder (only once the new one is complete)", "section": "output"})
    push_to_hub: str | None = field(default=None, metadata={"help": "upload OUT/model (with its card) to this Hub repo, OWNER/NAME, when the run succeeds (default: none, off)", "section": "output"})
    gguf_out: str = field(default="source", metadata={"help": "when the model came from a GGUF file, also write OUT/model.gguf with the changed tensors stored as: source (the file's own type where gguf-py can quantise it, else F16), f16, f32, or none (no GGUF)", "section": "output", "choices": ["source", "f16", "f32", "none"]})
    push_patch: bool = field(default=False, metadata={"help": "with --push-to-hub, upload OUT/patch instead of the full model", "section": "output"})
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: QuickEvalConfig = field(default_factory=QuickEvalConfig)
    benchmarks: EvalConfig = field(default_factory=EvalConfig)
    sft: SFTConfig = field(default_factory=SFTConfig)
    steer: SteerConfig = field(default_factory=SteerConfig)

    def __post_init__(self):
        methods.get(self.method)  # unknown names fail here, listing the known ones
        check_languages(self.langs, self.central)
        stray = sorted(set(self.train.loss.lambdas) - set(self.langs))
        if stray:
            raise LensError(f"--lambda sets {','.join(stray)}, which is not trained (--langs {','.join(self.langs)}): "
                            f"drop it or add it to --langs")

    @property
    def languages(self) -> list[str]:
        """Central first, then the targets: the order of every per-language table."""
        return [self.central] + [lang for lang in self.langs if lang != self.central]


def load_config(path: str | None, overrides: dict[str, object], cls=RunConfig):
    """Defaults, then the YAML file, then command-line overrides; validated as a whole."""
    return _config.load_config(path, overrides, cls)
