"""Search spaces: a YAML file (or a preset name) -> a validated :class:`SearchSpace`.

A space says which model and dataset to train, with which fixed training recipe, which freezing
families to search over and each family's parameter ranges, the objectives, the early-stopping
settings, and whether to evaluate the paper's five configurations first. This module loads and
validates a space as a whole; each family's block is parsed by its module in
``search_spaces/families/``, and ``search_spaces/trials.py`` turns a space into Optuna trials.

This module never imports Ray. Format (every key optional except ``model`` and ``dataset``)::

    name: demo
    description: one line shown by --list-presets
    model: digits_cnn            # python -m layerout.models lists them; or my_pkg.nets:build
    dataset: digits              # digits | mnist | cifar10 | cifar100 | synthetic | imagefolder:PATH
                                 # | my_pkg.data:load (your own data function)
    units: [conv1, conv2, head]  # optional: module prefixes (or name: prefixes) of the units
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
    early_stopping: {scheduler: moasha, grace_period: 2, reduction_factor: 2}   # moasha | asha | none
    paper_configs: true          # evaluate the paper's five configurations first
    paper_warmup_epochs: 2       # warm-up of the paper's "warm-up" configurations (paper: 20)
    reference_budgets: [0.25, 0.5, 0.75]   # the unfrozen model trained shorter (false: none)
    budget_frac: [0.5, 1.0]      # optional: policies trained for a fraction of the budget too
    confirm: {seeds: 3, top: 2}  # the default: re-train the best front policies on fresh seeds at the end (seeds: 0: not)
    num_samples: 24
    max_concurrent: 2
    seed: 0
    loggers: [csv, tensorboard]  # Ray Tune's loggers (csv | tensorboard | mlflow | wandb); --logger overrides

A range is ``[low, high]``; a single value fixes the parameter. A choice is a list, or a single
value. Errors name the file and the field: ``x.yaml: families.layerout.warmup_epochs: must be
...``, raised as :class:`layerout.errors.UserError`.
"""
from __future__ import annotations

import os
import sys
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from layerout import userland
from layerout.checks import check_name, cut, short
from layerout.choices import BUILTIN_MODELS, DATASETS, IMAGEFOLDER
from layerout.errors import UserError
from layerout.metrics import DEFAULT_OBJECTIVES, OBJECTIVE_METRICS, OBJECTIVE_MODES, REPORT_ONLY
from layerout.userland import names_user_code
from search_spaces.checks import Checker
from search_spaces.schedulers import SCHEDULERS

if TYPE_CHECKING:  # imported where a space is validated: reading one, listing presets need no numpy
    from search_spaces.families import FamilySpace, SpaceContext

PRESET_DIR = Path(__file__).resolve().parent / "presets"
# A search space is a page of YAML: refuse files (and anchor/alias expansions) far beyond that
MAX_SPACE_BYTES = 1 << 20
MAX_SPACE_VALUES = 100_000

# Ray Tune's logger callbacks a search may use besides result.json (tuning.loggers)
LOGGERS = ("csv", "tensorboard", "mlflow", "wandb")
TOP_KEYS = ("name", "description", "model", "dataset", "units", "train", "families", "objectives",
            "early_stopping", "paper_configs", "paper_warmup_epochs", "num_samples",
            "max_concurrent", "seed", "loggers")
# TrainConfig fields a space's `train:` block may not set: where it runs from (the command line's
# --data-dir/--no-download), the model, dataset, units and seed (top-level keys), the budget, and
# the threads (one per CPU a trial holds: --cpus-per-trial)
NOT_TRAIN_FIELDS = ("model", "dataset", "units", "seed", "data_dir", "download", "budget_epochs", "threads")
# Is freezing worth it: the shorter-training reference points (the unfrozen model trained for these
# fractions of the budget; the full-budget baseline always runs), the optional budget_frac
# dimension, and the confirmation of the front on fresh seeds at the end of a search
BUDGET_KEYS = ("reference_budgets", "budget_frac", "confirm")
REFERENCE_BUDGETS = (0.25, 0.5, 0.75)
# every search confirms its front at the end by default (tune_main): one seed is an anecdote
CONFIRM_SEEDS = 3
CONFIRM_TOP = 2


