"""One training run without Ray: ``python -m layerout.train --model M --dataset D ... --out DIR``.

Writes ``DIR/epochs.csv`` (one row per epoch), ``DIR/summary.json`` (final metrics, resolved
config and the run's policy, replayable with ``--policy``) and ``DIR/checkpoint.pt``;
``--resume DIR`` continues an interrupted run. ``--model`` and ``--dataset`` also take import
paths to your own code (``my_pkg.nets:build``, ``my_pkg.data:load``; looked up in the current
directory, then in a policy's ``code_paths``, then the installed packages) and
``imagefolder:PATH``; they are checked on one batch before training starts.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from layerout import userland
from layerout.checks import short
from layerout.choices import BN_CHOICES, BUILTIN_MODELS, DATASETS, FAST_PATHS, IMAGEFOLDER
from layerout.errors import ArgumentParser, UserError, cli_main
from layerout.schedules import SCHEDULES, Flag, Schedule, schedule_from_dict
from layerout.schedules.none import UNFROZEN



def parse_ints(text: str, flag: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UserError(f"{flag}: expected comma-separated integers like 150,225, got {short(text)}") from None


def build_parser() -> argparse.ArgumentParser:
    ap = ArgumentParser(
        prog="python -m layerout.train",
        description="Train one model under one freezing schedule (or a policy file); no Ray needed.")
    ap.add_argument("--model", help=f"built-in model: {', '.join(BUILTIN_MODELS)}, or your own: my_pkg.nets:build "
                                    "(default: the dataset's usual one)")
    ap.add_argument("--dataset", help=f"built-in: {', '.join(DATASETS)}; imagefolder:PATH, "
                                      "or your own data function: my_pkg.data:load")
    src = ap.add_argument_group("what to freeze (pick --policy or --schedule)")
    src.add_argument("--policy", help="a policy JSON file (exported by analysis.export or a run's summary.json)")
    src.add_argument("--schedule", choices=sorted(SCHEDULES), default=None,
                     help="schedule family (default: the family whose flags are given, else none = the "
                          "unfrozen baseline)")
    add_schedule_flags(ap)
    tr = ap.add_argument_group("training recipe")
    tr.add_argument("--epochs", type=int, default=None, help="(default 10)")
    tr.add_argument("--batch-size", type=int, default=None, help="(default 64)")
    tr.add_argument("--lr", type=float, default=None, help="initial learning rate (default 0.05)")
    tr.add_argument("--momentum", type=float, default=None)
    tr.add_argument("--weight-decay", type=float, default=None)
    tr.add_argument("--lr-milestones", default=None, help="epochs where lr is multiplied by --lr-gamma, e.g. 150,225")
    tr.add_argument("--lr-gamma", type=float, default=None)
    tr.add_argument("--lr-warmup", default=None, metavar="EPOCHS:LR",
                    help="warm start, e.g. 4:0.01 (the paper's ResNet-110 recipe)")
    tr.add_argument("--bn-frozen", choices=BN_CHOICES, default=None,
                    help="frozen units' BatchNorm: keep updating statistics (train, LayerOut), eval (FreezeOut's "
                         "authors), or auto (default): the schedule family's choice (eval for freezeout, else train)")
    tr.add_argument("--no-augment", action="store_true", help="turn off crop/flip augmentation")
    tr.add_argument("--random-erasing", action="store_true")
    tr.add_argument("--val-frac", type=float, default=None, help="validation share of the training set (0.1)")
    tr.add_argument("--seed", type=int, default=None)
    tr.add_argument("--device", default=None, help="auto (default), cpu, cuda, cuda:N")
    tr.add_argument("--fast-path", choices=FAST_PATHS, default=None,
                    help="replay one captured CUDA graph per freezing mask: auto (default) on CUDA with SGD, "
                         "eager elsewhere; cudagraph says why when it cannot; off: always eager")
    tr.add_argument("--data-dir", default=None, help="dataset folder (default ~/.cache/layerout-tune/data)")
    tr.add_argument("--no-download", action="store_true", help="never download; read --data-dir only")
    tr.add_argument("--test-every-epoch", action="store_true", help="also report test accuracy every epoch")
    tr.add_argument("--max-train-batches", type=int, default=None, help="cap steps per epoch (smoke tests)")
    tr.add_argument("--image-size", type=int, default=None, help="imagefolder: resize and crop images to this (64)")
    tr.add_argument("--data-workers", type=int, default=None,
                    help="DataLoader worker processes for Datasets and image folders (default 2)")
    tr.add_argument("--threads", type=int, default=None,
                    help="intra-op CPU threads to compute with (default: a policy's recorded count, so the "
                         "replay reproduces its run exactly; else as many as torch uses)")
    tr.add_argument("--deterministic", action="store_true",
                    help="deterministic kernels on CUDA (cuDNN), so that a replay on the same kind of GPU "
                         "reproduces the run exactly; slower")
    ap.add_argument("--out", help="output folder for epochs.csv, summary.json, checkpoint.pt")
    ap.add_argument("--resume", metavar="DIR", help="continue the run in DIR")
    ap.add_argument("--quiet", action="store_true", help="no per-epoch lines")
    return ap


# ------------------------------------------------------------------------------ schedule flags
# The flags come from the schedule classes (``Schedule.flags``): a new family brings its own.
def family_flags() -> dict[str, tuple[Flag, ...]]:
    return {kind: cls.flags for kind, cls in SCHEDULES.items()}


def add_schedule_flags(ap: argparse.ArgumentParser) -> None:
    """One argument group per family; a flag several families share is added once, with the first."""
    owners: dict[str, list[str]] = {}
    for kind, flags in family_flags().items():
        for f in flags:
            owners.setdefault(f.dest, []).append(kind)
    added: set[str] = set()
    for kind, flags in family_flags().items():
        if not flags:
            continue
        group = ap.add_argument_group(f"{kind} schedule")
        for f in flags:
            if f.dest in added:
                continue
            added.add(f.dest)
            shared = owners[f.dest]
            text = f.help + (f" ({', '.join(shared)})" if len(shared) > 1 else "")
            if f.switch:  # --name / --no-name; not given: the schedule's default
                group.add_argument(f.option, dest=f.dest, action=argparse.BooleanOptionalAction, default=None,
                                   help=text)
            else:
                group.add_argument(f.option, dest=f.dest, type=f.type, choices=f.choices, default=None,
                                   metavar=f.metavar, help=text)


def _given(args: argparse.Namespace) -> set[str]:
    """The schedule flags (dests) the user typed (every flag left out is None)."""
    dests = {f.dest for flags in family_flags().values() for f in flags}
    return {d for d in dests if getattr(args, d, None) is not None}


def _option(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def schedule_dict_from_args(args: argparse.Namespace, num_units: int) -> dict[str, Any]:
    """The schedule dict the flags describe; flags of another family are errors. Without
    ``--schedule`` the family is the one whose flags were given (none when no flag was)."""
    families = family_flags()
    given = _given(args)
    kind = args.schedule
    if kind is None:
        fits = [k for k, flags in families.items() if flags and given <= {f.dest for f in flags}]
        if not given:
            kind = UNFROZEN
        elif len(fits) == 1:
            kind = fits[0]
        elif fits:
            raise UserError(f"{', '.join(_option(d) for d in sorted(given))}: used by the "
                            f"{' and '.join(fits)} schedules; pick one with --schedule")
        else:
            kind = UNFROZEN  # the stray flags are reported below
    allowed = {f.dest for f in families[kind]}
    stray = sorted(given - allowed)
    if stray:
        raise UserError(f"{', '.join(_option(d) for d in stray)}: not used by the {short(kind)} schedule (its flags: "
                        f"{', '.join(_option(d) for d in sorted(allowed)) or 'none'})")
    return SCHEDULES[kind].dict_from_flags({d: getattr(args, d) for d in sorted(given)}, num_units)


# ------------------------------------------------------------------------------ main
# TrainConfig field -> the flag that sets it to a value, and -> (the value, the switch that sets
# it): the command line's map of the recipe, also used to write a trial's recipe back as a
# command (analysis.export). --lr-warmup EPOCHS:LR sets lr_warmup_epochs and lr_warmup_value.
VALUE_FLAGS = {"epochs": "--epochs", "batch_size": "--batch-size", "lr": "--lr", "momentum": "--momentum",
               "weight_decay": "--weight-decay", "lr_milestones": "--lr-milestones", "lr_gamma": "--lr-gamma",
               "bn_frozen": "--bn-frozen", "val_frac": "--val-frac", "seed": "--seed", "device": "--device",
               "fast_path": "--fast-path", "data_dir": "--data-dir", "max_train_batches": "--max-train-batches",
               "image_size": "--image-size", "data_workers": "--data-workers", "threads": "--threads"}
SWITCHES = {"augment": (False, "--no-augment"), "random_erasing": (True, "--random-erasing"),
            "download": (False, "--no-download"), "test_every_epoch": (True, "--test-every-epoch"),
            "deterministic": (True, "--deterministic")}


def _dest(flag: str) -> str:
    return flag[2:].replace("-", "_")


def _config_dict(args: argparse.Namespace, model: str, dataset: str) -> dict[str, Any]:
    cfg: dict[str, Any] = {"model": model, "dataset": dataset}
    for key, flag in VALUE_FLAGS.items():
        v = getattr(args, _dest(flag))
        if key == "lr_milestones":
            if v:
                cfg[key] = parse_ints(v, flag)
        elif v is not None:
            cfg[key] = v
    if args.lr_warmup:
        try:
            e, v = args.lr_warmup.split(":")
            cfg["lr_warmup_epochs"], cfg["lr_warmup_value"] = int(e), float(v)
        except ValueError:
            raise UserError(f"--lr-warmup: expected EPOCHS:LR like 4:0.01, got {short(args.lr_warmup)}") from None
    for key, (value, flag) in SWITCHES.items():
        if getattr(args, _dest(flag)):
            cfg[key] = value
    return cfg


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # torch only now that a run starts: --help and argument errors answer at once
    from layerout.data import data_dir_note
    from layerout.models import MODELS
    from layerout.trainer import TrainConfig, Trainer

    userland.add_code_paths([os.getcwd()])  # your model's and data's modules: from here first
    if args.resume:
        overrides = {"device": args.device, "data_dir": args.data_dir, "fast_path": args.fast_path,
                     "threads": args.threads}
        if args.no_download:
            overrides["download"] = False
        trainer = Trainer.resume(args.resume, verbose=not args.quiet, **overrides)
        print(f"resuming {args.resume} after epoch {trainer.epoch}/{trainer.cfg.epochs}", flush=True)
        final = trainer.fit()
        _print_summary(final, Path(args.resume))
        return 0
    if not args.out:
        raise UserError("--out: required (the folder for epochs.csv, summary.json, checkpoint.pt), or use --resume DIR")

    if (Path(args.out) / "checkpoint.pt").exists():  # never overwrite a stored run
        raise UserError(f"--out: {args.out} already holds a run (checkpoint.pt); continue it with "
                        f"--resume {args.out} or choose another folder")
    policy = None
    if args.policy:
        from layerout.policy import load_policy

        if args.schedule or args.freeze_prob:
            raise UserError("--policy: give either a policy file or --schedule/--freeze-prob, not both")
        policy = load_policy(args.policy)
        paths = policy.provenance.get("code_paths")
        if isinstance(paths, list):  # where the search found the code: after the current directory
            userland.add_code_paths([os.getcwd(), *[p for p in paths if isinstance(p, str)]])
        if args.model and args.model != policy.model:
            raise UserError(f"{args.policy}: model: the policy is for {short(policy.model)}, not --model {short(args.model)} "
                            f"(its units: {', '.join(policy.units)})")
    prov_dataset = policy.provenance.get("dataset") if policy is not None else None
    dataset = args.dataset or (prov_dataset if isinstance(prov_dataset, str) and prov_dataset else None) or (
        MODELS[policy.model].default_dataset if policy and policy.model in MODELS else None)
    model = args.model or (policy.model if policy else getattr(DATASETS.get(dataset or ""), "default_model", None))
    if not dataset:
        raise UserError(f"--dataset: required; allowed: {', '.join(DATASETS)}, "
                        f"{IMAGEFOLDER}PATH, or an import path to your own data function like my_pkg.data:load")
    if dataset not in DATASETS and not dataset.startswith(IMAGEFOLDER) and not userland.is_import_path(dataset):
        where = "--dataset" if args.dataset else f"{args.policy}: provenance.dataset"
        raise UserError(f"{where}: unknown dataset {short(dataset)}; allowed: {', '.join(DATASETS)}, "
                        f"{IMAGEFOLDER}PATH, or an import path to your own data function like my_pkg.data:load")
    if not model:
        raise UserError(f"--model: required with --dataset {short(dataset)}: a built-in model ({', '.join(MODELS)}) "
                        "or an import path to your own like my_pkg.nets:build")
    if model not in MODELS and not userland.is_import_path(model):
        raise UserError(f"--model: unknown model {short(model)}; allowed: {', '.join(MODELS)}, or an import path to "
                        "your own like my_pkg.nets:build")
    if dataset.startswith(IMAGEFOLDER) and args.dataset:  # absolute, as it is stored in the run's config
        dataset = IMAGEFOLDER + str(Path(os.path.expanduser(dataset[len(IMAGEFOLDER):])).resolve())
    cfg_dict = _config_dict(args, model, dataset)
    recorded_threads = None
    if policy is not None:  # replay the run the policy came from; flags given here win
        recipe = _policy_recipe(policy, model, dataset)
        recorded_threads = recipe.get("threads")
        cfg_dict = {**recipe, **cfg_dict}
    cfg = TrainConfig.from_dict(cfg_dict)
    if cfg.threads is not None:
        from layerout.arithmetic import threads_note

        note = threads_note(cfg.threads, recorded_threads, args.policy)
        if note:
            print(note, flush=True)
    note = data_dir_note(dataset, args.data_dir)
    if note:
        print(note, file=sys.stderr, flush=True)

    from layerout.preflight import check_model_and_data

    checked = check_model_and_data(model, dataset, cfg.units, val_frac=cfg.val_frac, seed=cfg.seed,
                                   image_size=cfg.image_size)
    names = [u.name for u in checked.units]
    for note in checked.notes:
        print(f"note: {note}", flush=True)
    if policy is not None:
        policy.check_units(names, source=args.policy)
        try:  # checks that need this run's length (warm-up, start epoch): name the policy file
            policy.build_schedule(epochs=cfg.epochs)
        except UserError as e:
            raise UserError(f"{args.policy}: {e}") from None
        schedule: Schedule = schedule_from_dict(policy.schedule)
    else:
        schedule = schedule_from_dict(schedule_dict_from_args(args, len(names)))
    trainer = Trainer(cfg, schedule, out_dir=args.out, verbose=not args.quiet)
    final = trainer.fit()
    _print_summary(final, Path(args.out))
    return 0


def _policy_recipe(policy: Any, model: str, dataset: str) -> dict[str, Any]:
    """TrainConfig fields of the run a policy came from: ``epochs``, ``batch_size``, ``seed`` from
    its provenance (any policy), and the whole recipe ``provenance["train"]`` (policies exported
    from a search) when it is for this model and dataset; never ``LOCAL_FIELDS`` (device, ...)."""
    from dataclasses import fields

    from layerout.config import LOCAL_FIELDS, TrainConfig

    prov = policy.provenance
    known = {f.name for f in fields(TrainConfig)} - {"model", "dataset", *LOCAL_FIELDS}
    out: dict[str, Any] = {}
    train = prov.get("train")
    if isinstance(train, dict) and train.get("model", model) == model and train.get("dataset", dataset) == dataset:
        out.update({k: v for k, v in train.items() if k in known})
    for k in ("epochs", "batch_size", "seed"):
        v = prov.get(k)
        if k not in out and isinstance(v, int) and not isinstance(v, bool):
            out[k] = v
    return out


def _print_summary(final: dict[str, Any], out: Path) -> None:
    keys = ("val_accuracy", "test_accuracy", "params_frozen_frac", "compute_saved_frac", "time_saved_frac",
            "compute_spent_gflop", "train_time_s")
    print("summary: " + "  ".join(f"{k} {final[k]:.4f}" if isinstance(final.get(k), float) else f"{k} {final.get(k)}"
                                  for k in keys))
    print(f"wrote {out / 'epochs.csv'}, {out / 'summary.json'}, {out / 'checkpoint.pt'}")
    print(f"replay this run's policy: python -m layerout.train --policy {out / 'summary.json'} --out NEW_DIR")

if __name__ == "__main__":
    cli_main(main, sys.argv[1:])
