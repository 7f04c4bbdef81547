"""Training-free steering: add lambda * delta_l to the top layers' last-position states at inference.

From the probed subspace alone (no weight changes), forward hooks move the state of a
prompt of language l along delta_l = M_s M_s^T (m_l - m_c), away from the central language
in the language-specific subspace, and optionally remove a share of its agnostic-component
distance to the central language's mean. The language is given (--steer-lang) or read off
the prompt's own state: the nearest language mean in the specific subspace at one layer.

Where the hooks sit. The probed entry e < n-1 is the output of decoder layer e (the
residual stream), so layers start..n-2 get forward hooks on their outputs; the last
entry (n-1) was measured AFTER the final norm, so it is added to the final norm's
output, not to the last decoder layer's (whose pre-norm output was never probed and
lives on another scale). What is added at every hooked module is thus in the space its
direction was measured in.

Which positions. Per forward, each sequence's last real token (left or right padding,
from the attention mask): under generate with a KV cache, the prompt's last token on the
prompt pass, then every generated token. The language read on the prompt pass is kept for
the decode steps. `SteeringHandle.from_positions` steers every position from a given one
on: teacher-forced scoring steered exactly as generation steers (answer_nll). Lambda is
picked by measurement (lensml.methods.steer.measure: choose_strength; read_off_accuracy says how often read-off is right).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import weakref
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch

from lensml.errors import LensError
from lensml.io import dumps, staged_dir
from lensml.lens.subspace import CONFIG as SUBSPACE_CONFIG
from lensml.lens.subspace import LanguageSubspace
from lensml.runtime import known_hooks
from lensml.runtime.models import decoder_of
from lensml.runtime.templating import last_token_index

log = logging.getLogger(__name__)

def steering_only(model) -> list["SteeringHandle"] | None:
    """The steering handles on model when they are all its hooks ([] for none); None when other hooks are on it too."""
    return known_hooks.known_only(model)


SETTINGS = "steering.json"
FORMAT = "lensml-steering"
VERSION = 1


@dataclass
class SteerConfig:
    """Training-free steering.

    Along the probed language directions, at inference only (lens run --method steer): the options
    that choose how far and where.
    """

    strength: float | None = field(default=None, metadata={"help": "lambda: how many language gaps delta_l to add (default: chosen by measurement on the training prompts, see --steer.grid)"})
    pull: float = field(default=0.0, metadata={"help": "share of the agnostic-component distance to the central language's mean to remove, 0..1 (target languages only)"})
    start_layer: int = field(default=-2, metadata={"help": "first steered probed layer; negative counts from the top (-2: the last decoder layer's input and the final norm's output)"})
    lang: str | None = field(default=None, metadata={"help": "steer every prompt as this language (default: read it off each prompt's state)"})
    read_layer: int | None = field(default=None, metadata={"help": "probed layer the language is read off (default: the one just below start_layer); at or below start_layer"})
    grid: list[float] = field(default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 1.0], metadata={"help": "lambda values measured when strength is unset (on SmolLM2-135M answers collapse from 1 on)"})
    select_prompts: int = field(default=8, metadata={"help": "training prompts per language the strength selection reads"})
    select_tokens: int = field(default=64, metadata={"help": "greedy tokens per answer in the strength selection (the quick evaluation's length: loops show after 24)"})
    english_tolerance: float = field(default=0.02, metadata={"help": "largest relative rise of the central language's answer NLL a chosen strength may cause"})

    def __post_init__(self):
        if self.strength is not None and not (math.isfinite(self.strength) and self.strength >= 0):
            raise LensError(f"steer.strength must be a finite number >= 0, got {self.strength}: leave it unset to measure one")
        if not (math.isfinite(self.pull) and 0 <= self.pull <= 1):
            raise LensError(f"steer.pull must be in [0, 1], got {self.pull}")
        if not self.grid or not all(math.isfinite(g) and g >= 0 for g in self.grid):
            raise LensError(f"steer.grid must list finite numbers >= 0, got {self.grid}: e.g. --steer.grid 0,0.5,1,2")
        for name in ("select_prompts", "select_tokens"):
            if getattr(self, name) < 1:
                raise LensError(f"steer.{name} must be at least 1, got {getattr(self, name)}")
        if not (math.isfinite(self.english_tolerance) and self.english_tolerance >= 0):
            raise LensError(f"steer.english_tolerance must be a finite number >= 0, got {self.english_tolerance}")
        if self.lang is not None and not self.lang.strip():
            raise LensError("steer.lang is empty: give a language code such as zh, or leave it unset to read it off")


def read_off(states: torch.Tensor, subspace: LanguageSubspace, layer: int) -> list[str]:
    """The language of each state (k, d): the nearest language mean in layer's specific subspace."""
    _, m_s = subspace.projectors(layer)
    coords = states.detach().to("cpu", torch.float64) @ m_s                # (k, r)
    means = subspace.means[layer] @ m_s                                    # (L, r)
    nearest = torch.cdist(coords, means).argmin(dim=1)
    return [subspace.languages[i] for i in nearest.tolist()]