@dataclass
class EarlyStopping:
    scheduler: str = "moasha"
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
    families: dict[str, FamilySpace]  # kind -> that family's ranges
    description: str = ""
    source: str = ""  # the YAML file it came from
    unit_prefixes: list | None = None  # the space's `units:` as [[name, [prefixes]], ...]; None: the model's
    units_from: str = "declared"  # where the units came from: given, declared or automatic
    code_paths: list[str] = field(default_factory=list)  # folders searched for the model's and data's modules
    notes: list[str] = field(default_factory=list)  # what the user should know (parameters in no unit)
    objectives: list[tuple[str, str]] = field(default_factory=lambda: list(DEFAULT_OBJECTIVES))
    early_stopping: EarlyStopping = field(default_factory=EarlyStopping)
    paper_configs: bool = False
    paper_warmup_epochs: int = 0
    num_samples: int = 24
    max_concurrent: int = 0  # 0: as many as resources allow
    seed: int = 0
    loggers: list[str] | None = None  # None: the default set (tuning.loggers)
    # fractions of the budget the unfrozen model is also trained for (search_spaces.trials.reference_points)
    reference_budgets: list[float] = field(default_factory=lambda: list(REFERENCE_BUDGETS))
    budget_frac: tuple[float, float] | None = None  # None: every trial trains the whole budget
    confirm_seeds: int = CONFIRM_SEEDS  # tune_main re-trains the front on this many fresh seeds at the end; 0: not
    confirm_top: int = CONFIRM_TOP
    # the document it was validated from (the parsed YAML), kept so that experiment.json can
    # rebuild the space (``space_from_dict``); None for a space built in code
    document: dict[str, Any] | None = field(default=None, repr=False, compare=False)

    @property
    def num_units(self) -> int:
        return len(self.units)

    @property
    def epochs(self) -> int:
        return int(self.train["epochs"])

    @property
    def context(self) -> SpaceContext:
        from search_spaces.families import SpaceContext

        return SpaceContext(units=tuple(self.units), epochs=self.epochs, seed=self.seed)

    def to_dict(self) -> dict[str, Any]:
        """The resolved space as plain JSON-able data (experiment.json's ``space``)."""
        d = asdict(self)
        d.pop("document", None)
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
        raise UserError(f"unknown preset {short(name)}; available: {names} (python tune_main.py --list-presets)")
    return p


def _display(path: Path) -> str:
    try:
        rel = os.path.relpath(path)
        return rel if not rel.startswith("..") else str(path)
    except ValueError:
        return str(path)


def load_space(path_or_preset: str | os.PathLike) -> SearchSpace:
    """Load and validate a space from a YAML file, or a preset by name (``demo``)."""
    data, where, default_name, folder = read_space(path_or_preset)
    return space_from_dict(data, where=where, default_name=default_name, folder=folder)


def read_space(path_or_preset: str | os.PathLike) -> tuple[Any, str, str, Path]:
    """A space file's parsed YAML, not yet validated: (data, where, default name, folder its code
    is looked up in: the file's folder; the current directory for a preset)."""
    s = str(path_or_preset)
    p = Path(s)
    if p.suffix in (".yaml", ".yml") or os.sep in s or p.is_file():
        if not p.is_file():
            raise UserError(f"{s}: no such search-space file")
        where, folder = s, p.resolve().parent
    else:
        p = preset_path(s)
        where, folder = _display(p), Path.cwd()
    try:
        size = p.stat().st_size
        if size > MAX_SPACE_BYTES:
            raise UserError(f"{where}: {size:,} bytes; a search space may be at most {MAX_SPACE_BYTES:,} bytes "
                            "(1 MiB)")
        text = p.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{where}: cannot read ({exc.__class__.__name__}: {cut(str(exc))})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise UserError(f"{where}: not valid YAML: {cut(' '.join(str(problem).split()))}{at}") from None
    except RecursionError:
        raise UserError(f"{where}: nested too deeply to read (thousands of levels of [ or {{)") from None
    if _expanded_size(data, MAX_SPACE_VALUES) > MAX_SPACE_VALUES:
        raise UserError(f"{where}: expands to more than {MAX_SPACE_VALUES:,} values (YAML anchors and aliases "
                        "repeat what they name); a search space needs far fewer: write its values out")
    return data, where, p.stem, folder


