"""`lens sweep`: train many settings of one model from one probe, and compare them (paper Figs. 3-4).

Why not a loop over `lens run`: each run would load and probe the model, answer the
held-out prompts with the base model and fill the reference cache again, most of a small
model's run time. Here all of that happens once (for LENS, one cache per distinct start layer,
length, samples and system prompt; one forward fills the caches of every start layer,
in the probing pass when it reads the training prompts), and each setting trains from the same original
weights, restored in memory between settings. So only train.* options and the method's own
section (sft.*, steer.*, ...) may vary. Any registered method sweeps: one that needs no
subspace is not probed, one that reads no reference cache gets none, and one that changes no
weight (steering) takes its hooks off between settings (Method.detach). A failing setting
(a non-finite loss) is recorded and the sweep goes on; OUT is atomic. The command line is
lensml.cli.sweep.
"""

from __future__ import annotations

import itertools
import logging
import time
import typing
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
import yaml

from lensml import distributed, methods
from lensml.config import coerce, flat_options, iter_fields, to_dict
from lensml.errors import LensError
from lensml.evaluation import quick
from lensml.io import staged_dir
from lensml.lens.probing import probe, shares_prompts
from lensml.lens.reference_cache import empty_cache, fill_caches
from lensml.progress import progress
from lensml.recipes.config import RunConfig, dotted_name, load_config, run_config_class
from lensml.recipes.finish import write_manifest
from lensml.recipes.stages import (
    Stages,
    check_output,
    load_inputs,
    method_inputs,
    method_options,
    replaceable,
    response_languages,
)
from lensml.results.rundir import RunDir
from lensml.results.sweep_plots import SettingResult, SweepResult, write_outputs
from lensml.runtime.models import decoder_of, load_model
from lensml.runtime.topblock import TopBlock

log = logging.getLogger(__name__)

PRESETS = ("layers", "ablation")
LAMBDAS = "train.loss.lambdas"


@dataclass
class Setting:
    """One point of the grid: its own dotted options (coerced) and a readable label per axis (option or preset)."""

    overrides: dict[str, object] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return ", ".join(self.labels.values()) or "base options"


def resolve_name(name: str) -> tuple[str, object]:
    """A grid name -> (dotted name, type). Aliases (lr, start-layer) and dashes are accepted;
    train.loss.lambdas.LANG sets one language's push weight."""
    dotted = dotted_name(name)
    types = {option: tp for option, tp, _default, _f in iter_fields(run_config_class())}
    if dotted.rpartition(".")[0] == LAMBDAS:
        return dotted, float
    if dotted not in types:
        raise LensError(f"unknown option '{name}' in the sweep grid: use the dotted names of lens run --help "
                        f"(e.g. train.lr, train.start_layer, train.loss.lambda3)")
    own = list(methods.sections())
    if not (dotted.startswith("train.") or dotted.partition(".")[0] in own):
        raise LensError(f"'{dotted}' cannot vary in a sweep: the probe and the base answers are shared by every "
                        f"setting, so only train.* options can, and a method's own ("
                        f"{', '.join(s + '.*' for s in own)}); set it once for all (--{dotted.replace('_', '-')})")
    return dotted, types[dotted]


def _composite(tp) -> bool:
    return any(typing.get_origin(t) in (list, dict) for t in (tp, *typing.get_args(tp)))


def _fmt(value) -> str:
    if isinstance(value, dict):
        return ",".join(f"{k}={v:g}" for k, v in value.items()) or "{}"
    return f"{value:g}" if isinstance(value, float) else str(value)


def axis(name: str, values: list) -> list[Setting]:
    """One option over several values, each coerced to the option's type now (bad values fail before any work)."""
    dotted, tp = resolve_name(name)
    if not values:
        raise LensError(f"the sweep grid gives no values for {dotted}")
    short = dotted.removeprefix("train.").removeprefix("loss.")
    coerced = [coerce(v, tp, dotted) for v in values]
    return [Setting({dotted: v}, {dotted: f"{short}={_fmt(v)}"}) for v in coerced]


