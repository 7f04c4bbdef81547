"""`--method steer`: the training-free baseline. Steer along the probed directions, change no weight.

train() picks lambda by measurement on the training prompts when it is not given
(lensml.methods.steer.measure.choose_strength), attaches the hooks and leaves them on, so whatever
the recipe runs next (the "after" quick evaluation, benchmarks) sees the steered model.
What reproduces the effect is the subspace and the settings (save_pretrained), not a
copy of the model.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from lensml.errors import LensError
from lensml.methods.base import Method, MethodInputs
from lensml.methods.steer.hooks import SteerConfig, Steering, SteeringHandle
from lensml.methods.steer.measure import answer_nll as steered_nll
from lensml.methods.steer.measure import choose_strength, read_off_accuracy
from lensml.runtime.models import decoder_of
from lensml.training import TrainConfig, TrainResult

#: Training prompts per language whose read-off is checked (one forward each); the held-out figure is the recipe's
#: to take (lensml.methods.steer.measure.read_off_accuracy on its held-out prompts): these overlap the probe data.
READ_OFF_PROMPTS = 16


class SteerMethod(Method):
    description = ("training-free: add lambda * delta_l in the language-specific subspace to the top layers' "
                   "last-position states")
    needs_subspace = True
    changes_weights = False

    def __init__(self):
        self.steering: Steering | None = None
        self.handle: SteeringHandle | None = None

    def trainable_names(self, model, cfg: TrainConfig) -> list[str]:
        return []  # no weight changes

    def role(self, cfg: TrainConfig) -> str:
        return "control"  # not in the LENS paper: the training-free baseline lensml adds

    def train(self, model, tokenizer, inputs: MethodInputs, cfg: TrainConfig,
              log_path: Path | None = None, options: SteerConfig | None = None) -> TrainResult:
        """Choose lambda (unless options.strength is set), attach the hooks and leave them attached."""
        if inputs.subspace is None:
            raise LensError("steering needs a probed subspace: run the probe stage or pass --subspace")
        options = options if options is not None else SteerConfig()
        if not isinstance(options, SteerConfig):
            raise LensError(f"steer options must be a SteerConfig, got {type(options).__name__}")
        if options.lang is not None and options.lang not in inputs.languages:
            raise LensError(f"--steer.lang {options.lang} is not among the run's languages "
                            f"{','.join(inputs.languages)}: add it to --langs or drop it")
        Steering(inputs.subspace, dataclasses.replace(options, strength=0.0)).check(model)  # shape, before measuring
        hidden, n_layers = model.get_input_embeddings().embedding_dim, len(decoder_of(model).layers)
        inputs.subspace.check_compatible(hidden, n_layers, inputs.languages, inputs.central)
        timings, measurement = {}, None
        prompts = {lang: [r[lang] for r in inputs.rows] for lang in inputs.languages}
        if options.strength is None:
            t0 = time.perf_counter()
            strength, measurement = choose_strength(model, tokenizer, inputs.subspace, prompts, options)
            options = dataclasses.replace(options, strength=strength)
            timings["select"] = time.perf_counter() - t0
        self.steering = Steering(inputs.subspace, options, measurement)
        t0 = time.perf_counter()
        read_off = read_off_accuracy(model, tokenizer, self.steering,
                                     {lang: ps[:READ_OFF_PROMPTS] for lang, ps in prompts.items()})
        timings["read_off"] = time.perf_counter() - t0
        self.handle = self.steering.attach(model)
        total = sum(p.numel() for p in model.parameters())
        return TrainResult(method=self.name, steps=0, lr=0.0, timings_s=timings, trainable_parameters=0,
                           total_parameters=total,
                           resolved={"steer": dataclasses.asdict(options), "measurement": measurement,
                                     "read_off_accuracy_train": read_off, "role": self.role(cfg),
                                     "instruction_rows": 0})

    def detach(self) -> None:
        """Take the hooks off (a sweep's next setting steers afresh); the settings stay for save_pretrained."""
        if self.handle is not None:
            self.handle.remove()
            self.handle = None

    def answer_nll(self, model, tokenizer, prompts: list[str], answer_ids: list[list[int]]) -> float | None:
        """Steered as generation steers (every position from the prompt's last token on): the retention figure."""
        if self.handle is None or not self.handle.attached:
            raise LensError("the steer method has no hooks attached: call train first")
        return steered_nll(model, tokenizer, prompts, handle=self.handle, answer_ids=answer_ids)

    def save_pretrained(self, directory: Path) -> None:
        """OUT/steering: steering.json (settings and the strength measurement) + subspace/."""
        if self.steering is None:
            raise LensError("nothing to save: the steer method has not run (call train first)")
        self.steering.save_pretrained(directory)
