"""`lens sweep`: train many settings of one model from one probe, and compare them (paper Figs. 3-4).

Why not a loop over `lens run`: each run would load and probe the model, answer the
held-out prompts with the base model and fill the reference cache again, most of a small
model's run time. Here all of that happens once (one cache per distinct start layer,
length, samples and system prompt; one forward fills the caches of every start layer,
in the probing pass when it reads the training prompts), and each setting trains from the same original
weights, restored in memory between settings. So only train.* options may vary. A
failing setting (a non-finite loss) is recorded and the sweep goes on; OUT is atomic.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import time
import typing
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
import yaml

from lensml import distributed
from lensml.runtime.topblock import TopBlock
from lensml.lens.reference_cache import empty_cache, fill_caches
from lensml.cli.args import ALIASES, add_config_arguments, overrides_of
from lensml.config import coerce, iter_fields, to_dict
from lensml.recipes.config import RunConfig, load_config
from lensml.errors import LensError
from lensml.evaluation import quick
from lensml.io import staged_dir
from lensml.methods import lens
from lensml.runtime.models import decoder_of, load_model
from lensml.lens.probing import probe, shares_prompts
from lensml.progress import progress
from lensml.recipes.stages import Stages, check_output, load_inputs
from lensml.results.sweep_plots import SettingResult, SweepResult, markdown_table, write_outputs

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
    raw = name.strip().lstrip("-")
    aliases = {alias[2:]: dotted for dotted, names in ALIASES.items() for alias in names}
    dotted = aliases.get(raw, raw.replace("-", "_"))
    types = {dotted_name: tp for dotted_name, tp, _default, _f in iter_fields(RunConfig)}
    if dotted.rpartition(".")[0] == LAMBDAS:
        return dotted, float
    if dotted not in types:
        raise LensError(f"unknown option '{name}' in the sweep grid: use the dotted names of lens run --help "
                        f"(e.g. train.lr, train.start_layer, train.loss.lambda3)")
    if not dotted.startswith("train."):
        raise LensError(f"'{dotted}' cannot vary in a sweep: the probe and the base answers are shared by every "
                        f"setting, so only train.* options can; set it once for all (--{dotted.replace('_', '-')})")
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


def _flatten(doc: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in doc.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and not dotted.endswith("lambdas"):
            flat.update(_flatten(value, dotted + "."))
        else:
            flat[dotted] = value
    return flat


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
        return [axis(k, v if isinstance(v, list) else [v]) for k, v in _flatten(doc).items()]
    if isinstance(doc, list) and doc and all(isinstance(s, dict) for s in doc):
        settings = [combine([axis(k, [v]) for k, v in _flatten(s).items()])[0] for s in doc]
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
        if base.method != "lens":
            raise LensError(f"lens sweep trains with LENS; --method {base.method} is not supported here")
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
    """CPU copies of the trainable block and every parameter's requires_grad flag, put back in place."""

    def __init__(self, model, start: int):
        self.flags = [(p, p.requires_grad) for p in model.parameters()]
        self.saved = [(p, p.detach().to("cpu", copy=True)) for p in TopBlock(model, start).parameters()]

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