def _expanded_size(data: Any, limit: int) -> int:
    """How many values ``data`` holds with every alias expanded, counting only up to just past
    ``limit`` (a YAML alias bomb, or a document that refers to itself, stops the count early)."""
    count, stack = 0, [data]
    while stack and count <= limit:
        x = stack.pop()
        count += 1
        if isinstance(x, dict):
            stack.extend(x.keys())
            stack.extend(x.values())
        elif isinstance(x, (list, tuple)):
            stack.extend(x)
    return count


# ------------------------------------------------------------------------------ validation
def space_from_dict(data: Any, where: str = "<space>", default_name: str = "space",
                    folder: str | os.PathLike | None = None) -> SearchSpace:
    """Validate a parsed YAML document into a :class:`SearchSpace`.

    Your own model and data (import paths) are looked up in ``folder`` (the space file's folder;
    default: the current directory), then the current directory, then the installed packages;
    they are imported, called and run on one batch here, so bad code fails before any training.
    A relative ``imagefolder:PATH`` is taken from ``folder`` too."""
    check = Checker(where)
    name, description = _header(check, data, where, default_name)
    folder = Path(folder).resolve() if folder is not None else Path.cwd()
    model, dataset = _model_and_dataset(check, data, folder)
    from search_spaces.families import SpaceContext

    unit_spec = _unit_spec(check, data)
    seed = check.int_("seed", data.get("seed", 0), 0, 2**31 - 1)
    train = _train(check, data.get("train"), model, dataset, seed)
    checked, code = _checked_code(check, model, dataset, unit_spec, folder, train, seed)
    units = [u.name for u in checked.units]
    if checked.origin == "automatic":  # pinned in every trial's recipe, so policies replay the same units
        from layerout.units import unit_pairs

        unit_spec = unit_pairs(checked.units)
    ctx = SpaceContext(units=tuple(units), epochs=train["epochs"], seed=seed)
    # no families key: LayerOut's defaults; an empty one (``families:``, null, {}) names none
    families = _families(check, data["families"] if "families" in data else {"layerout": {}}, ctx)
    objectives = _objectives(check, data.get("objectives"))
    early = _early_stopping(check, data.get("early_stopping"), objectives, ctx.epochs)
    return SearchSpace(name=name, model=model, dataset=dataset, units=units, train=train, families=families,
                       description=description, source=where, unit_prefixes=unit_spec, units_from=checked.origin,
                       code_paths=code, notes=checked.notes, objectives=objectives, early_stopping=early,
                       seed=seed, document=_jsonable(data), **_search_settings(check, data, ctx.epochs))


def _header(check: Checker, data: Any, where: str, default_name: str) -> tuple[str, str]:
    """The document's shape (a mapping of known keys, model and dataset given), its name and description."""
    if not isinstance(data, dict):
        raise UserError(f"{where}: must be a YAML mapping with keys model, dataset, train, families, ...; "
                        f"got {type(data).__name__}")
    check.mapping("", data, TOP_KEYS + BUDGET_KEYS)
    name = data.get("name", default_name)
    check_name(name, f"{where}: name")
    description = data.get("description", "")
    if not isinstance(description, str):
        raise check.err("description", f"must be a string, got {short(description)}")
    if "model" not in data:
        raise check.err("model", "missing; name a built-in model (python -m layerout.models lists them) or "
                                 "your own as an import path like my_pkg.nets:build")
    if "dataset" not in data:
        raise check.err("dataset", f"missing; allowed: {', '.join(DATASETS)}, {IMAGEFOLDER}PATH, or an import path "
                                   "to your own data function like my_pkg.data:load")
    return name, description


def _model_and_dataset(check: Checker, data: dict, folder: Path) -> tuple[str, str]:
    """The model and dataset names, known or import paths (a relative image folder made absolute)."""
    dataset = data["dataset"]
    if not isinstance(dataset, str) or not (dataset in DATASETS or dataset.startswith(IMAGEFOLDER)
                                            or names_user_code(dataset)):
        raise check.err("dataset", f"unknown dataset {short(dataset)}; allowed: {', '.join(DATASETS)}, "
                                   f"{IMAGEFOLDER}PATH, or an import path to your own data function like my_pkg.data:load")
    if dataset.startswith(IMAGEFOLDER):  # trials run elsewhere (Ray changes their directory): make it absolute
        dataset = IMAGEFOLDER + str(folder / os.path.expanduser(dataset[len(IMAGEFOLDER):]))
    model = data["model"]
    if not isinstance(model, str):
        raise check.err("model", f"must be a model name or an import path, got {short(model)}")
    # the built-in models, and any registered from Python (then layerout.models is loaded already):
    # without importing torch, which the checks from here on need (the model is built and run)
    registry = sys.modules.get("layerout.models")
    models = tuple(registry.MODELS) if registry is not None else BUILTIN_MODELS
    if model not in models and not names_user_code(model):
        raise check.err("model", f"unknown model {short(model)}; allowed: {', '.join(models)}, or an import path to "
                                 "your own like my_pkg.nets:build")
    return model, dataset


