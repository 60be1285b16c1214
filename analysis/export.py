"""Export a front policy as a policy file people can take into their own training.

    python -m analysis.export EXPERIMENT_DIR [--pick knee|max-accuracy|min-compute]
                              [--min-accuracy X] [-o policy.json] [--all-front DIR] [--ignore-curve]

By default the pick is made among the front policies that beat training the unfrozen model for
fewer epochs at the same compute (a margin above 0 over the shorter-training curve,
``analysis.curve``; the confirmed mean when confirm.csv exists). When none does, nothing is
written: one line says so and names the shorter-training run to use instead (exit status 2);
``--ignore-curve`` picks among every front policy. The knee is the experiment's one knee
(``analysis.front.choose_knee``: among the policies above the curve when there are any, else the
whole front's), the trial the console, ``pareto.csv``, the plots and the report call the knee.

The file has the policy-file shape (docs/FORMATS.md):
``{"format": "layerout-policy", "version": 1, "model", "units", "schedule", "measured",
"provenance"}``; ``schedule`` is the trial's schedule dict (trials.csv ``policy`` column),
``measured`` its final metrics, ``provenance`` the recipe that replays it (model, dataset, epochs,
batch_size, seed, steps_per_epoch and the whole training config under ``train``) and where it came
from. Every file is validated and written by ``layerout.policy`` (``Policy.from_dict`` and
``save_policy``), so it loads with ``load_policy`` and replays with
``python -m layerout.train --policy FILE --out DIR``.
"""
from __future__ import annotations

import argparse
import json
import math
import re
import shlex
from dataclasses import MISSING, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from analysis._cli import ArgumentParser, run_cli
from analysis.curve import beats_curve, is_unfrozen
from analysis.front import Front, compute_front, pick_trial
from analysis.policies import parse_schedule
from analysis.results import Experiment, load_experiment
from layerout.checks import short
from layerout.errors import UserError
from layerout.experiment import POLICIES_DIR
from layerout.files import WriteError
from layerout.freezer import resolve_bn_frozen
from layerout.policy import FORMAT as POLICY_FORMAT
from layerout.policy import VERSION as POLICY_VERSION
from layerout.policy import Policy, save_policy
from layerout.schedules import SCHEDULES
from layerout.schedules.none import UNFROZEN
from layerout.metrics import POLICY_MEASURED
from layerout.train import SWITCHES, VALUE_FLAGS
from layerout.config import LOCAL_FIELDS, TrainConfig

PICKS = ("knee", "max-accuracy", "min-compute")
MEASURED = list(POLICY_MEASURED)


def parse_accuracy(value: Any) -> float:
    """'0.95' -> 0.95 (fraction); '95' or '95%' -> 0.95 (values > 1, or with %, are percent)."""
    text = str(value).strip()
    percent = text.endswith("%")
    if percent:
        text = text[:-1].strip()
    try:
        x = float(text)
    except ValueError:
        raise UserError(
            f"--min-accuracy {short(value)}: not a number; give a fraction (0.95) or a percent (95 or 95%)"
        ) from None
    if math.isnan(x) or x < 0:
        raise UserError(f"--min-accuracy {short(value)}: must be between 0 and 1 (fraction) or 0 and 100 (percent)")
    if percent or x > 1:
        x /= 100.0
    if x > 1:
        raise UserError(f"--min-accuracy {short(value)}: above 100%; give a fraction (0.95) or a percent (95)")
    return x