class SteeringHandle:
    """The hooks of one Steering on one model. remove() (or leaving a with-block) takes them all off.

    `languages` holds the language of each sequence of the current call (read off or given).
    """

    def __init__(self, steering: "Steering", model, start: int, read: int):
        self.steering, self.start, self.read = steering, start, read
        self.languages: list[str] | None = None
        self._starts: torch.Tensor | None = None
        self._paused = False
        self._cache: dict = {}
        decoder = decoder_of(model)
        n = len(decoder.layers)
        modules = {e: (decoder.norm if e == n - 1 else decoder.layers[e]) for e in range(min(read, start), n)}
        self._hooks = [decoder.register_forward_pre_hook(self._begin, with_kwargs=True)]
        self._hooks += [modules[e].register_forward_hook(self._hook(e)) for e in sorted(modules)
                        if e == read or e >= start]
        self._model = weakref.ref(model)
        known_hooks.add(model, self)

    def remove(self) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks = []
        model = self._model()
        if model is not None:
            known_hooks.discard(model, self)

    @property
    def hook_ids(self) -> set[int]:
        return {h.id for h in self._hooks}

    @contextmanager
    def paused(self):
        """Forwards inside see no steering and read nothing off: a decoder that prefills all but each
        prompt's last token (lensml.runtime.decoding) steers as generate() does, from that token on."""
        self._paused = True
        try:
            yield self
        finally:
            self._paused = False

    def restart(self) -> None:
        """The next forward starts a new call: its languages are read off (or set) afresh."""
        self.languages = None

    def __enter__(self) -> "SteeringHandle":
        return self

    def __exit__(self, *exc) -> None:
        self.remove()

    @property
    def attached(self) -> bool:
        return bool(self._hooks)

    @contextmanager
    def from_positions(self, starts: torch.Tensor):
        """While active, each forward steers every real position >= starts[row] and reads the language at
        starts[row] (a prompt's last token): a teacher-forced answer is steered as generation steers it."""
        self._starts = starts
        try:
            yield self
        finally:
            self._starts = None

    def _begin(self, _module, args, kwargs) -> None:
        """Decoder pre-hook: which positions this forward steers, and whether it starts a new call."""
        if self._paused:
            return
        x = kwargs.get("input_ids", args[0] if args else None)
        x = x if x is not None else kwargs["inputs_embeds"]
        b, t = x.shape[:2]
        mask = kwargs.get("attention_mask")
        past = kwargs.get("cache", kwargs.get("past_key_values"))
        if torch.is_tensor(mask) and mask.dim() == 2:
            fresh, chunk = mask.shape[1] == t, mask[:, -t:].to(x.device)
        else:
            fresh = past is None or not hasattr(past, "get_seq_length") or past.get_seq_length() == 0
            chunk = torch.ones(b, t, dtype=torch.long, device=x.device)
        positions = torch.arange(t, device=x.device)
        if self._starts is not None:
            starts = self._starts.to(x.device)
            selected = (positions[None, :] >= starts[:, None]) & chunk.bool()
            self._read_at = starts
        else:
            self._read_at = last_token_index(chunk)
            selected = positions[None, :] == self._read_at[:, None]
        self._rows, self._pos = selected.nonzero(as_tuple=True)
        cfg = self.steering.cfg
        if cfg.lang is not None:
            self.languages = [cfg.lang] * b
        elif fresh or self.languages is None or len(self.languages) != b:
            self.languages = None  # read off at the read layer during this forward

    def _hook(self, entry: int):
        def hook(_module, _args, output):
            if self._paused:
                return None
            h = output[0] if isinstance(output, tuple) else output
            if entry == self.read and self.languages is None:
                rows = torch.arange(h.shape[0], device=h.device)
                self.languages = read_off(h[rows, self._read_at.to(h.device)], self.steering.subspace, entry)
            if entry < self.start:
                return None
            steered = self._add(h, entry)
            return (steered, *output[1:]) if isinstance(output, tuple) else steered
        return hook

    def _vectors(self, entry: int, dtype, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(strength * delta per language (L, d) in dtype, unit agnostic a (d,), m_c . a), cached per device."""
        key = (entry, dtype, device)
        if key not in self._cache:
            sub, cfg = self.steering.subspace, self.steering.cfg
            deltas = torch.stack([sub.direction(lang, entry) for lang in sub.languages]) * cfg.strength
            a, _ = sub.projectors(entry)
            central = sub.means[entry, sub.languages.index(sub.central)]
            self._cache[key] = (deltas.to(device, dtype), a.to(device, torch.float32),
                                central.dot(a).to(device, torch.float32))
        return self._cache[key]

    def _add(self, h: torch.Tensor, entry: int) -> torch.Tensor:
        if self.languages is None:
            raise RuntimeError("steering hook ran before the language was read off")
        sub = self.steering.subspace
        deltas, a, central_a = self._vectors(entry, h.dtype, h.device)
        lang_idx = torch.tensor([sub.languages.index(lang) for lang in self.languages], device=h.device)
        rows, pos = self._rows.to(h.device), self._pos.to(h.device)
        vec = deltas[lang_idx[rows]]
        pull = self.steering.cfg.pull
        if pull > 0:
            coef = h[rows, pos].float() @ a - central_a
            coef = coef * (lang_idx[rows] != sub.languages.index(sub.central))
            vec = vec + (-pull * coef[:, None] * a).to(h.dtype)
        return h.index_put((rows, pos), h[rows, pos] + vec)


@dataclass
class Steering:
    """A probed subspace and the settings to steer a model with it; attach() puts the hooks on."""

    subspace: LanguageSubspace
    cfg: SteerConfig
    measurement: list[dict] | None = None   # the strength selection's table, when one was run

    def layers(self, num_layers: int) -> tuple[int, int]:
        """(first steered entry, read entry), resolved against num_layers and checked."""
        start = self.cfg.start_layer + num_layers if self.cfg.start_layer < 0 else self.cfg.start_layer
        if not 0 <= start < num_layers:
            raise LensError(f"steer.start_layer {self.cfg.start_layer} is outside the model's {num_layers} layers: "
                            f"use 0..{num_layers - 1} or -1..-{num_layers}")
        read = self.cfg.read_layer
        read = max(start - 1, 0) if read is None else (read + num_layers if read < 0 else read)
        if not 0 <= read <= start:
            raise LensError(f"steer.read_layer {self.cfg.read_layer} must be at or below the first steered layer "
                            f"({start}): the language has to be known before anything is added")
        return start, read

    def check(self, model, model_name: str | None = None) -> None:
        """Refuse a subspace probed on a model of another shape (and settings that do not fit the model);
        warn when only the recorded model name differs (a fine-tune of the probed model is legitimate)."""
        hidden, n = model.get_input_embeddings().embedding_dim, len(decoder_of(model).layers)
        probed_on = self.subspace.metadata.get("model") or "another model"
        if (hidden, n) != (self.subspace.hidden_size, self.subspace.num_layers):
            raise LensError(f"the steering subspace was probed on {probed_on} (hidden size {self.subspace.hidden_size}, "
                            f"{self.subspace.num_layers} layers), this model has {hidden} and {n}: "
                            f"probe this model (lens probe) and steer with that")
        self.layers(n)
        if self.cfg.lang is not None and self.cfg.lang not in self.subspace.languages:
            raise LensError(f"steer language '{self.cfg.lang}' is not in the subspace ({','.join(self.subspace.languages)}): "
                            f"pick one of them or probe '{self.cfg.lang}'")
        if self.cfg.strength is None:
            raise LensError("no steering strength: pass --steer-strength (lens run --method steer measures one)")
        if model_name:
            self.subspace.check_model(model_name)

    def attach(self, model, model_name: str | None = None) -> SteeringHandle:
        """Hook the model (checked first); the handle's remove() restores it exactly."""
        self.check(model, model_name)
        start, read = self.layers(len(decoder_of(model).layers))
        return SteeringHandle(self, model, start, read)

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """steering.json (settings, measurement) + subspace/ (LanguageSubspace), swapped in when complete."""
        with staged_dir(directory, overwrite=True) as tmp:
            doc = {"format": FORMAT, "version": VERSION, "settings": dataclasses.asdict(self.cfg),
                   "model": self.subspace.metadata.get("model"), "measurement": self.measurement}
            (tmp / SETTINGS).write_text(dumps(doc) + "\n", encoding="utf-8")
            self.subspace.save_pretrained(tmp / "subspace")

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, **overrides) -> "Steering":
        """A steering folder, a steer run (OUT with steering/), a probe or LENS run (OUT with subspace/), or a
        subspace folder. overrides (strength, lang, ...; None = keep) replace saved settings; a bare subspace
        has none, so its strength must be given."""
        path = Path(path)
        if not path.exists():
            raise LensError(f"steering source {path} does not exist: pass a steer run, a run with subspace/ or a subspace folder")
        for folder in (path, path / "steering"):
            if (folder / SETTINGS).is_file():
                saved, measurement = _read_settings(folder / SETTINGS)
                cfg = _config(saved, overrides, folder)
                if not (folder / "subspace" / SUBSPACE_CONFIG).is_file():
                    raise LensError(f"steering folder {folder} has no subspace/: re-run `lens run --method steer`")
                return cls(LanguageSubspace.from_pretrained(folder / "subspace"), cfg, measurement)
        for folder in (path, path / "subspace"):
            if (folder / SUBSPACE_CONFIG).is_file():
                if overrides.get("strength") is None:
                    raise LensError(f"{path} holds a subspace but no steering settings: pass --steer-strength "
                                    f"(e.g. 1, one language gap) or steer with a `lens run --method steer` folder")
                return cls(LanguageSubspace.from_pretrained(folder), _config({}, overrides, folder))
        raise LensError(f"{path} is not a steering folder ({SETTINGS}), a run with subspace/ or a subspace: "
                        f"pass OUT of `lens run --method steer`, `lens probe` or `lens run`")


def _read_settings(file: Path) -> tuple[dict, list | None]:
    redo = "re-run `lens run --method steer` to write it again"
    try:
        doc = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise LensError(f"{file} is not valid JSON: {redo}") from err
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or not isinstance(doc.get("settings"), dict):
        raise LensError(f"{file} is not a lensml steering file: {redo}")
    if doc.get("version") != VERSION:
        raise LensError(f"{file} has steering format version {doc.get('version')}, this lensml reads {VERSION}: {redo}")
    return doc["settings"], doc.get("measurement")


def _config(saved: dict, overrides: dict, where: Path) -> SteerConfig:
    known = {f.name for f in dataclasses.fields(SteerConfig)}
    unknown = sorted(set(saved) - known) + sorted(set(overrides) - known)
    if unknown:
        raise LensError(f"unknown steering setting(s) {', '.join(unknown)} for {where}: "
                        f"written by another lensml version; re-run the steer run")
    try:
        return SteerConfig(**{**saved, **{k: v for k, v in overrides.items() if v is not None}})
    except TypeError as err:
        raise LensError(f"steering settings of {where} are malformed ({err}): re-run the steer run") from err
