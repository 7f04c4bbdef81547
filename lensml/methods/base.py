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

from lensml.lens.reference_cache import ReferenceCache
from lensml.lens.subspace import LanguageSubspace
from lensml.training import TrainConfig, TrainResult


@dataclass
class MethodInputs:
    """The run's shared inputs, as a method receives them."""

    rows: list[dict[str, str]]          # parallel training rows {lang: text}
    languages: list[str]                # central first, then the targets
    central: str
    subspace: LanguageSubspace | None   # None when the method does not need one
    cache: ReferenceCache | None = None  # reference states already computed (filled while probing)
    responses: list[dict[str, str]] | None = None  # per row {lang: response}, for methods that need them

    @property
    def targets(self) -> list[str]:
        return [lang for lang in self.languages if lang != self.central]


class Method(ABC):
    """A training method; one `lensml.methods.register(NAME, Class, Config)` line makes it runnable.

    The name and the options section are the registry's (lensml.methods), not the class's: one
    class can then serve under a name chosen where it is registered, and nothing lists methods twice.
    """

    #: The registered name, set on the instance by lensml.methods.get.
    name: str
    description: ClassVar[str]
    needs_subspace: ClassVar[bool] = True
    #: True when the method reads a lensml.lens.reference_cache.ReferenceCache (the recipe then may fill it while probing).
    uses_reference_cache: ClassVar[bool] = False
    #: True when the method needs a response per prompt (checked before the model loads).
    needs_responses: ClassVar[bool] = False
    #: False for methods that leave the weights alone (steering): the recipe then writes no model copy,
    #: patch or GGUF, but calls save_pretrained for whatever reproduces the method's effect.
    changes_weights: ClassVar[bool] = True

    def role(self, cfg: TrainConfig) -> str:
        """"paper": the method as the LENS paper runs it (a row of its Tables 1 and 5); "control": a
        comparison lensml adds, or a paper method run otherwise (e.g. a baseline on LENS's layers only).
        `lens compare` shows the two apart; each method records its role in TrainResult.resolved["role"]."""
        return "paper"

    def trainable_names(self, model, cfg: TrainConfig) -> list[str]:
        """Names of the parameters train() may change (what a patch is cut from). Default: all of them."""
        return [name for name, _ in model.named_parameters()]

    @abstractmethod
    def train(self, model, tokenizer, inputs: MethodInputs, cfg: TrainConfig,
              log_path: Path | None = None, options=None) -> TrainResult:
        """Change model in place; per-step records go to log_path (JSONL) while training runs.

        options is the method's own config (its registered section of RunConfig), None when it has none.
        """

    def response_languages(self, languages: list[str], central: str, options=None) -> list[str]:
        """Languages whose responses the training data must hold (checked before the model loads).

        Every recipe calls this before loading the model, so a method with inputs of its own (xsft-full's
        --sft.full-data, sdrrl's translator) checks them here too: a bad one fails in a line, before minutes of work.
        """
        return []

    def detach(self) -> None:
        """Take off whatever train() left on the model besides its weights (hooks), so that the next
        setting of a sweep starts from the plain model; weight-changing methods leave nothing."""

    def answer_nll(self, model, tokenizer, prompts: list[str], answer_ids: list[list[int]]) -> float | None:
        """The changed model's NLL of given answer tokens, for methods whose effect a plain teacher-forced forward
        does not see (steering); None: the quick evaluation's own computation is right."""
        return None

    def save_pretrained(self, directory: Path) -> None:
        """For methods that do not change weights: write what reproduces their effect into directory."""
        # Not a placeholder: weight-changing methods have nothing of their own to save (the recipe saves
        # the model); only methods with changes_weights = False override this.
        raise NotImplementedError(f"method '{self.name}' changes weights: the recipe saves the model")
