"""The metrics every run reports, by name: the contract between the trainer (which computes them),
the search (which reports them to Ray Tune and ranks on them) and the analysis (which reads them).
docs/METRICS.md defines each one; this module is the only list of names in the code.
"""
from __future__ import annotations

# Reported once per epoch, in this column order (epochs.csv, Ray's result.json, trials.csv).
METRICS: tuple[str, ...] = (
    "epoch",                # epochs finished
    "train_loss",           # mean training loss of the epoch
    "val_loss",             # on the validation split (held out of the training set by the seed)
    "val_accuracy",         # the search optimizes on it
    "test_accuracy",        # the dataset's test split; last epoch only (or every epoch if asked); never selects
    "params_frozen_frac",   # LayerOut's figure: mean over epochs of frozen parameters / all parameters
    "compute_saved_frac",   # 1 - training FLOPs spent / FLOPs of the unfrozen model on the same steps
    "planned_compute_saved_frac",  # compute_saved_frac at the end of the budget: so far + the schedule's plan
    "compute_spent_gflop",  # cumulative training GFLOPs
    "time_saved_frac",      # 1 - training time / (steps x the unfrozen step time of the same run), on time_clock
    "train_time_s",         # training wall-clock so far
)
# Per-epoch extras: the global lr, the mask ("0110", 1 = frozen) and whether the data was synthetic.
EXTRA_METRICS: tuple[str, ...] = ("lr", "frozen_units", "synthetic")
# Per trial, reported by the search (trials.csv only): what replaying its policy needs (its steps
# per epoch and the intra-op threads it computed with), the validation split's size (one image is
# 1 / val_images of accuracy: the resolution of val_accuracy) and the clock time_saved_frac was
# measured on (layerout.compute.CLOCKS).
TRIAL_METRICS: tuple[str, ...] = ("steps_per_epoch", "threads", "val_images", "time_clock")

# Reported, never used to select: the test split may not be an objective (a space, experiment.json)
# nor rank a trial anywhere.
REPORT_ONLY: tuple[str, ...] = ("test_accuracy",)
# What a search may optimize.
OBJECTIVE_METRICS: tuple[str, ...] = tuple(m for m in METRICS if m not in REPORT_ONLY)
# The search's two objectives. test_accuracy is never one.
DEFAULT_OBJECTIVES: tuple[tuple[str, str], ...] = (("val_accuracy", "max"), ("compute_saved_frac", "max"))
OBJECTIVE_MODES = ("max", "min")
# What a confirmation run on a fresh seed records (confirm.csv), and of those, the ones whose means
# over the fresh seeds stand in for a confirmed trial's single run (analysis.front).
CONFIRMED_METRICS: tuple[str, ...] = ("val_accuracy", "test_accuracy", "compute_saved_frac", "time_saved_frac")
CONFIRM_RUN_METRICS: tuple[str, ...] = (*CONFIRMED_METRICS, "train_time_s")
# What a policy file records of the run it came from (analysis.export: ``measured``), in this order.
POLICY_MEASURED: tuple[str, ...] = ("val_accuracy", "test_accuracy", "compute_saved_frac", "time_saved_frac",
                                    "params_frozen_frac", "compute_spent_gflop", "train_time_s", "train_loss",
                                    "val_loss")
