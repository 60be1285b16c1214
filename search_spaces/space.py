"""Search spaces: a YAML file (or a preset name) -> a validated :class:`SearchSpace`.

A space says which model and dataset to train, with which fixed training recipe, which freezing
families to search over and each family's parameter ranges, the objectives, the early-stopping
settings, and whether to evaluate the paper's five configurations first. ``define_by_run``
turns it into an Optuna define-by-run function (used by Ray Tune's ``OptunaSearch``), and
``trial_to_config`` turns a trial's parameters into the trainer config + schedule dict.

This module never imports Ray. Format (every key optional except ``model`` and ``dataset``)::

    name: demo
    description: one line shown by --list-presets
    model: digits_cnn            # python -m layerout.models lists them
    dataset: digits              # digits | mnist | cifar10 | cifar100 | synthetic
    train:                       # the fixed recipe: layerout.trainer.TrainConfig fields
      epochs: 8
      batch_size: 64
      lr: 0.05
      lr_milestones: [6]
      ...
    families:                    # the schedule families to search, each with its ranges
      none: {}                   # the unfrozen baseline
      layerout:
        vector: per_unit         # per_unit | ramp | per_stage
        v: [0.0, 0.9]            # per_unit / per_stage: range of each probability
        v_first: [0.0, 0.9]      # ramp: range of the first unit's probability
        v_last: [0.0, 0.9]       # ramp: range of the last unit's probability
        stages: auto             # per_stage: auto | number of stages | list of stage sizes
        warmup_epochs: [0, 3]
        v_mode: [manual, random_epoch]     # also random_once
        keep_last_trainable: false         # or [false, true]
      freezeout: {t0: [0.5, 1.0], scale: [linear, squared, cubic], scale_lr: [false, true], warmup_epochs: 0}
      prefix: {k: [1, 2], start_epoch: [0, 4]}
      adaptive: {check_every: [1, 2], threshold_mode: [percentile], threshold: [10, 90],
                 absolute_threshold: [0.01, 0.5], min_trainable_units: 1}
    objectives: [[val_accuracy, max], [compute_saved_frac, max]]
    early_stopping: {scheduler: asha, grace_period: 2, reduction_factor: 2}
    paper_configs: true          # evaluate the paper's five configurations first
    paper_warmup_epochs: 2       # warm-up of the paper's "warm-up" configurations (paper: 20)
    num_samples: 24
    max_concurrent: 2
    seed: 0

A range is ``[low, high]``; a single value fixes the parameter. A choice is a list, or a single
value. Errors name the file and the field: ``x.yaml: families.layerout.warmup_epochs: must be
...``, raised as :class:`layerout.errors.UserError`.
"""
from __future__ import annotations

import copy
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from layerout.errors import UserError
from layerout.fastpath import FAST_PATHS

PRESET_DIR = Path(__file__).resolve().parent / "presets"

FAMILY_KINDS = ("none", "layerout", "freezeout", "prefix", "adaptive")
VECTOR_FORMS = ("per_unit", "ramp", "per_stage")
V_MODES = ("manual", "random_epoch", "random_once")
SCALES = ("linear", "squared", "cubic")
THRESHOLD_MODES = ("percentile", "absolute")
SCHEDULERS = ("asha", "none")
# Metrics a trial reports (DESIGN.md "What a trial reports"); objectives must be among them.
METRICS = ("epoch", "train_loss", "val_loss", "val_accuracy", "test_accuracy", "params_frozen_frac",
           "compute_saved_frac", "compute_spent_gflop", "time_saved_frac", "train_time_s")
DEFAULT_OBJECTIVES = [("val_accuracy", "max"), ("compute_saved_frac", "max")]
PAPER_CONFIGS = ("baseline", "since_start", "warmup_random", "efreeze", "dfreeze")

_DATASET_CHANNELS = {"digits": 1, "mnist": 1, "cifar10": 3, "cifar100": 3, "synthetic": 3}
_DATASET_CLASSES = {"digits": 10, "mnist": 10, "cifar10": 10, "cifar100": 100, "synthetic": 10}

# TrainConfig defaults (docs/ARCHITECTURE.md); the space's `train:` block overrides them.
TRAIN_DEFAULTS: dict[str, Any] = {
    "epochs": 10, "batch_size": 64, "lr": 0.05, "momentum": 0.9, "weight_decay": 5e-4,
    "lr_milestones": [], "lr_gamma": 0.1, "lr_warmup_epochs": 0, "lr_warmup_value": None,
    "device": "auto", "val_frac": 0.1, "augment": True, "random_erasing": False,
    "bn_frozen": "train", "test_every_epoch": False, "max_train_batches": None,
    "synthetic_size": None, "fast_path": "auto",
}
TOP_KEYS = ("name", "description", "model", "dataset", "train", "families", "objectives",
            "early_stopping", "paper_configs", "paper_warmup_epochs", "num_samples",
            "max_concurrent", "seed")