def _json_safe(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    if hasattr(x, "item") and not isinstance(x, (str, bytes)):
        try:
            x = x.item()
        except (ValueError, AttributeError):
            pass
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if x is None or isinstance(x, (str, int, float, bool)):
        return x
    return str(x)


def _config_of(row: pd.Series) -> dict[str, Any]:
    """The trial's flattened ``config/...`` columns, without the prefix, NaN dropped."""
    out: dict[str, Any] = {}
    for col, val in row.items():
        if isinstance(col, str) and col.startswith("config/"):
            if val is None or (isinstance(val, float) and math.isnan(val)):
                continue
            out[col[len("config/"):]] = _json_safe(val)
    return out


def _train_fields() -> dict[str, str]:
    """TrainConfig field name -> its annotation (a string such as 'int', 'float | None', 'list[int]'),
    without ``LOCAL_FIELDS`` (where a run ran is never part of a replayed recipe)."""
    return {f.name: str(f.type) for f in fields(TrainConfig) if f.name not in LOCAL_FIELDS}


def _coerce(value: Any, annotation: str) -> Any:
    """A CSV cell back to the TrainConfig field's type (lists were stored as JSON, ints may read as floats)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    value = _json_safe(value)
    if annotation.startswith("list"):
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError:
                return None
        return [int(v) if isinstance(v, float) and v.is_integer() else v for v in value] \
            if isinstance(value, list) else None
    if annotation.startswith("bool"):
        return value if isinstance(value, bool) else str(value).strip().lower() in ("true", "1", "yes")
    if annotation.startswith("int") and isinstance(value, float) and value.is_integer():
        return int(value)
    if annotation.startswith("float") and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def train_recipe(exp: Experiment, row: pd.Series) -> dict[str, Any]:
    """The training recipe (TrainConfig fields) the trial ran with: the trial's ``config/train/*``
    columns (older tables: ``config/<field>``), over the experiment's ``space.train``, and the
    intra-op ``threads`` it computed with (its ``threads`` column; older tables: the search's
    ``cpus_per_trial``, which set it); without ``LOCAL_FIELDS`` (device, data_dir, download,
    fast_path: where it ran, not what it did)."""
    known = _train_fields()
    recipe: dict[str, Any] = {}
    space = exp.meta.get("space")
    if isinstance(space, dict):
        for k in ("model", "dataset", "seed"):
            if k in space:
                recipe[k] = space[k]
        if isinstance(space.get("train"), dict):
            recipe.update(space["train"])
    cfg = _config_of(row)
    for k in known:
        for key in (k, f"train/{k}"):  # the nested form wins
            if key in cfg:
                recipe[k] = cfg[key]
    out = {}
    for k, v in recipe.items():
        if k in known:
            v = _coerce(v, known[k])
            if v is not None or "None" in known[k]:
                out[k] = v
    if exp.model:
        out["model"] = str(exp.model)
    if exp.dataset:
        out["dataset"] = str(exp.dataset)
    own = _int_cell(cfg.get("train/epochs", cfg.get("epochs")))  # a shorter run's own epochs, else the budget
    if own or exp.epoch_budget:
        out["epochs"] = int(own or exp.epoch_budget)
    if out.get("budget_epochs") is not None and out["budget_epochs"] <= out.get("epochs", 0):
        out["budget_epochs"] = None  # not a shorter run
    threads = _int_cell(row.get("threads"))  # what the trial computed with (layerout.arithmetic)
    if threads is None and out.get("threads") is None:  # tables from before it was reported: what the search set
        cpus = (exp.meta.get("options") or {}).get("cpus_per_trial")
        threads = max(1, int(cpus)) if isinstance(cpus, (int, float)) and not isinstance(cpus, bool) else None
    if threads:
        out["threads"] = threads
    return out


def _int_cell(x: Any) -> int | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return int(v) if math.isfinite(v) and v.is_integer() and v > 0 else None


def build_policy(exp: Experiment, row: pd.Series, picked_by: str) -> dict:
    """The policy-file dict for one trial row of ``exp``; ``UserError`` naming what is missing.

    ``provenance`` carries what ``python -m layerout.train --policy`` needs to replay the trial:
    ``model``, ``dataset``, ``epochs``, ``batch_size``, ``seed``, ``steps_per_epoch`` (as a
    trainer's own policy has them) and the whole recipe under ``train``; plus where it came from.
    """
    trial_id = str(row["trial_id"])
    where = exp.path / "trials.csv"
    schedule = parse_schedule(row.get("policy"))
    if schedule is None or "kind" not in schedule:
        raise UserError(
            f"{where}: trial {trial_id}: column 'policy' is empty or not a JSON schedule dict "
            "(expected e.g. {\"kind\": \"layerout\", ...})"
        )
    model = exp.model
    if not model:
        raise UserError(f"{exp.path / 'experiment.json'}: field 'model' is missing; cannot write a policy file")
    units = exp.units
    if not units:
        raise UserError(f"{exp.path / 'experiment.json'}: field 'units' is missing; cannot write a policy file")
    measured = {k: _json_safe(row.get(k)) for k in MEASURED if k in row.index}
    measured["epochs"] = _json_safe(row.get("epochs_done"))
    meta = exp.meta
    recipe = train_recipe(exp, row)
    kind = schedule.get("kind")
    if recipe.get("bn_frozen") == "auto" and kind in SCHEDULES:  # the value the trial ran with
        recipe["bn_frozen"] = resolve_bn_frozen("auto", SCHEDULES[kind])
    provenance = {
        "model": str(model),
        "dataset": exp.dataset,
        "epochs": recipe.get("epochs", exp.epoch_budget),
        "batch_size": recipe.get("batch_size"),
        "seed": recipe.get("seed"),
        "steps_per_epoch": _int_cell(row.get("steps_per_epoch")),
        "train": recipe,
        "experiment": exp.name,
        "experiment_dir": str(exp.path.resolve()),
        "trial_id": trial_id,
        "family": str(row.get("family", "")),
        "paper_config": str(row.get("paper_config", "")) or None,
        "reference": str(row.get("reference", "") or "") or None,  # a shorter-training reference point
        "picked_by": picked_by,
        "stopped_early": bool(row.get("stopped", row.get("stopped_early", False))),
        "space_file": meta.get("space_file"),
        # where the search found the user's model and data modules (layerout.train --policy looks there)
        "code_paths": ((meta.get("code") or {}).get("paths") or None),
        "versions": meta.get("versions"),
        "exported": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "exported_by": "python -m analysis.export",
    }
    provenance = {k: v for k, v in provenance.items() if v is not None or k in ("paper_config",)}
    if row.get("confirmed_runs"):  # measured: the means over the fresh seeds of confirm.csv
        measured["confirmed_runs"] = int(row["confirmed_runs"])
    return {
        "format": POLICY_FORMAT,
        "version": POLICY_VERSION,
        "model": str(model),
        "units": list(units),
        "schedule": _json_safe(schedule),
        "measured": measured,
        "provenance": _json_safe(provenance),
    }


def write_policy_file(doc: dict, path: Path) -> Path:
    """Validate ``doc`` as a policy (``layerout.policy.Policy.from_dict``: format, version, units,
    schedule) and write it atomically with ``save_policy``; a bad one is a ``UserError``."""
    path = Path(path)
    return save_policy(Policy.from_dict(doc, source=f"{path} (trial {doc.get('provenance', {}).get('trial_id')})"),
                       path)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "trial"


def policy_filename(trial_id: str) -> str:
    return f"{_slug(str(trial_id))}.json"


def _defaults() -> dict[str, Any]:
    out = {}
    for f in fields(TrainConfig):
        if f.default is not MISSING:
            out[f.name] = f.default
        elif f.default_factory is not MISSING:  # type: ignore[misc]
            out[f.name] = f.default_factory()  # type: ignore[misc]
    return out


def retrain_command(exp: Experiment, row: pd.Series, policy_path: str | Path) -> str:
    """The command that retrains one trial's policy without Ray (run from the experiment dir):
    the trial's recipe as flags wherever it differs from the trainer's defaults."""
    recipe = train_recipe(exp, row)
    defaults = _defaults()
    parts = ["python", "-m", "layerout.train"]
    if exp.model:
        parts += ["--model", str(exp.model)]
    if exp.dataset:
        parts += ["--dataset", str(exp.dataset)]
    parts += ["--policy", str(policy_path)]
    # values are written only where they differ from TrainConfig's defaults, so the command stays
    # short and still exact; the recipe has no LOCAL_FIELDS (where it ran)
    for key, flag in VALUE_FLAGS.items():
        val = recipe.get(key)
        if val is None or (key != "epochs" and val == defaults.get(key)):
            continue
        parts += [flag, ",".join(str(v) for v in val) if isinstance(val, list) else str(val)]
    if recipe.get("lr_warmup_epochs") and recipe.get("lr_warmup_value") is not None:
        parts += ["--lr-warmup", f"{recipe['lr_warmup_epochs']}:{recipe['lr_warmup_value']}"]
    for key, (when, flag) in SWITCHES.items():
        if key in recipe and recipe[key] == when:
            parts.append(flag)
    parts += ["--out", f"runs/{_slug(str(row['trial_id']))}"]
    return " ".join(shlex.quote(p) for p in parts)


ABOVE_CURVE = "among the front policies that beat training for fewer epochs"


def shorter_instead(fr: Front, row: pd.Series, budget: int | None) -> str:
    """The shorter-training run with the compute saved nearest ``row``'s: 'train the unfrozen model
    for 4 of 8 epochs instead (shorter-50%: val acc 97.20%, compute saved 50.0%)'."""
    c = fr.curve
    if c is None or c.empty:
        return "train the unfrozen model for the whole budget"
    p = c.loc[(c["compute_saved_frac"] - float(row["compute_saved_frac"])).abs().idxmin()]
    what = (f"all {int(p['epochs'])} epochs" if budget and int(p["epochs"]) >= budget else
            f"{int(p['epochs'])} of {budget} epochs" if budget else f"{int(p['epochs'])} epochs")
    return (f"train the unfrozen model for {what} instead ({p['name']}: val acc "
            f"{100 * p['val_accuracy']:.2f}%, compute saved {100 * p['compute_saved_frac']:.1f}%)")


def below_curve_line(fr: Front, pick: str, min_accuracy: float | None, budget: int | None) -> str:
    """The one line of an export that finds no front policy above the shorter-training curve: how
    far below it the freezing policy ``pick`` would have chosen is, and the shorter-training run
    to use instead. For the knee that is the experiment's one knee (``Front.knee``: the whole
    front's, since none beats the curve), or the best freezing policy where the knee is unfrozen."""
    free = fr.front[~is_unfrozen(fr.front)]
    what = f"--min-accuracy {min_accuracy * 100:g}%" if min_accuracy is not None else f"the {pick}"
    if free.empty:
        row = fr.knee_row
        how = "no freezing policy is on the front"
    else:
        knee_unfrozen = min_accuracy is None and pick == "knee" and fr.knee_row["family"] == UNFROZEN
        row = None if knee_unfrozen else _pick_or_none(fr, pick, min_accuracy, free)
        if row is None:
            row = free.loc[pd.to_numeric(free["margin"]).idxmax()]
            what = (f"the knee is trial {fr.knee} (unfrozen); the best freezing policy" if knee_unfrozen
                    else "the best freezing policy")
        m = float(row["margin"])
        where = (f"{100 * abs(m):.2f} points {'below' if m < 0 else 'above'} it" if abs(m) >= 5e-5 else "on it")
        how = (f"{what} among the freezing policies, trial {row['trial_id']} ({row['family']}), is {where} at "
               f"{100 * float(row['compute_saved_frac']):.1f}% compute saved")
    return (f"no front policy beats training for fewer epochs ({how}); {shorter_instead(fr, row, budget)}, "
            "or export it anyway with --ignore-curve")


def _pick_or_none(fr: Front, pick: str, min_accuracy: float | None, among: pd.DataFrame) -> pd.Series | None:
    try:
        return pick_trial(fr, pick=pick, min_accuracy=min_accuracy, among=among)
    except UserError:  # nothing among them reaches --min-accuracy
        return None


def export_policy(
    exp_dir: str | Path,
    pick: str = "knee",
    min_accuracy: float | str | None = None,
    out: str | Path | None = None,
    include_stopped: bool = False,
    ignore_curve: bool = False,
) -> Path:
    """Write the chosen front policy to ``out`` (default ``EXP/policies/<pick>.json``); return its path.

    ``pick``: knee | max-accuracy | min-compute; ``min_accuracy`` (fraction, or percent if > 1)
    overrides it: the most compute-saving front policy with val_accuracy >= min_accuracy. The
    choice is made among the front policies above the shorter-training curve (``UserError`` with
    the shorter-training run to use instead when there is none), or among every front policy
    with ``ignore_curve``.
    """
    if pick not in PICKS:
        raise UserError(f"--pick {short(pick)}: allowed: {', '.join(PICKS)}")
    exp = load_experiment(exp_dir)
    fr = compute_front(exp, include_stopped=include_stopped)
    thr = parse_accuracy(min_accuracy) if min_accuracy is not None else None
    among = None
    if not ignore_curve:
        among = beats_curve(fr.front)
        if among.empty:
            raise UserError(below_curve_line(fr, pick, thr, exp.epoch_budget))
    try:
        row = pick_trial(fr, pick=pick, min_accuracy=thr, among=among)
    except UserError as exc:
        if among is None:
            raise
        raise UserError(f"{exc} {ABOVE_CURVE}; --ignore-curve looks at every front policy") from None
    picked_by = f"min-accuracy {thr * 100:g}%" if thr is not None else pick
    if among is not None:
        picked_by += f" ({ABOVE_CURVE})"
    if out is None:
        name = f"min-accuracy-{thr * 100:g}.json" if thr is not None else f"{pick}.json"
        out = exp.path / POLICIES_DIR / name
    return write_policy_file(build_policy(exp, row, picked_by), Path(out))


def export_front(exp_or_dir: Experiment | str | Path, out_dir: str | Path | None = None,
                 include_stopped: bool = False, fr: Front | None = None) -> list[Path]:
    """Write every front policy to ``out_dir`` (default ``EXP/policies``) as ``<trial_id>.json``."""
    exp = exp_or_dir if isinstance(exp_or_dir, Experiment) else load_experiment(exp_or_dir)
    fr = fr or compute_front(exp, include_stopped=include_stopped)
    out_dir = Path(out_dir) if out_dir is not None else exp.path / POLICIES_DIR
    paths = []
    for _, row in fr.front.iterrows():
        label = "front (knee)" if row["trial_id"] == fr.knee else "front"
        paths.append(write_policy_file(build_policy(exp, row, label), out_dir / policy_filename(row["trial_id"])))
    return paths


def _parser() -> argparse.ArgumentParser:
    p = ArgumentParser(
        prog="python -m analysis.export",
        description="Export a Pareto-front freeze policy of a finished search as a policy file "
        "(load it with layerout.policy.load_policy, or retrain with python -m layerout.train --policy).",
    )
    p.add_argument("experiment_dir", metavar="EXPERIMENT_DIR", help="the experiment directory tune_main.py printed")
    p.add_argument("--pick", choices=PICKS, default=None,
                   help="which front policy: the knee (default; the trial the report and pareto.csv call the "
                   "knee), the highest validation accuracy, or the most compute saved")
    p.add_argument("--min-accuracy", metavar="X",
                   help="instead of --pick: the most compute-saving front policy whose validation accuracy "
                   "is at least X. X is a fraction (0.95) or a percent (95 or 95%%): values above 1 are "
                   "read as percent")
    p.add_argument("-o", "--output", metavar="FILE",
                   help="where to write the policy (default: EXPERIMENT_DIR/policies/<pick>.json)")
    p.add_argument("--all-front", metavar="DIR",
                   help="write every front policy into DIR as <trial_id>.json (and nothing else, unless "
                   "-o, --pick or --min-accuracy asks for one policy too)")
    p.add_argument("--include-stopped", action="store_true",
                   help="let trials stopped early by the scheduler enter the front (default: full epoch budget only)")
    p.add_argument("--ignore-curve", action="store_true",
                   help="pick among every front policy; by default only among those that beat training the "
                   "unfrozen model for fewer epochs at the same compute (above the shorter-training curve). "
                   "With --pick knee it exports the knee even when no policy beats the curve")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    one = not args.all_front or args.output is not None or args.pick is not None or args.min_accuracy is not None
    if one:
        _export_one(args)
    if args.all_front:
        paths = export_front(args.experiment_dir, args.all_front, include_stopped=args.include_stopped)
        print(f"front policies: {len(paths)} written to {args.all_front}")
    return 0


def _export_one(args: argparse.Namespace) -> None:
    """The single policy that -o / --pick / --min-accuracy ask for, and how to train with it."""
    try:
        path = export_policy(args.experiment_dir, pick=args.pick or "knee", min_accuracy=args.min_accuracy,
                             out=args.output, include_stopped=args.include_stopped, ignore_curve=args.ignore_curve)
    except WriteError as exc:
        if args.output is not None:
            raise
        raise UserError(f"{exc}; write the policy elsewhere with -o FILE") from None
    doc = json.loads(Path(path).read_text())
    m, prov = doc.get("measured", {}), doc.get("provenance", {})

    def pct(x: Any) -> str:
        return "n/a" if x is None else f"{100 * x:.2f}%"

    print(f"policy: {path}")
    print(f"  trial {prov.get('trial_id')} ({prov.get('picked_by')}), {doc['schedule'].get('kind')}: "
          f"val acc {pct(m.get('val_accuracy'))}, compute saved {pct(m.get('compute_saved_frac'))}, "
          f"time saved {pct(m.get('time_saved_frac'))}, test acc {pct(m.get('test_accuracy'))}"
          + (f" (means over {m['confirmed_runs']} fresh seeds)" if m.get("confirmed_runs") else ""))
    print(f"  train with it (replays the trial's recipe): python -m layerout.train --policy {shlex.quote(str(path))} "
          f"--out runs/{_slug(str(prov.get('trial_id')))}")


def cli(argv: list[str] | None = None) -> None:
    """Entry point: bad input -> one line on stderr, exit status 2."""
    run_cli(main, argv)


if __name__ == "__main__":
    cli()