def sweep_model(model, tok, name: str, plan: list[tuple[Setting, RunConfig]], inputs, stages: Stages | None = None,
                log_dir: Path | None = None) -> SweepResult:
    """Probe, answer once with the base model, then train and evaluate every setting from the same weights."""
    stages = stages or Stages()
    base = plan[0][1]
    depth = len(decoder_of(model).layers)
    starts = [TopBlock(model, cfg.train.start_layer).start for _, cfg in plan]  # a bad start layer fails now
    caches, uses = {}, Counter(_cache_key(cfg.train, start) for (_, cfg), start in zip(plan, starts))
    first, first_key = plan[0][1].train, _cache_key(plan[0][1].train, starts[0])

    def siblings(key: tuple) -> list[tuple]:  # caches one forward can fill with this one
        return [k for k in uses if k[1:] == key[1:] and uses[k] > 0 and k not in caches]

    with stages("probe"):
        if shares_prompts(inputs.probe_texts, base.probe, inputs.train_rows, first, base.languages):
            keys = siblings(first_key)
            caches.update(zip(keys, _new_caches(model, tok, inputs.train_rows, base, keys)))
        subspace = probe(model, tok, inputs.probe_texts, base.central, base.probe, name, base.probe_data,
                         cache=list(caches.values()) or None)
    with stages("eval_base"):
        before = quick.answer_before(model, tok, inputs.held_out, base.central, base.eval)
        base_eval, _ = quick.compare(before, before, base.eval)
    originals = Originals(model, min(starts))
    result = SweepResult(name, base.central, base.languages, base_eval.base, base_eval.retention.base_nll, [])
    if log_dir is not None:
        log_dir.mkdir(parents=True, exist_ok=True)
    for i, ((setting, cfg), start) in enumerate(progress(list(zip(plan, starts)), desc="sweep"), 1):
        res = SettingResult(i, setting.label, setting.overrides, start, depth - start, labels=setting.labels)
        key, log_path = _cache_key(cfg.train, start), log_dir / f"{i:03d}.jsonl" if log_dir else None
        t = time.perf_counter()
        try:
            if key not in caches:
                with stages("reference_cache"):
                    keys = siblings(key)
                    new = _new_caches(model, tok, inputs.train_rows, cfg, keys)
                    fill_caches(model, new, max(cfg.train.batch_size, 16))
                    caches.update(zip(keys, new))
            t = time.perf_counter()
            with stages("train"):
                trained = lens.train(model, tok, subspace, inputs.train_rows, cfg.languages, cfg.central, cfg.train,
                                     cache=caches[key], log_path=log_path)
            res.train_s, res.steps, res.lr, res.final = time.perf_counter() - t, trained.steps, trained.lr, trained.final
            with stages("eval_enhanced"):
                after = quick.answer_after(model, tok, before, base.eval)
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
            originals.restore()
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
    widest = max(plan, key=lambda sc: float("inf") if sc[1].train.samples is None else sc[1].train.samples)[1]
    with stages("data"):
        inputs = load_inputs(widest, probe=True, train=True, held_out=True)
    with staged_dir(out, spec.overwrite) as tmp:
        with stages("load_model"):
            model, tok, name = load_model(plan[0][1].model)
        if "layers" in spec.presets:
            plan = spec.plan(depth=len(decoder_of(model).layers))
        log.info("sweep: %d settings", len(plan))
        result = sweep_model(model, tok, name, plan, inputs, stages, log_dir=tmp / "losses")
        result.presets, result.base_config = list(spec.presets), to_dict(load_config(spec.config, spec.overrides))
        result.timings_s = stages.total()
        write_outputs(result, tmp)
    log.info("wrote %s", out)
    return result


def add_sweep_command(subparsers, parents=()) -> None:
    """`lens sweep`: the base options of lens run (without benchmarks and output), the grid, --out."""
    p = subparsers.add_parser("sweep", parents=list(parents),
                              usage="lens sweep (--grid NAME=V1,V2 | --grid-file YAML | --preset layers|ablation) "
                                    "[options]",
                              help="train many settings from one probe and compare them (layer sweep, ablations)")
    g = p.add_argument_group("sweep")
    g.add_argument("--grid", action="append", default=[], metavar="NAME=V1,V2",
                   help="a train.* option over values, e.g. train.lr=3e-4,1e-3 or train.start_layer=-1,-2,-4 "
                        "(repeatable: the cartesian product; ';' separates values that hold commas)")
    g.add_argument("--grid-file", metavar="YAML", help="YAML: option -> list of values, or a list of settings")
    g.add_argument("--preset", action="append", default=[], choices=PRESETS,
                   help="layers: train the top 1, 2, 4, ... layers; ablation: full loss, without L1, without the "
                        "push (lambda_l = 0), without L3 (repeatable, combined with the grids)")
    g.add_argument("--out", default="runs/sweep", help="output folder (default: runs/sweep)")
    g.add_argument("--overwrite", action=argparse.BooleanOptionalAction, default=False,
                   help="replace an existing --out, once the new one is complete (default: False)")
    add_config_arguments(p, ["model", "data", "probe", "train", "loss", "eval"])
    p.set_defaults(func=cmd_sweep)


def cmd_sweep(args) -> int:
    spec = SweepSpec(getattr(args, "config", None), overrides_of(args), args.grid, args.grid_file, args.preset,
                     args.out, args.overwrite)
    print(markdown_table(run_sweep(spec)))
    print(f"wrote {spec.out}")
    return 0