def parse_grid(text: str) -> list[Setting]:
    """`NAME=V1,V2`; values are split on ';' instead when one holds commas (`train.loss.lambdas=zh=1;zh=0.5`)."""
    name, sep, values = text.partition("=")
    if not sep or not name.strip():
        raise LensError(f"--grid '{text}': write NAME=V1,V2,... (e.g. --grid train.lr=3e-4,1e-3)")
    _dotted, tp = resolve_name(name)
    parts = values.split(";") if ";" in values or _composite(tp) else values.split(",")
    return axis(name, [p.strip() for p in parts if p.strip()])


def read_grid_file(path: str) -> list[list[Setting]]:
    """YAML: a mapping of dotted name -> list of values (a cartesian product), or a list of settings dicts."""
    p = Path(path)
    try:
        doc = yaml.safe_load(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LensError(f"grid file {p} does not exist: check --grid-file") from None
    except (UnicodeDecodeError, yaml.YAMLError) as err:
        raise LensError(f"grid file {p} is not valid UTF-8 YAML: {str(err).splitlines()[0]}") from err
    if isinstance(doc, dict) and doc:
        return [axis(k, v if isinstance(v, list) else [v]) for k, v in flat_options(doc).items()]
    if isinstance(doc, list) and doc and all(isinstance(s, dict) for s in doc):
        settings = [combine([axis(k, [v]) for k, v in flat_options(s).items()])[0] for s in doc]
        return [settings]
    raise LensError(f"grid file {p} must be a mapping of option -> list of values, or a list of settings "
                    f"(see configs/sweep_example.yaml)")


def layer_counts(depth: int) -> list[int]:
    """Top 1, 2, 4, 8, ... layers, ending with all of them."""
    counts, k = [], 1
    while k < depth:
        counts.append(k)
        k *= 2
    return counts + [depth]


def preset(name: str, targets: list[str], depth: int | None) -> list[Setting]:
    """layers: how many top layers to train (depth None: one placeholder, for checks before the model loads);
    ablation: the full loss and each term switched off (the push for every target language)."""
    if name == "layers":
        return [Setting({"train.start_layer": -k}, {name: f"top {k} layer{'s' if k > 1 else ''}"})
                for k in (layer_counts(depth) if depth else [1])]
    if name == "ablation":
        return [Setting({}, {name: "full loss"}), Setting({"train.loss.lambda1": 0.0}, {name: "without L1"}),
                Setting({LAMBDAS: {lang: 0.0 for lang in targets}}, {name: "without push"}),
                Setting({"train.loss.lambda3": 0.0}, {name: "without L3"})]
    raise LensError(f"unknown preset '{name}': use {' or '.join(PRESETS)}")


def combine(axes: list[list[Setting]]) -> list[Setting]:
    """The cartesian product of the axes; an option set by two axes is refused."""
    out = [Setting()]
    for ax in axes:
        mine, theirs = {k for s in out for k in s.overrides}, {k for s in ax for k in s.overrides}
        clash = sorted(a for a in mine for b in theirs if a == b or a.startswith(b + ".") or b.startswith(a + "."))
        if clash:
            raise LensError(f"{', '.join(clash)} is set by two grids or presets: give each option once")
        out = [Setting({**a.overrides, **b.overrides}, {**a.labels, **b.labels}) for a, b in itertools.product(out, ax)]
    return out


@dataclass
class SweepSpec:
    """What to sweep: the base options (as for lens run) and the grid; where to write."""

    config: str | None = None
    overrides: dict[str, object] = field(default_factory=dict)
    grids: list[str] = field(default_factory=list)
    grid_file: str | None = None
    presets: list[str] = field(default_factory=list)
    out: str = "runs/sweep"
    overwrite: bool = False

    def plan(self, depth: int | None = None) -> list[tuple[Setting, RunConfig]]:
        """Every setting with its validated RunConfig (base options + the setting's, via load_config)."""
        base = load_config(self.config, self.overrides)
        if "ablation" in self.presets and base.method != "lens":
            raise LensError(f"--preset ablation switches off the LENS loss terms; --method {base.method} has none: "
                            f"sweep its options with --grid instead")
        if not base.eval.enabled:
            raise LensError("a sweep compares settings by the quick evaluation: drop --eval.no-enabled")
        axes = [parse_grid(g) for g in self.grids] + (read_grid_file(self.grid_file) if self.grid_file else [])
        axes += [preset(p, base.langs, depth) for p in self.presets]
        if not axes:
            raise LensError("nothing to sweep: give --grid NAME=V1,V2, --grid-file YAML or --preset layers|ablation")
        return [(s, self._config(base, s)) for s in combine(axes)]

    def _config(self, base: RunConfig, setting: Setting) -> RunConfig:
        overrides = {**self.overrides, **{k: v for k, v in setting.overrides.items()
                                          if not k.startswith(LAMBDAS + ".")}}
        per_lang = {k.rpartition(".")[2]: v for k, v in setting.overrides.items() if k.startswith(LAMBDAS + ".")}
        if per_lang:
            overrides[LAMBDAS] = {**setting.overrides.get(LAMBDAS, base.train.loss.lambdas), **per_lang}
        try:
            return load_config(self.config, overrides)
        except LensError as err:
            raise LensError(f"sweep setting '{setting.label}': {err}") from None


class Originals:
    """CPU copies of the named parameters and every parameter's requires_grad flag, put back in place."""

    def __init__(self, model, names: list[str]):
        self.flags = [(p, p.requires_grad) for p in model.parameters()]
        wanted = set(names)
        self.saved = [(p, p.detach().to("cpu", copy=True)) for n, p in model.named_parameters() if n in wanted]

    @torch.no_grad()
    def restore(self) -> None:
        for p, original in self.saved:
            p.copy_(original)
        for p, flag in self.flags:
            p.grad = None
            p.requires_grad_(flag)


def _cache_key(train, start: int) -> tuple:
    """Settings that agree on these share one reference cache (start: the resolved 0-based layer)."""
    return start, train.max_length, train.samples, train.system_prompt, train.cache_device


def _new_caches(model, tok, rows, cfg: RunConfig, keys: list[tuple]) -> list:
    """Empty caches for keys that differ only in their start layer (one forward fills them all)."""
    return [empty_cache(model, tok, rows, cfg.languages, cfg.central, replace(cfg.train, start_layer=key[0]))
            for key in keys]


def _span(names: list[str], depth: int) -> tuple[int, int]:
    """(first trained decoder layer, 0-based; number of trained layers) read off parameter names
    (depth and 0 for a method that trains none)."""
    layers = {int(part) for n in names for prev, part in zip(n.split("."), n.split(".")[1:])
              if prev == "layers" and part.isdigit()}
    return (min(layers), len(layers)) if layers else (depth, 0)


def sweep_model(model, tok, name: str, plan: list[tuple[Setting, RunConfig]], inputs, stages: Stages | None = None,
                log_dir: Path | None = None) -> SweepResult:
    """Probe (if the method needs a subspace), answer once with the base model, then train and evaluate every
    setting from the same weights (restored after each) and the plain model (a steering method's hooks taken off)."""
    stages = stages or Stages()
    base = plan[0][1]
    method = methods.get(base.method)
    depth = len(decoder_of(model).layers)
    trained = [method.trainable_names(model, cfg.train) for _, cfg in plan]  # a bad start layer fails now
    keys = [_cache_key(cfg.train, TopBlock(model, cfg.train.start_layer).start) if method.uses_reference_cache
            else None for _, cfg in plan]
    caches, uses = {}, Counter(key for key in keys if key is not None)

    def siblings(key: tuple) -> list[tuple]:  # caches one forward can fill with this one
        return [k for k in uses if k[1:] == key[1:] and uses[k] > 0 and k not in caches]

    subspace = None
    if method.needs_subspace:
        with stages("probe"):
            if keys[0] is not None and shares_prompts(inputs.probe_texts, base.probe, inputs.train_rows, base.train,
                                                      base.languages):
                first = siblings(keys[0])
                caches.update(zip(first, _new_caches(model, tok, inputs.train_rows, base, first)))
            subspace = probe(model, tok, inputs.probe_texts, base.central, base.probe, name, base.probe_data,
                             cache=list(caches.values()) or None)
    with stages("eval_base"):
        before = quick.answer_before(model, tok, inputs.held_out, base.central, base.eval)
        base_eval, _ = quick.compare(before, before, base.eval)
    originals = Originals(model, sorted({n for names in trained for n in names}))
    result = SweepResult(name, base.central, base.languages, base_eval.base, base_eval.retention.base_nll, [])
    if log_dir is not None:
        log_dir.mkdir(parents=True, exist_ok=True)
    for i, ((setting, cfg), names, key) in enumerate(progress(list(zip(plan, trained, keys)), desc="sweep"), 1):
        res = SettingResult(i, setting.label, setting.overrides, *_span(names, depth), labels=setting.labels)
        log_path = log_dir / f"{i:03d}.jsonl" if log_dir else None
        method = methods.get(cfg.method)  # fresh: nothing of the previous setting's state carries over
        t = time.perf_counter()
        try:
            if key is not None and key not in caches:
                with stages("reference_cache"):
                    new_keys = siblings(key)
                    new = _new_caches(model, tok, inputs.train_rows, cfg, new_keys)
                    fill_caches(model, new, max(cfg.train.batch_size, 16))
                    caches.update(zip(new_keys, new))
            t = time.perf_counter()
            with stages("train"):
                trained_result = method.train(model, tok, method_inputs(method, cfg, inputs, subspace, caches.get(key)),
                                              cfg.train, log_path=log_path, options=method_options(method, cfg))
            res.train_s, res.steps = time.perf_counter() - t, trained_result.steps
            res.lr, res.final = trained_result.lr, trained_result.final
            with stages("eval_enhanced"):
                after = quick.answer_after(model, tok, before, base.eval, nll=method.answer_nll)
                res.quick, rows = quick.compare(before, after, base.eval)
            result.answers += [{"setting": i, **row} for row in rows]
            log.info("setting %d/%d (%s): %s", i, len(plan), res.label, res.summary(base.central))
        except (LensError, torch.OutOfMemoryError) as err:
            res.status, res.error = "failed", str(err).splitlines()[0] if str(err) else type(err).__name__
            res.train_s = time.perf_counter() - t
            if log_path is not None and log_path.is_file():
                res.steps = len(log_path.read_text(encoding="utf-8").splitlines())
            log.warning("setting %d/%d (%s) failed: %s", i, len(plan), res.label, res.error)
        finally:
            method.detach()
            originals.restore()
            if key is not None:
                uses[key] -= 1
                if not uses[key]:
                    caches.pop(key, None)  # no later setting needs it
        result.settings.append(res)
    return result


def run_sweep(spec: SweepSpec) -> SweepResult:
    """Check everything, load once, sweep, write OUT (sweep.json, .csv, .md, pictures, losses/, answers.jsonl)."""
    if distributed.is_distributed():
        raise LensError("lens sweep runs in one process: start it without accelerate/torchrun")
    plan = spec.plan()  # every setting validated before any data or model loads
    out = Path(spec.out)
    check_output(out, spec.overwrite)
    stages = Stages()
    method = methods.get(plan[0][1].method)
    widest = max(plan, key=lambda sc: float("inf") if sc[1].train.samples is None else sc[1].train.samples)[1]
    responses = list(dict.fromkeys(lang for _, cfg in plan for lang in response_languages(method, cfg)))
    with stages("data"):
        inputs = load_inputs(widest, probe=method.needs_subspace, train=True, held_out=True, responses=responses)
    with staged_dir(out, spec.overwrite, replaceable) as tmp:
        with stages("load_model"):
            model, tok, name = load_model(plan[0][1].model)
        if "layers" in spec.presets:
            plan = spec.plan(depth=len(decoder_of(model).layers))
        log.info("sweep: %d settings", len(plan))
        result = sweep_model(model, tok, name, plan, inputs, stages, log_dir=tmp / "losses")
        base_cfg = load_config(spec.config, spec.overrides)
        result.presets, result.base_config = list(spec.presets), to_dict(base_cfg)
        result.timings_s = stages.total()
        write_outputs(result, tmp)
        write_manifest(RunDir(tmp), "sweep", base_cfg, name, result.timings_s)  # --overwrite knows it as lensml's
    log.info("wrote %s", out)
    return result
