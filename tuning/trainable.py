"""The function every Ray Tune trial runs: one LayerOut training run, reported every epoch.

``train_trial`` builds the trainer from the trial config (``search_spaces.trials``), reports the
metrics (``layerout.metrics``) once per epoch with a checkpoint, and resumes from Ray's
checkpoint when the trial is restarted (a worker died, or ``--resume`` after the driver was
killed). It lives in an importable module (not in ``tune_main``'s ``__main__``) so Ray pickles it
by reference. A mistake in the user's code or data (a ``UserError``) ends the trial once, without
Ray's retries (``tuning.usercode``).
"""
from __future__ import annotations

import json
import shutil
from typing import Any

import ray
import torch
from ray import cloudpickle, tune

from layerout import userland
from layerout.errors import UserError
from layerout.experiment import USER_ERROR
from layerout.metrics import METRICS
from layerout.schedules import schedule_from_dict
from layerout.trainer import TrainConfig, Trainer
from tuning import internals
from tuning.diskfull import NO_SPACE, DiskFull, is_no_space, no_space_file
from tuning.progress import NODE_ID
from tuning.repair import RAY_SEEN_MARKER, SCRATCH  # SCRATCH: the trainer's out_dir in the trial's folder



def _reportable(metrics: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in metrics.items():
        if isinstance(v, bool) or v is None or isinstance(v, (int, float, str)):
            out[k] = v
        elif hasattr(v, "item"):  # numpy / torch scalars
            try:
                out[k] = v.item()
            except (TypeError, ValueError):
                out[k] = str(v)
        else:
            out[k] = str(v)
    return out


def train_trial(config: dict[str, Any], opts: dict[str, Any] | None = None,
                objects: dict[str, Any] | None = None) -> None:
    """Ray Tune function trainable: one LayerOut training run, reported every epoch.

    ``opts["code_paths"]``: folders to import the user's modules from; ``objects``: name -> the
    user's model or data callables sent by value, pickled with cloudpickle (``tuning.usercode``)."""
    opts = opts or {}
    userland.add_code_paths(opts.get("code_paths") or [])
    try:
        for name, blob in (objects or {}).items():
            # pickled by the driver (tuning.search), loaded only now that the code paths are in place:
            # what the object refers to by module (its imports) must be importable from them
            try:
                userland.register_object(cloudpickle.loads(blob), name)
            except Exception as e:  # noqa: BLE001 - a module the object needs is missing here
                raise UserError(f"{name}: could not be loaded in the trial ({userland.one_line(e)}); the modules it "
                                "uses must be importable on the workers") from None
        _train(config, opts)
    except (UserError, OSError) as e:
        if is_no_space(e):  # not the user's mistake: a trial failure (Ray's), resumable once space is freed
            raise DiskFull(str(e) if isinstance(e, UserError) else
                           f"{no_space_file(e, str(internals.trial_folder()))}: cannot write ({NO_SPACE})") from None
        if isinstance(e, OSError):
            raise
        # the same on every retry: end the trial now, with the message (see tuning.usercode)
        tune.report({**{m: float("nan") for m in METRICS if m != "epoch"}, "epoch": 0, USER_ERROR: str(e)})


def _train(config: dict[str, Any], opts: dict[str, Any]) -> None:
    threads = opts.get("threads")
    if threads:
        torch.set_num_threads(max(1, int(threads)))
    overrides: dict[str, Any] = {}
    if opts.get("data_dir"):
        overrides["data_dir"] = opts["data_dir"]
    if "download" in opts:
        overrides["download"] = bool(opts["download"])
    if config["train"].get("device", "auto") == "auto":  # the GPU Ray assigned (CUDA_VISIBLE_DEVICES), else CPU
        overrides["device"] = "cuda" if (ray.get_gpu_ids() and torch.cuda.is_available()) else "cpu"

    # The trainer's own folder (checkpoint.pt, epochs.csv) is scratch space inside the trial's
    # folder: a killed attempt leaves it there, not in the system's temp folder, and the next
    # attempt of the trial (or --resume) starts by clearing it.
    out_dir = internals.trial_folder() / SCRATCH
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)

    def report(metrics: dict[str, Any], trainer: Trainer) -> None:
        m = _reportable(metrics)
        # What a policy file needs besides the experiment's units and the config's training
        # recipe: the schedule as it ran (drawn v, adaptive freeze epochs filled in) and the
        # steps per epoch it was bound to (FreezeOut's step-wise masks depend on it).
        m["policy"] = json.dumps(trainer.schedule.to_dict(), sort_keys=True)
        m["steps_per_epoch"] = int(trainer.steps_per_epoch)
        m["threads"] = int(trainer.cfg.threads)  # what its arithmetic depends on: a replay computes with the same
        m["time_clock"] = trainer.ledger.clock  # what time_saved_frac was measured on
        m["val_images"] = int(trainer.data.n_val)  # the resolution of val_accuracy: one image = 1 / val_images
        m[NODE_ID] = node_id  # which node ran it, for the driver's line when a node is lost
        # report() copies out_dir (checkpoint.pt of this epoch) to the trial's storage before
        # returning, so the trainer may overwrite it next epoch.
        tune.report(m, checkpoint=tune.Checkpoint.from_directory(str(out_dir)))

    node_id = ray.get_runtime_context().get_node_id()

    try:
        ckpt = tune.get_checkpoint()
        if ckpt is not None:
            with ckpt.as_directory() as d:
                shutil.copytree(d, out_dir, dirs_exist_ok=True)
            marker = out_dir / RAY_SEEN_MARKER  # left by tuning.repair
            seen = None
            if marker.is_file():
                seen = json.loads(marker.read_text()).get("epoch")
                marker.unlink()
            trainer = Trainer.resume(str(out_dir), callbacks=[report], verbose=False, **overrides)
            if isinstance(seen, int):  # epochs the checkpoint holds but Ray never recorded (tuning.repair)
                for m in trainer.history:
                    if int(m.get("epoch") or 0) > seen:
                        report(m, trainer)
        else:
            cfg = TrainConfig(**{**config["train"], **overrides})
            schedule = schedule_from_dict(config["schedule"])
            # quiet: the driver prints one line per finished trial (tuning.progress)
            trainer = Trainer(cfg, schedule, out_dir=str(out_dir), callbacks=[report], verbose=False)
        trainer.fit()
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)


def trial_dirname(trial: Any) -> str:
    """Short trial directory names: ``trial_<id>``."""
    return f"trial_{trial.trial_id}"