FAMILY_KEYS = {
    "none": (),
    "layerout": ("vector", "v", "v_first", "v_last", "stages", "warmup_epochs", "v_mode",
                 "keep_last_trainable"),
    "freezeout": ("t0", "scale", "scale_lr", "warmup_epochs"),
    "prefix": ("k", "start_epoch"),
    "adaptive": ("check_every", "threshold_mode", "threshold", "absolute_threshold",
                 "min_trainable_units"),
}


# ------------------------------------------------------------------------------ dataclasses
@dataclass
class LayerOutSpace:
    vector: str = "per_unit"
    v: list[tuple[float, float]] = field(default_factory=list)  # per unit (per_unit) / per stage
    v_first: tuple[float, float] = (0.0, 0.9)
    v_last: tuple[float, float] = (0.0, 0.9)
    stages: list[int] = field(default_factory=list)  # stage of each unit (per_stage)
    warmup_epochs: tuple[int, int] = (0, 0)
    v_mode: list[str] = field(default_factory=lambda: ["manual"])
    keep_last_trainable: list[bool] = field(default_factory=lambda: [False])


@dataclass
class FreezeOutSpace:
    t0: tuple[float, float] = (0.5, 1.0)
    scale: list[str] = field(default_factory=lambda: list(SCALES))
    scale_lr: list[bool] = field(default_factory=lambda: [False])
    warmup_epochs: tuple[int, int] = (0, 0)


@dataclass
class PrefixSpace:
    k: tuple[int, int] = (1, 1)
    start_epoch: tuple[int, int] = (0, 0)


@dataclass
class AdaptiveSpace:
    check_every: tuple[int, int] = (1, 1)
    threshold_mode: list[str] = field(default_factory=lambda: ["percentile"])
    threshold: tuple[float, float] = (25.0, 75.0)
    absolute_threshold: tuple[float, float] = (0.01, 0.5)
    min_trainable_units: tuple[int, int] = (1, 1)


@dataclass
class EarlyStopping:
    scheduler: str = "asha"
    grace_period: int = 1
    reduction_factor: int = 2


@dataclass
class SearchSpace:
    """A validated search space. ``units`` are the model's unit names (K = len(units))."""

    name: str
    model: str
    dataset: str
    units: list[str]
    train: dict[str, Any]
    families: dict[str, Any]  # kind -> LayerOutSpace | FreezeOutSpace | ... | None (for "none")
    description: str = ""
    source: str = ""  # the YAML file it came from
    objectives: list[tuple[str, str]] = field(default_factory=lambda: list(DEFAULT_OBJECTIVES))
    early_stopping: EarlyStopping = field(default_factory=EarlyStopping)
    paper_configs: bool = False
    paper_warmup_epochs: int = 0
    num_samples: int = 24
    max_concurrent: int = 0  # 0: as many as resources allow
    seed: int = 0

    @property
    def num_units(self) -> int:
        return len(self.units)

    @property
    def epochs(self) -> int:
        return int(self.train["epochs"])

    def to_dict(self) -> dict[str, Any]:
        """The resolved space as plain JSON-able data (experiment.json's ``space``)."""
        d = asdict(self)
        d["objectives"] = [list(o) for o in self.objectives]
        return _jsonable(d)


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    return x


# ------------------------------------------------------------------------------ loading
def list_presets() -> list[tuple[str, str]]:
    """(name, description) of every preset file, sorted by name."""
    out = []
    for p in sorted(PRESET_DIR.glob("*.yaml")):
        try:
            data = yaml.safe_load(p.read_text()) or {}
            desc = str(data.get("description", "")) if isinstance(data, dict) else ""
        except (OSError, yaml.YAMLError):
            desc = "(unreadable)"
        out.append((p.stem, desc))
    return out


def preset_path(name: str) -> Path:
    p = PRESET_DIR / f"{name}.yaml"
    if not p.is_file() or "/" in name or name.startswith("."):
        names = ", ".join(n for n, _ in list_presets())
        raise UserError(f"unknown preset {name!r}; available: {names} (python tune_main.py --list-presets)")
    return p


def _display(path: Path) -> str:
    try:
        rel = os.path.relpath(path)
        return rel if not rel.startswith("..") else str(path)
    except ValueError:
        return str(path)


def load_space(path_or_preset: str | os.PathLike) -> SearchSpace:
    """Load and validate a space from a YAML file, or a preset by name (``demo``)."""
    s = str(path_or_preset)
    p = Path(s)
    if p.suffix in (".yaml", ".yml") or os.sep in s or p.is_file():
        if not p.is_file():
            raise UserError(f"{s}: no such search-space file")
        where = s
    else:
        p = preset_path(s)
        where = _display(p)
    try:
        text = p.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{where}: cannot read ({exc.__class__.__name__}: {exc})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise UserError(f"{where}: not valid YAML: {' '.join(str(problem).split())}{at}") from None
    default_name = p.stem
    return space_from_dict(data, where=where, default_name=default_name)