def _unit_spec(check: Checker, data: dict) -> Any:
    """The ``units:`` given, checked (None: declared or automatic)."""
    from layerout.config import check_unit_spec

    if data.get("units") is None:
        return None
    try:
        return check_unit_spec(data["units"])
    except UserError as e:
        raise check.err("units", str(e).split(": ", 1)[1]) from None


def _checked_code(check: Checker, model: str, dataset: str, unit_spec: Any, folder: Path, train: dict[str, Any],
                  seed: int) -> tuple[Any, list[str]]:
    """The model and data imported, called and run on one batch (``layerout.preflight``), and the
    folders the trials import the user's code from."""
    from layerout.preflight import check_model_and_data

    # each folder once (the space's folder is often the current one)
    code = list(dict.fromkeys([str(folder), str(Path.cwd().resolve())])) if names_user_code(model) or \
        names_user_code(dataset) else []
    userland.add_code_paths(code)
    try:
        checked = check_model_and_data(model, dataset, unit_spec, val_frac=train["val_frac"], seed=seed,
                                       image_size=train["image_size"])
    except UserError as e:
        raise check.within(e) from None
    for spec in (model, dataset):  # the folder each of the user's modules was found in: trials look there too
        loc = userland.module_location(spec)
        if loc and str(Path(loc).parent) not in code:
            code.append(str(Path(loc).parent))
    return checked, code


def _early_stopping(check: Checker, raw: Any, objectives: list[tuple[str, str]], epochs: int) -> EarlyStopping:
    """The ``early_stopping:`` block (scheduler: MOASHA with two or more objectives, else ASHA)."""
    es = check.mapping("early_stopping", raw, ("scheduler", "grace_period", "reduction_factor"))
    scheduler = es.get("scheduler", "moasha" if len(objectives) >= 2 else "asha")
    if scheduler not in SCHEDULERS:
        raise check.err("early_stopping.scheduler", f"must be one of {', '.join(SCHEDULERS)}, got {short(scheduler)}")
    return EarlyStopping(
        scheduler=scheduler,
        grace_period=check.int_("early_stopping.grace_period", es.get("grace_period", 1), 1, epochs,
                                f" (1 .. epochs, epochs = {epochs})"),
        reduction_factor=check.int_("early_stopping.reduction_factor", es.get("reduction_factor", 2), 2, 100),
    )


def _search_settings(check: Checker, data: dict, epochs: int) -> dict[str, Any]:
    """How the search runs: the paper's configurations, its size, loggers, the shorter-training
    reference points and ``budget_frac``, the confirmation (SearchSpace's fields)."""
    ep_what = f" (0 .. epochs-1, epochs = {epochs})"
    paper = check.bool_("paper_configs", data.get("paper_configs", False))
    pw_default = min(20, max(1, round(epochs * 0.2)), epochs - 1)
    paper_warmup = check.int_("paper_warmup_epochs", data.get("paper_warmup_epochs", pw_default), 0, epochs - 1,
                              ep_what)
    num_samples = check.int_("num_samples", data.get("num_samples", 24), 1)
    max_conc = check.int_("max_concurrent", data.get("max_concurrent", 0), 0)
    loggers = check.choices("loggers", data["loggers"], LOGGERS) if data.get("loggers") is not None else None
    budgets = _reference_budgets(check, data.get("reference_budgets", list(REFERENCE_BUDGETS)))
    budget_frac = (None if data.get("budget_frac") is None else
                   check.num_range("budget_frac", data["budget_frac"], 0.0, 1.0, low_open=True,
                                   what=" (fractions of the epoch budget a trial trains)"))
    conf = check.mapping("confirm", data.get("confirm"), ("seeds", "top"))
    confirm_seeds = check.int_("confirm.seeds", conf.get("seeds", CONFIRM_SEEDS), 0, 100)
    confirm_top = check.int_("confirm.top", conf.get("top", CONFIRM_TOP), 1, 100)
    return dict(paper_configs=paper, paper_warmup_epochs=paper_warmup, num_samples=num_samples,
                max_concurrent=max_conc, loggers=loggers, reference_budgets=budgets, budget_frac=budget_frac,
                confirm_seeds=confirm_seeds, confirm_top=confirm_top)


