"""One training run without Ray: ``python -m layerout.train --model M --dataset D ... --out DIR``.

Writes ``DIR/epochs.csv`` (one row per epoch), ``DIR/summary.json`` (final metrics, resolved
config and the run's policy, replayable with ``--policy``) and ``DIR/checkpoint.pt``;
``--resume DIR`` continues an interrupted run.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from layerout.errors import ArgumentParser, UserError, cli_main
from layerout.fastpath import FAST_PATHS
from layerout.models import MODELS
from layerout.schedules import SCHEDULES, V_MODES, Schedule, paper_vectors, schedule_from_dict

DEFAULT_MODEL_FOR = {"digits": "digits_cnn", "mnist": "mnist_shallow", "cifar10": "resnet20",
                     "cifar100": "resnet20", "synthetic": "resnet20"}


def parse_floats(text: str, flag: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UserError(f"{flag}: expected comma-separated numbers like 0.9,0.5,0.1, got {text!r}") from None


def parse_ints(text: str, flag: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UserError(f"{flag}: expected comma-separated integers like 150,225, got {text!r}") from None


def build_parser() -> argparse.ArgumentParser:
    ap = ArgumentParser(
        prog="python -m layerout.train",
        description="Train one model under one freezing schedule (or a policy file); no Ray needed.")
    ap.add_argument("--model", help=f"built-in model: {', '.join(MODELS)} (default: the dataset's usual one)")
    ap.add_argument("--dataset", help="digits (bundled), mnist, cifar10, cifar100, synthetic")
    src = ap.add_argument_group("what to freeze (pick --policy or --schedule)")
    src.add_argument("--policy", help="a policy JSON file (exported by analysis.export or a run's summary.json)")
    src.add_argument("--schedule", choices=sorted(SCHEDULES), default=None,
                     help="schedule family (default: none = the unfrozen baseline)")
    lo = ap.add_argument_group("layerout schedule")
    lo.add_argument("--freeze-prob", help="freeze probability per unit, comma-separated, or efreeze/dfreeze")
    lo.add_argument("--v-mode", choices=V_MODES, default=None,
                    help="manual (default with --freeze-prob), random_epoch (paper's random v), random_once")
    lo.add_argument("--keep-last-trainable", action="store_true", help="never freeze the classifier unit")
    ap.add_argument("--warmup-epochs", type=int, default=None,
                    help="epochs before freezing starts (layerout, freezeout)")
    fo = ap.add_argument_group("freezeout schedule")
    fo.add_argument("--t0", type=float, default=None, help="first unit's freeze fraction before scaling (0.8)")
    fo.add_argument("--scale", choices=("linear", "squared", "cubic"), default=None)
    fo.add_argument("--scale-lr", action="store_true", help="lr_i0 = lr / t_i")
    pf = ap.add_argument_group("prefix schedule")
    pf.add_argument("--k", type=int, default=None, help="number of leading units frozen")
    pf.add_argument("--start-epoch", type=int, default=None, help="epoch the prefix freezes")
    ad = ap.add_argument_group("adaptive schedule")
    ad.add_argument("--check-every", type=int, default=None, help="epochs between checks")
    ad.add_argument("--threshold-mode", choices=("percentile", "absolute"), default=None)
    ad.add_argument("--threshold", type=float, default=None, help="percentile (0-100) or absolute relative change")
    ad.add_argument("--min-trainable-units", type=int, default=None)
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
    tr.add_argument("--bn-frozen", choices=("train", "eval"), default=None,
                    help="frozen units' BatchNorm: keep updating statistics (train, paper) or eval (FreezeOut)")
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
    ap.add_argument("--out", help="output folder for epochs.csv, summary.json, checkpoint.pt")
    ap.add_argument("--resume", metavar="DIR", help="continue the run in DIR")
    ap.add_argument("--quiet", action="store_true", help="no per-epoch lines")
    return ap


# ------------------------------------------------------------------------------ schedule flags
# Every schedule flag is read here and only here: one place that maps flags to a schedule dict.
FAMILY_FLAGS = {
    "layerout": ("freeze_prob", "v_mode", "keep_last_trainable", "warmup_epochs"),
    "freezeout": ("t0", "scale", "scale_lr", "warmup_epochs"),
    "prefix": ("k", "start_epoch"),
    "adaptive": ("check_every", "threshold_mode", "threshold", "min_trainable_units"),
}


def _flag_given(args: argparse.Namespace, name: str) -> bool:
    v = getattr(args, name)
    return v not in (None, False)


def schedule_dict_from_args(args: argparse.Namespace, num_units: int) -> dict[str, Any]:
    """The schedule dict the flags describe (DESIGN.md families); flags of another family are errors."""
    kind = args.schedule or ("layerout" if args.freeze_prob or args.v_mode else "none")
    allowed = set(FAMILY_FLAGS.get(kind, ()))
    stray = [n for fam in FAMILY_FLAGS.values() for n in fam if n not in allowed and _flag_given(args, n)]
    if stray:
        flags = ", ".join(sorted({"--" + n.replace("_", "-") for n in stray}))
        raise UserError(f"{flags}: not used by the {kind!r} schedule (its flags: "
                        f"{', '.join('--' + n.replace('_', '-') for n in sorted(allowed)) or 'none'})")
    d: dict[str, Any] = {"kind": kind}
    if kind == "layerout":
        mode = args.v_mode or ("manual" if args.freeze_prob else "random_epoch")
        d["v_mode"] = mode
        if args.freeze_prob in ("efreeze", "dfreeze"):
            d["v"] = paper_vectors(num_units)[args.freeze_prob]
        elif args.freeze_prob:
            d["v"] = parse_floats(args.freeze_prob, "--freeze-prob")
        elif mode == "manual":
            raise UserError(f"--freeze-prob: a manual layerout schedule needs {num_units} probabilities "
                            f"(one per unit), or efreeze/dfreeze")
        if "v" in d and len(d["v"]) != num_units:
            raise UserError(f"--freeze-prob: {len(d['v'])} values given but the model has {num_units} units")
        d["warmup_epochs"] = args.warmup_epochs or 0
        d["keep_last_trainable"] = bool(args.keep_last_trainable)
    elif kind == "freezeout":
        d.update(t0=0.8 if args.t0 is None else args.t0, scale=args.scale or "cubic", scale_lr=bool(args.scale_lr),
                 warmup_epochs=args.warmup_epochs or 0)
    elif kind == "prefix":
        d.update(k=1 if args.k is None else args.k, start_epoch=args.start_epoch or 0)
    elif kind == "adaptive":
        d.update(check_every=args.check_every or 1, threshold_mode=args.threshold_mode or "percentile",
                 threshold=50.0 if args.threshold is None else args.threshold,
                 min_trainable_units=args.min_trainable_units or 1)
    return d


# ------------------------------------------------------------------------------ main
def _config_dict(args: argparse.Namespace, model: str, dataset: str) -> dict[str, Any]:
    cfg: dict[str, Any] = {"model": model, "dataset": dataset}
    for flag, key in (("epochs", "epochs"), ("batch_size", "batch_size"), ("lr", "lr"), ("momentum", "momentum"),
                      ("weight_decay", "weight_decay"), ("lr_gamma", "lr_gamma"), ("bn_frozen", "bn_frozen"),
                      ("val_frac", "val_frac"), ("seed", "seed"), ("device", "device"), ("fast_path", "fast_path"),
                      ("data_dir", "data_dir"), ("max_train_batches", "max_train_batches")):
        v = getattr(args, flag)
        if v is not None:
            cfg[key] = v
    if args.lr_milestones:
        cfg["lr_milestones"] = parse_ints(args.lr_milestones, "--lr-milestones")
    if args.lr_warmup:
        try:
            e, v = args.lr_warmup.split(":")
            cfg["lr_warmup_epochs"], cfg["lr_warmup_value"] = int(e), float(v)
        except ValueError:
            raise UserError(f"--lr-warmup: expected EPOCHS:LR like 4:0.01, got {args.lr_warmup!r}") from None
    if args.no_augment:
        cfg["augment"] = False
    if args.random_erasing:
        cfg["random_erasing"] = True
    if args.no_download:
        cfg["download"] = False
    if args.test_every_epoch:
        cfg["test_every_epoch"] = True
    return cfg


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from layerout.trainer import TrainConfig, Trainer

    if args.resume:
        overrides = {"device": args.device, "data_dir": args.data_dir, "fast_path": args.fast_path}
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
        if args.model and args.model != policy.model:
            raise UserError(f"{args.policy}: model: the policy is for {policy.model!r}, not --model {args.model!r} "
                            f"(its units: {', '.join(policy.units)})")
    prov_dataset = policy.provenance.get("dataset") if policy is not None else None
    dataset = args.dataset or (prov_dataset if isinstance(prov_dataset, str) and prov_dataset else None) or (
        MODELS[policy.model].default_dataset if policy and policy.model in MODELS else None)
    model = args.model or (policy.model if policy else DEFAULT_MODEL_FOR.get(dataset or ""))
    if not dataset:
        raise UserError("--dataset: required; allowed: digits, mnist, cifar10, cifar100, synthetic")
    if model not in MODELS:
        raise UserError(f"--model: unknown model {model!r}; allowed: {', '.join(MODELS)}")
    cfg_dict = _config_dict(args, model, dataset)
    if policy is not None:  # replay the run the policy came from; flags given here win
        cfg_dict = {**_policy_recipe(policy, model, dataset), **cfg_dict}
    cfg = TrainConfig.from_dict(cfg_dict)

    from layerout.models import build_model, model_units

    names = [u.name for u in model_units(build_model(model, in_channels=MODELS[model].in_channels))]
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

    from layerout.trainer import LOCAL_FIELDS, TrainConfig

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