class _V:
    """Validation helpers that raise UserError('<where>: <field>: <message>')."""

    def __init__(self, where: str):
        self.where = where

    def err(self, fld: str, msg: str) -> UserError:
        return UserError(f"{self.where}: {fld}: {msg}")

    def mapping(self, fld: str, val: Any, allowed: tuple[str, ...]) -> dict:
        if val is None:
            return {}
        if not isinstance(val, dict):
            raise self.err(fld, f"must be a mapping with keys {', '.join(allowed) or '(none)'}, got {val!r}")
        for k in val:
            if k not in allowed:
                ok = ", ".join(allowed) if allowed else "(no keys)"
                raise self.err(f"{fld}.{k}" if fld else str(k), f"unknown key; allowed: {ok}")
        return val

    def int_(self, fld: str, val: Any, low: int, high: int | None = None, what: str = "") -> int:
        if isinstance(val, bool) or not isinstance(val, int) or val < low or (high is not None and val > high):
            rng = f">= {low}" if high is None else f"within [{low}, {high}]{what}"
            raise self.err(fld, f"must be an integer {rng}, got {val!r}")
        return val

    def num(self, fld: str, val: Any, low: float, high: float, low_open: bool = False, what: str = "") -> float:
        ok = (not isinstance(val, bool) and isinstance(val, (int, float)) and math.isfinite(val)
              and (val > low if low_open else val >= low) and val <= high)
        if not ok:
            lb = "(" if low_open else "["
            raise self.err(fld, f"must be a number within {lb}{low:g}, {high:g}]{what}, got {val!r}")
        return float(val)

    def bool_(self, fld: str, val: Any) -> bool:
        if not isinstance(val, bool):
            raise self.err(fld, f"must be true or false, got {val!r}")
        return val

    def int_range(self, fld: str, val: Any, low: int, high: int, what: str = "") -> tuple[int, int]:
        """A [low, high] pair of integers (or one integer: fixed) within [low, high]."""
        pair = [val, val] if (isinstance(val, int) and not isinstance(val, bool)) else val
        ok = (isinstance(pair, (list, tuple)) and len(pair) == 2
              and all(isinstance(x, int) and not isinstance(x, bool) for x in pair)
              and low <= pair[0] <= pair[1] <= high)
        if not ok:
            raise self.err(fld, f"must be a [low, high] pair of integers within [{low}, {high}]{what}, got {val!r}")
        return int(pair[0]), int(pair[1])

    def num_range(self, fld: str, val: Any, low: float, high: float, low_open: bool = False,
                  what: str = "") -> tuple[float, float]:
        """A [low, high] pair of numbers (or one number: fixed) within [low, high]."""
        is_num = lambda x: isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)  # noqa: E731
        pair = [val, val] if is_num(val) else val
        ok = (isinstance(pair, (list, tuple)) and len(pair) == 2 and all(is_num(x) for x in pair)
              and (pair[0] > low if low_open else pair[0] >= low) and pair[0] <= pair[1] <= high)
        if not ok:
            lb = "(" if low_open else "["
            raise self.err(fld, f"must be a [low, high] pair of numbers within {lb}{low:g}, {high:g}]{what}, "
                                f"got {val!r}")
        return float(pair[0]), float(pair[1])

    def choices(self, fld: str, val: Any, allowed: tuple) -> list:
        """A list of allowed values (or one value)."""
        vals = val if isinstance(val, list) else [val]
        ok = bool(vals) and all(any(v == a and type(v) is type(a) for a in allowed) for v in vals)
        if not ok:
            shown = ", ".join(str(a).lower() if isinstance(a, bool) else str(a) for a in allowed)
            raise self.err(fld, f"must be one of {shown} or a list of them, got {val!r}")
        return list(dict.fromkeys(vals))


def _model_units(model: str, dataset: str, v: _V) -> list[str]:
    from layerout.models import MODELS, build_model, model_units

    if model not in MODELS:
        raise v.err("model", f"unknown model {model!r}; allowed: {', '.join(MODELS)}")
    import torch

    with torch.device("meta"):  # units only: no memory, no init cost
        try:
            m = build_model(model, num_classes=_DATASET_CLASSES.get(dataset, 10),
                            in_channels=_DATASET_CHANNELS.get(dataset, 3))
        except Exception:  # noqa: BLE001 - some init may not work on meta tensors
            m = None
    if m is None:
        m = build_model(model, num_classes=_DATASET_CLASSES.get(dataset, 10),
                        in_channels=_DATASET_CHANNELS.get(dataset, 3))
    return [u.name for u in model_units(m)]


def _known_kinds() -> list[str]:
    from layerout.schedules import SCHEDULES

    return sorted(SCHEDULES)


