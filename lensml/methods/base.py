"""What every training method is: a way to change a model, given the run's shared inputs.

Data loading, probing, evaluation, saving and the report are the recipe's; a method
only turns (model, tokenizer, inputs, config) into a changed model and a TrainResult.
Comparing LENS with its alternatives is then a matter of swapping the method.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from lensml.caching import ReferenceCache
from lensml.subspace import LanguageSubspace
from lensml.training import TrainConfig, TrainResult


@dataclass
class MethodInputs:
    """The run's shared inputs, as a method receives them."""

    rows: list[dict[str, str]]          # parallel training rows {lang: text}
    languages: list[str]                # central first, then the targets
    central: str
    subspace: LanguageSubspace | None   # None when the method does not need one
    cache: ReferenceCache | None = None  # reference states already computed (filled while probing)

    @property
    def targets(self) -> list[str]:
        return [lang for lang in self.languages if lang != self.central]


class Method(ABC):
    """A training method; subclasses register themselves with lensml.methods.register."""

    name: ClassVar[str]
    description: ClassVar[str]
    needs_subspace: ClassVar[bool] = True
    #: True when the method reads a lensml.caching.ReferenceCache (the recipe then may fill it while probing).
    uses_reference_cache: ClassVar[bool] = False

    def trainable_names(self, model, cfg: TrainConfig) -> list[str]:
        """Names of the parameters train() may change (what a patch is cut from). Default: all of them."""
        return [name for name, _ in model.named_parameters()]

    @abstractmethod
    def train(self, model, tokenizer, inputs: MethodInputs, cfg: TrainConfig,
              log_path: Path | None = None) -> TrainResult:
        """Change model in place; per-step records go to log_path (JSONL) while training runs."""
