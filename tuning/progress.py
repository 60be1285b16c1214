"""The driver's console output during a search: one line per trial that ends (finished, stopped
early or failed), one per proposed configuration that repeats a trial (not trained again), and a
status line when nothing ended for a while, instead of Ray's tables."""
from __future__ import annotations

import math
import sys
import time
from typing import Any

from ray.tune import Callback

from layerout.experiment import USER_ERROR


def _pct(x: Any, digits: int = 1) -> str:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return "   -  "
    return "   -  " if math.isnan(v) else f"{100 * v:5.{digits}f}%"


def repeat_line(number: int, first: str, what: str, told: bool) -> str:
    """The line for an Optuna proposal that repeats the configuration trial ``first`` trains."""
    reuse = "its result is reused" if told else f"it gets trial {first}'s result when that ends"
    return (f"[repeat] Optuna trial {number} proposed {what}, the configuration of trial {first}: "
            f"not trained again, {reuse}; asking for another point")


def exhausted_line(streak: int, distinct: int) -> str:
    """The line for a search that ends early: the samplers found no new configuration."""
    return (f"[repeat] {streak} proposals in a row repeated configurations already run: the search ends "
            f"after {distinct} distinct configurations (the space has no other one the samplers find)")


class TrialProgress(Callback):
    """One console line per trial that ends; a status line after ``quiet_s`` without one.
    ``scheduler``: the early-stopping scheduler's name, for trials it stopped."""

    def __init__(self, num_samples: int, epochs: int, quiet_s: float = 120.0, scheduler: str = "the scheduler"):
        self.num_samples = int(num_samples)
        self.epochs = int(epochs)
        self.scheduler = scheduler
        self.quiet_s = float(quiet_s)
        self._last_print = time.time()
        self._printed: set[str] = set()

    def __setstate__(self, state: dict) -> None:  # restored by --resume: a new clock
        self.__dict__.update(state)
        self.__dict__.setdefault("scheduler", "the scheduler")
        self._last_print = time.time()

    def _print(self, line: str) -> None:
        print(line, file=sys.stdout, flush=True)
        self._last_print = time.time()

    def _ended(self, trials: list, trial: Any, error: bool) -> None:
        if trial.trial_id in self._printed:
            return
        self._printed.add(trial.trial_id)
        done = len({t.trial_id for t in trials if t.status in ("TERMINATED", "ERROR")} | {trial.trial_id})
        width = len(str(self.num_samples))
        cfg = trial.config or {}
        res = trial.last_result or {}
        epoch = res.get("epoch")
        what = f"{cfg.get('family', '?')}" + (f" ({cfg['paper_config']})" if cfg.get("paper_config") else "")
        head = f"[{done:>{width}}/{self.num_samples}] trial {trial.trial_id}  {what:<26}"
        if error:
            self._print(f"{head} FAILED after {epoch or 0}/{self.epochs} epochs (see {trial.path}/error.txt)")
            return
        if res.get(USER_ERROR):  # ended on a mistake in the user's code or data (not retried)
            self._print(f"{head} FAILED: {res[USER_ERROR]}")
            return
        if epoch is None:
            self._print(f"{head} ended without reporting")
            return
        stopped = int(epoch) < self.epochs
        ran = f"{int(epoch)}/{self.epochs} epochs" + (f" ({self.scheduler} stopped it)" if stopped else "")
        secs = res.get("time_total_s")
        self._print(f"{head} {ran:<32} val acc {_pct(res.get('val_accuracy'), 2)}  "
                    f"compute saved {_pct(res.get('compute_saved_frac'))}  "
                    f"time saved {_pct(res.get('time_saved_frac'))}"
                    + (f"  {secs:.0f} s" if isinstance(secs, (int, float)) else ""))

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._ended(trials, trial, error=False)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._ended(trials, trial, error=True)

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        if time.time() - self._last_print < self.quiet_s:
            return
        running = [t for t in trials if t.status == "RUNNING"]
        done = sum(1 for t in trials if t.status in ("TERMINATED", "ERROR"))
        if not running:
            self._last_print = time.time()
            return
        epochs = sorted(int((t.last_result or {}).get("epoch") or 0) for t in running)
        self._print(f"... {done}/{self.num_samples} trials finished, {len(running)} running "
                    f"(epochs done: {', '.join(map(str, epochs[:8]))}{' ...' if len(epochs) > 8 else ''})")