def _auto_stages(units: list[str]) -> list[int]:
    """Stage of each unit: by the unit name's prefix before the first '.' (ResNet: stem, layer1,
    layer2, layer3, fc); where that groups nothing (every name distinct), 3 contiguous groups."""
    prefixes = [u.split(".")[0] for u in units]
    if len(set(prefixes)) < len(units):
        order: dict[str, int] = {}
        for p in prefixes:
            order.setdefault(p, len(order))
        return [order[p] for p in prefixes]
    return _even_stages(len(units), min(3, len(units)))


def _even_stages(k: int, n: int) -> list[int]:
    return [min(n - 1, i * n // k) for i in range(k)]


def space_from_dict(data: Any, where: str = "<space>", default_name: str = "space") -> SearchSpace:
    """Validate a parsed YAML document into a :class:`SearchSpace`."""
    v = _V(where)
    if not isinstance(data, dict):
        raise UserError(f"{where}: must be a YAML mapping with keys model, dataset, train, families, ...; "
                        f"got {type(data).__name__}")
    v.mapping("", data, TOP_KEYS)
    name = data.get("name", default_name)
    if not isinstance(name, str) or not name or any(c in name for c in "/\\ "):
        raise v.err("name", f"must be a non-empty string without spaces or slashes, got {name!r}")
    description = data.get("description", "")
    if not isinstance(description, str):
        raise v.err("description", f"must be a string, got {description!r}")

    from layerout.data import DATASETS

    if "model" not in data:
        raise v.err("model", "missing; name a built-in model (python -m layerout.models lists them)")
    if "dataset" not in data:
        raise v.err("dataset", f"missing; allowed: {', '.join(DATASETS)}")
    dataset = data["dataset"]
    if dataset not in DATASETS:
        raise v.err("dataset", f"unknown dataset {dataset!r}; allowed: {', '.join(DATASETS)}")
    model = data["model"]
    if not isinstance(model, str):
        raise v.err("model", f"must be a model name, got {model!r}")
    units = _model_units(model, dataset, v)
    k = len(units)

    train = _train(v, data.get("train"))
    epochs = train["epochs"]
    ep_what = f" (0 .. epochs-1, epochs = {epochs})"

    fams_raw = data.get("families")
    if fams_raw is None:
        fams_raw = {"layerout": {}}
    if not isinstance(fams_raw, dict) or not fams_raw:
        raise v.err("families", f"must be a mapping of one or more of {', '.join(FAMILY_KINDS)} to their "
                                f"ranges, got {fams_raw!r}")
    known = _known_kinds()
    families: dict[str, Any] = {}
    for kind, spec in fams_raw.items():
        f = f"families.{kind}"
        if kind not in FAMILY_KINDS:
            raise v.err(f, f"unknown family; allowed: {', '.join(FAMILY_KINDS)}")
        if kind not in known:
            raise v.err(f, f"this version of layerout has no {kind!r} schedule (layerout.schedules knows: "
                           f"{', '.join(known)}); remove it from the space")
        spec = v.mapping(f, spec, FAMILY_KEYS[kind])
        families[kind] = _FAMILY_PARSERS[kind](v, f, spec, k, epochs, ep_what, units)

    objectives = _objectives(v, data.get("objectives"))
    es = v.mapping("early_stopping", data.get("early_stopping"), ("scheduler", "grace_period", "reduction_factor"))
    early = EarlyStopping(
        scheduler=_scheduler(v, es.get("scheduler", "asha")),
        grace_period=v.int_("early_stopping.grace_period", es.get("grace_period", 1), 1, epochs,
                            f" (1 .. epochs, epochs = {epochs})"),
        reduction_factor=v.int_("early_stopping.reduction_factor", es.get("reduction_factor", 2), 2, 100),
    )
    paper = v.bool_("paper_configs", data.get("paper_configs", False))
    pw_default = min(20, max(1, round(epochs * 0.2)), epochs - 1)
    paper_warmup = v.int_("paper_warmup_epochs", data.get("paper_warmup_epochs", pw_default), 0, epochs - 1,
                          ep_what)
    num_samples = v.int_("num_samples", data.get("num_samples", 24), 1)
    max_conc = v.int_("max_concurrent", data.get("max_concurrent", 0), 0)
    seed = v.int_("seed", data.get("seed", 0), 0, 2**31 - 1)
    return SearchSpace(name=name, model=model, dataset=dataset, units=units, train=train, families=families,
                       description=description, source=where, objectives=objectives, early_stopping=early,
                       paper_configs=paper, paper_warmup_epochs=paper_warmup, num_samples=num_samples,
                       max_concurrent=max_conc, seed=seed)


def _scheduler(v: _V, val: Any) -> str:
    if val not in SCHEDULERS:
        raise v.err("early_stopping.scheduler", f"must be one of {', '.join(SCHEDULERS)}, got {val!r}")
    return val


def _train(v: _V, raw: Any) -> dict[str, Any]:
    t = v.mapping("train", raw, tuple(TRAIN_DEFAULTS))
    out = {**copy.deepcopy(TRAIN_DEFAULTS), **copy.deepcopy(t)}
    epochs = v.int_("train.epochs", out["epochs"], 1)
    out["epochs"] = epochs
    out["batch_size"] = v.int_("train.batch_size", out["batch_size"], 1)
    out["lr"] = v.num("train.lr", out["lr"], 0.0, 1e3, low_open=True)
    out["momentum"] = v.num("train.momentum", out["momentum"], 0.0, 1.0)
    out["weight_decay"] = v.num("train.weight_decay", out["weight_decay"], 0.0, 1.0)
    ms = out["lr_milestones"]
    if (not isinstance(ms, list) or not all(isinstance(m, int) and not isinstance(m, bool) and 1 <= m < epochs
                                            for m in ms) or ms != sorted(set(ms))):
        raise v.err("train.lr_milestones", f"must be an increasing list of integer epochs within "
                                           f"[1, {epochs - 1}] (epochs = {epochs}), got {ms!r}")
    out["lr_gamma"] = v.num("train.lr_gamma", out["lr_gamma"], 0.0, 1e3, low_open=True)
    out["lr_warmup_epochs"] = v.int_("train.lr_warmup_epochs", out["lr_warmup_epochs"], 0, epochs - 1,
                                     f" (0 .. epochs-1, epochs = {epochs})")
    if out["lr_warmup_value"] is not None:
        out["lr_warmup_value"] = v.num("train.lr_warmup_value", out["lr_warmup_value"], 0.0, 1e3, low_open=True)
    if out["device"] not in ("auto", "cpu", "cuda") and not (isinstance(out["device"], str)
                                                             and out["device"].startswith("cuda:")):
        raise v.err("train.device", f"must be one of auto, cpu, cuda, got {out['device']!r}")
    out["val_frac"] = v.num("train.val_frac", out["val_frac"], 0.0, 0.5, low_open=True)
    for b in ("augment", "random_erasing", "test_every_epoch"):
        out[b] = v.bool_(f"train.{b}", out[b])
    if out["bn_frozen"] not in ("train", "eval"):
        raise v.err("train.bn_frozen", f"must be one of train, eval, got {out['bn_frozen']!r}")
    if out["fast_path"] not in FAST_PATHS:
        raise v.err("train.fast_path", f"must be one of {', '.join(FAST_PATHS)}, got {out['fast_path']!r}")
    for n in ("max_train_batches", "synthetic_size"):
        if out[n] is not None:
            out[n] = v.int_(f"train.{n}", out[n], 1)
    return out


def _objectives(v: _V, raw: Any) -> list[tuple[str, str]]:
    if raw is None:
        return list(DEFAULT_OBJECTIVES)
    bad = UserError(f"{v.where}: objectives: must be a list of [metric, max|min] pairs with metrics from "
                    f"{', '.join(METRICS)}, got {raw!r}")
    if not isinstance(raw, list) or not raw:
        raise bad
    out = []
    for o in raw:
        if not (isinstance(o, list) and len(o) == 2 and o[0] in METRICS and o[1] in ("max", "min")):
            raise bad
        out.append((o[0], o[1]))
    if len({n for n, _ in out}) != len(out):
        raise bad
    return out


def _parse_layerout(v: _V, f: str, s: dict, k: int, epochs: int, ep_what: str, units: list[str]) -> LayerOutSpace:
    vec = s.get("vector", "per_unit")
    if vec not in VECTOR_FORMS:
        raise v.err(f"{f}.vector", f"must be one of {', '.join(VECTOR_FORMS)}, got {vec!r}")
    out = LayerOutSpace(vector=vec)
    if vec == "per_stage":
        st = s.get("stages", "auto")
        if st == "auto":
            out.stages = _auto_stages(units)
        elif isinstance(st, int) and not isinstance(st, bool):
            n = v.int_(f"{f}.stages", st, 1, k, f" (1 .. number of units, K = {k})")
            out.stages = _even_stages(k, n)
        elif (isinstance(st, list) and st and all(isinstance(x, int) and not isinstance(x, bool) and x >= 1
                                                  for x in st) and sum(st) == k):
            out.stages = [i for i, n in enumerate(st) for _ in range(n)]
        else:
            raise v.err(f"{f}.stages", f"must be auto, a number of stages within [1, {k}], or a list of stage "
                                       f"sizes (integers >= 1) summing to the model's {k} units, got {st!r}")
    elif "stages" in s:
        raise v.err(f"{f}.stages", f"only applies to vector: per_stage (vector is {vec})")
    n_vec = {"per_unit": k, "per_stage": (max(out.stages) + 1) if out.stages else 0, "ramp": 0}[vec]
    if vec == "ramp":
        if "v" in s:
            raise v.err(f"{f}.v", "vector: ramp takes v_first and v_last ranges, not v")
        out.v_first = v.num_range(f"{f}.v_first", s.get("v_first", [0.0, 0.9]), 0.0, 1.0)
        out.v_last = v.num_range(f"{f}.v_last", s.get("v_last", [0.0, 0.9]), 0.0, 1.0)
    else:
        for key in ("v_first", "v_last"):
            if key in s:
                raise v.err(f"{f}.{key}", f"only applies to vector: ramp (vector is {vec})")
        raw = s.get("v", [0.0, 0.9])
        what = "unit" if vec == "per_unit" else "stage"
        if isinstance(raw, list) and raw and all(isinstance(x, list) for x in raw):
            if len(raw) != n_vec:
                raise v.err(f"{f}.v", f"a list of ranges needs one [low, high] pair per {what} ({n_vec}), "
                                      f"got {len(raw)}")
            out.v = [v.num_range(f"{f}.v[{i}]", r, 0.0, 1.0) for i, r in enumerate(raw)]
        else:
            out.v = [v.num_range(f"{f}.v", raw, 0.0, 1.0)] * n_vec
    out.warmup_epochs = v.int_range(f"{f}.warmup_epochs", s.get("warmup_epochs", 0), 0, epochs - 1,
                                    f" (0 .. epochs-1, epochs = {epochs})")
    out.v_mode = v.choices(f"{f}.v_mode", s.get("v_mode", ["manual"]), V_MODES)
    out.keep_last_trainable = v.choices(f"{f}.keep_last_trainable", s.get("keep_last_trainable", False),
                                        (False, True))
    return out


def _parse_freezeout(v: _V, f: str, s: dict, k: int, epochs: int, ep_what: str, units: list[str]) -> FreezeOutSpace:
    return FreezeOutSpace(
        t0=v.num_range(f"{f}.t0", s.get("t0", [0.5, 1.0]), 0.0, 1.0, low_open=True),
        scale=v.choices(f"{f}.scale", s.get("scale", list(SCALES)), SCALES),
        scale_lr=v.choices(f"{f}.scale_lr", s.get("scale_lr", False), (False, True)),
        warmup_epochs=v.int_range(f"{f}.warmup_epochs", s.get("warmup_epochs", 0), 0, epochs - 1,
                                  f" (0 .. epochs-1, epochs = {epochs})"),
    )


def _parse_prefix(v: _V, f: str, s: dict, k: int, epochs: int, ep_what: str, units: list[str]) -> PrefixSpace:
    if k < 2:
        raise v.err(f, f"needs a model with at least 2 units, {k} has 1")
    return PrefixSpace(
        k=v.int_range(f"{f}.k", s.get("k", [1, k - 1]), 1, k - 1, f" (1 .. K-1, the model has K = {k} units)"),
        start_epoch=v.int_range(f"{f}.start_epoch", s.get("start_epoch", 0), 0, epochs - 1,
                                f" (0 .. epochs-1, epochs = {epochs})"),
    )


def _parse_adaptive(v: _V, f: str, s: dict, k: int, epochs: int, ep_what: str, units: list[str]) -> AdaptiveSpace:
    if k < 2:
        raise v.err(f, f"needs a model with at least 2 units, {k} has 1")
    return AdaptiveSpace(
        check_every=v.int_range(f"{f}.check_every", s.get("check_every", 1), 1, epochs,
                                f" (1 .. epochs, epochs = {epochs})"),
        threshold_mode=v.choices(f"{f}.threshold_mode", s.get("threshold_mode", "percentile"), THRESHOLD_MODES),
        threshold=v.num_range(f"{f}.threshold", s.get("threshold", [25.0, 75.0]), 0.0, 100.0,
                              what=" (a percentile of the units' gradient-norm changes)"),
        absolute_threshold=v.num_range(f"{f}.absolute_threshold", s.get("absolute_threshold", [0.01, 0.5]),
                                       0.0, 1e6, what=" (a relative gradient-norm change)"),
        min_trainable_units=v.int_range(f"{f}.min_trainable_units", s.get("min_trainable_units", 1), 1, k - 1,
                                        f" (1 .. K-1, the model has K = {k} units)"),
    )


_FAMILY_PARSERS = {
    "none": lambda v, f, s, k, e, w, u: None,
    "layerout": _parse_layerout,
    "freezeout": _parse_freezeout,
    "prefix": _parse_prefix,
    "adaptive": _parse_adaptive,
}


# ------------------------------------------------------------------------------ trials
def paper_points(space: SearchSpace) -> list[tuple[str, dict[str, Any]]]:
    """The paper's five configurations as (name, params): baseline, LayerOut since start (random
    v), after warm-up with random v, efreeze and dfreeze after warm-up (the paper's vectors for
    K = 7 and 16, a 0.9 -> 0.1 ramp otherwise)."""
    from layerout.schedules import paper_vectors

    w = space.paper_warmup_epochs
    vecs = paper_vectors(space.num_units)

    def manual(vec: list[float]) -> dict[str, Any]:
        p: dict[str, Any] = {"family": "layerout", "layerout.v_mode": "manual", "layerout.warmup_epochs": w}
        p.update({f"layerout.v{i}": float(x) for i, x in enumerate(vec)})
        return p

    return [
        ("baseline", {"family": "none"}),
        ("since_start", {"family": "layerout", "layerout.v_mode": "random_epoch", "layerout.warmup_epochs": 0}),
        ("warmup_random", {"family": "layerout", "layerout.v_mode": "random_epoch", "layerout.warmup_epochs": w}),
        ("efreeze", manual(vecs["efreeze"])),
        ("dfreeze", manual(vecs["dfreeze"])),
    ]


def _r(x: float) -> float:
    return round(float(x), 4)


def trial_to_config(space: SearchSpace, params: dict[str, Any]) -> dict[str, Any]:
    """A trial's parameters -> ``{"family", "paper_config", "train": TrainConfig kwargs, "schedule": dict}``.

    ``params`` uses the define-by-run names (``family``, ``layerout.v0`` .. ``layerout.v{K-1}`` or
    ``layerout.v_first``/``layerout.v_last`` or ``layerout.stage0``.., ``layerout.warmup_epochs``,
    ``freezeout.t0``, ``prefix.k``, ...); any vector form is accepted whatever the space's form.
    The schedule is checked against the model's unit count and the epochs (UserError if bad).
    """
    fam = params.get("family")
    if fam not in FAMILY_KINDS:
        raise UserError(f"trial parameters: family: unknown family {fam!r}; allowed: {', '.join(FAMILY_KINDS)}")
    k = space.num_units
    sched: dict[str, Any]
    if fam == "none":
        sched = {"kind": "none"}
    elif fam == "layerout":
        mode = params.get("layerout.v_mode", "manual")
        vec = None
        if mode == "manual":
            if "layerout.v0" in params:
                vec = [_r(params[f"layerout.v{i}"]) for i in range(k)]
            elif "layerout.v_first" in params:
                from layerout.schedules import ramp_vector

                vec = [_r(x) for x in ramp_vector(k, params["layerout.v_first"], params["layerout.v_last"])]
            elif "layerout.stage0" in params:
                from layerout.schedules import stage_vector

                fs = space.families.get("layerout")
                stages = fs.stages if fs is not None and fs.stages else _auto_stages(space.units)
                vals = [params[f"layerout.stage{j}"] for j in range(max(stages) + 1)]
                vec = [_r(x) for x in stage_vector(stages, vals)]
            else:
                raise UserError("trial parameters: a manual LayerOut trial needs layerout.v0.. or "
                                "layerout.v_first/v_last or layerout.stage0..")
        sched = {"kind": "layerout", "v": vec, "v_mode": mode,
                 "warmup_epochs": int(params.get("layerout.warmup_epochs", 0)),
                 "keep_last_trainable": bool(params.get("layerout.keep_last_trainable", False)),
                 "seed": params.get("layerout.seed")}
    elif fam == "freezeout":
        sched = {"kind": "freezeout", "t0": _r(params["freezeout.t0"]), "scale": params["freezeout.scale"],
                 "scale_lr": bool(params.get("freezeout.scale_lr", False)),
                 "warmup_epochs": int(params.get("freezeout.warmup_epochs", 0))}
    elif fam == "prefix":
        sched = {"kind": "prefix", "k": int(params["prefix.k"]), "start_epoch": int(params.get("prefix.start_epoch", 0))}
    else:
        mode = params.get("adaptive.threshold_mode", "percentile")
        thr = params["adaptive.threshold"] if mode == "percentile" else params["adaptive.abs_threshold"]
        sched = {"kind": "adaptive", "check_every": int(params.get("adaptive.check_every", 1)),
                 "threshold_mode": mode, "threshold": _r(thr) if mode == "percentile" else float(f"{thr:.4g}"),
                 "min_trainable_units": int(params.get("adaptive.min_trainable_units", 1)),
                 "freeze_epochs": None}
    from layerout.schedules import schedule_from_dict

    schedule_from_dict(sched).bind(num_units=k, epochs=space.epochs, steps_per_epoch=1, seed=space.seed)
    train = {"model": space.model, "dataset": space.dataset, "seed": space.seed, **copy.deepcopy(space.train)}
    return {"family": fam, "paper_config": str(params.get("paper_config", "") or ""), "train": train,
            "schedule": sched}


class DefineByRun:
    """Optuna define-by-run space for a :class:`SearchSpace` (picklable, so Ray can checkpoint it).

    Suggests ``family`` (a categorical over the space's families), then only that family's
    parameters; a per-unit vector is K parameters ``layerout.v0`` .. ``layerout.v{K-1}``. A trial
    enqueued with the user attribute ``paper_config`` (see :func:`paper_enqueue`) returns that
    paper configuration instead. Returns the trial config of :func:`trial_to_config` plus
    ``optuna_trial`` (the Optuna trial number: the order trials were suggested in, and the trial
    to look for in optuna-dashboard).
    """

    def __init__(self, space: SearchSpace):
        self.space = space
        self.paper = dict(paper_points(space)) if space.paper_configs else {}

    def __call__(self, trial: Any) -> dict[str, Any]:
        space = self.space
        fams = list(space.families)
        number = getattr(trial, "number", None)
        pc = (getattr(trial, "user_attrs", None) or {}).get("paper_config")
        if pc and pc in self.paper:
            params = dict(self.paper[pc])
            if params["family"] in fams:
                trial.suggest_categorical("family", fams)  # fixed by the enqueued params
            return {**trial_to_config(space, {**params, "paper_config": pc}), "optuna_trial": number}
        fam = trial.suggest_categorical("family", fams)
        params: dict[str, Any] = {"family": fam}
        fs = space.families[fam]
        if fam == "layerout":
            mode = trial.suggest_categorical("layerout.v_mode", fs.v_mode)
            params["layerout.v_mode"] = mode
            params["layerout.warmup_epochs"] = trial.suggest_int("layerout.warmup_epochs", *fs.warmup_epochs)
            if len(fs.keep_last_trainable) > 1:
                params["layerout.keep_last_trainable"] = trial.suggest_categorical(
                    "layerout.keep_last_trainable", fs.keep_last_trainable)
            else:
                params["layerout.keep_last_trainable"] = fs.keep_last_trainable[0]
            if mode == "manual":
                if fs.vector == "per_unit":
                    for i, (lo, hi) in enumerate(fs.v):
                        params[f"layerout.v{i}"] = trial.suggest_float(f"layerout.v{i}", lo, hi)
                elif fs.vector == "ramp":
                    params["layerout.v_first"] = trial.suggest_float("layerout.v_first", *fs.v_first)
                    params["layerout.v_last"] = trial.suggest_float("layerout.v_last", *fs.v_last)
                else:
                    for j, (lo, hi) in enumerate(fs.v):
                        params[f"layerout.stage{j}"] = trial.suggest_float(f"layerout.stage{j}", lo, hi)
            elif mode == "random_once":
                params["layerout.seed"] = trial.suggest_int("layerout.seed", 0, 2**31 - 1)
        elif fam == "freezeout":
            params["freezeout.t0"] = trial.suggest_float("freezeout.t0", *fs.t0)
            params["freezeout.scale"] = trial.suggest_categorical("freezeout.scale", fs.scale)
            params["freezeout.scale_lr"] = trial.suggest_categorical("freezeout.scale_lr", fs.scale_lr)
            params["freezeout.warmup_epochs"] = trial.suggest_int("freezeout.warmup_epochs", *fs.warmup_epochs)
        elif fam == "prefix":
            params["prefix.k"] = trial.suggest_int("prefix.k", *fs.k)
            params["prefix.start_epoch"] = trial.suggest_int("prefix.start_epoch", *fs.start_epoch)
        elif fam == "adaptive":
            params["adaptive.check_every"] = trial.suggest_int("adaptive.check_every", *fs.check_every)
            mode = trial.suggest_categorical("adaptive.threshold_mode", fs.threshold_mode)
            params["adaptive.threshold_mode"] = mode
            if mode == "percentile":
                params["adaptive.threshold"] = trial.suggest_float("adaptive.threshold", *fs.threshold)
            else:
                params["adaptive.abs_threshold"] = trial.suggest_float("adaptive.abs_threshold",
                                                                       *fs.absolute_threshold)
            params["adaptive.min_trainable_units"] = trial.suggest_int("adaptive.min_trainable_units",
                                                                       *fs.min_trainable_units)
        return {**trial_to_config(space, params), "optuna_trial": number}


def define_by_run(space: SearchSpace, num_units: int | None = None) -> DefineByRun:
    """The Optuna define-by-run function for ``space`` (``num_units`` defaults to the model's K)."""
    if num_units is not None and num_units != space.num_units:
        raise UserError(f"{space.source}: model {space.model} has {space.num_units} units, "
                        f"not {num_units}")
    return DefineByRun(space)


def paper_enqueue(space: SearchSpace) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(fixed params, user_attrs) for ``optuna.Study.enqueue_trial``: the paper's configurations,
    in order, when ``space.paper_configs`` is on (an empty list otherwise)."""
    if not space.paper_configs:
        return []
    out = []
    for name, params in paper_points(space):
        fixed = {"family": params["family"]} if params["family"] in space.families else {}
        out.append((fixed, {"paper_config": name}))
    return out