def _train(check: Checker, raw: Any, model: str, dataset: str, seed: int) -> dict[str, Any]:
    """The ``train:`` block, checked and completed by TrainConfig (the one source of defaults)."""
    from layerout.config import TrainConfig

    train_fields = tuple(f.name for f in fields(TrainConfig) if f.name not in NOT_TRAIN_FIELDS)
    block = check.mapping("train", raw, train_fields)
    try:
        cfg = TrainConfig(model=model, dataset=dataset, seed=seed, **block)
    except UserError as e:
        raise check.within(e) from None
    epochs, ms = cfg.epochs, cfg.lr_milestones
    if any(m >= epochs for m in ms):  # in a space, a milestone that training never reaches is a mistake
        raise check.err("train.lr_milestones", f"must be an increasing list of integer epochs within "
                                               f"[1, {epochs - 1}] (epochs = {epochs}), got {short(ms)}")
    resolved = asdict(cfg)
    return {k: resolved[k] for k in train_fields}


def _families(check: Checker, raw: Any, ctx: SpaceContext) -> dict[str, FamilySpace]:
    from layerout.schedules import SCHEDULES
    from search_spaces.families import FAMILY_SPACES

    kinds = ", ".join(FAMILY_SPACES)
    if not isinstance(raw, dict) or not raw:
        raise check.err("families", f"must be a mapping of one or more of {kinds} to their ranges, got {short(raw)}")
    out: dict[str, FamilySpace] = {}
    for kind, spec in raw.items():
        fld = f"families.{kind}"
        if kind not in FAMILY_SPACES:
            raise check.err(fld, f"unknown family; allowed: {kinds}")
        if kind not in SCHEDULES:
            raise check.err(fld, f"this version of layerout has no {short(kind)} schedule (layerout.schedules knows: "
                                 f"{', '.join(sorted(SCHEDULES))}); remove it from the space")
        family = FAMILY_SPACES[kind]
        out[kind] = family.parse(check, fld, check.mapping(fld, spec, family.keys), ctx)
    return out


def _reference_budgets(check: Checker, raw: Any) -> list[float]:
    """``reference_budgets``: fractions in (0, 1) of the epoch budget (``false`` or ``[]``: none;
    ``true``: the default ones)."""
    if raw is False or raw is None:
        return []
    if raw is True:
        return list(REFERENCE_BUDGETS)
    vals = raw if isinstance(raw, list) else [raw]
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < 1 for v in vals):
        raise check.err("reference_budgets", "must be a list of fractions of the epoch budget within (0, 1), e.g. "
                                             f"[0.25, 0.5, 0.75], or false for none, got {short(raw)}")
    return sorted({float(v) for v in vals})


def _objectives(check: Checker, raw: Any) -> list[tuple[str, str]]:
    if raw is None:
        return list(DEFAULT_OBJECTIVES)
    bad = check.err("objectives", f"must be a list of [metric, max|min] pairs with metrics from "
                                  f"{', '.join(OBJECTIVE_METRICS)}, got {short(raw)}")
    if not isinstance(raw, list) or not raw:
        raise bad
    out = []
    for o in raw:
        if isinstance(o, list) and o and isinstance(o[0], str) and o[0] in REPORT_ONLY:
            raise check.err("objectives", f"{o[0]} is only reported, never used to select (the test split must "
                                          f"not choose a policy); allowed metrics: {', '.join(OBJECTIVE_METRICS)}")
        if not (isinstance(o, list) and len(o) == 2 and o[0] in OBJECTIVE_METRICS and o[1] in OBJECTIVE_MODES):
            raise bad
        out.append((o[0], o[1]))
    if len({n for n, _ in out}) != len(out):
        raise bad
    return out
