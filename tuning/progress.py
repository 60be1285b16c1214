"""The driver's console output during a search: one line per trial that ends (finished, stopped
early or failed), one per proposed configuration that repeats a trial (not trained again), one line
when a node (or a trial's worker process) is lost (``tuning.nodes``), and the search's status every few seconds: a
progress bar on a terminal, a status line in a log file (``--progress-interval``), instead of
Ray's tables and tracebacks. The counting and the estimate of the time left are Ray-free
(``layerout.progress.JobProgress``); ``TrialProgress`` feeds them Ray Tune's trial events.

``ray_log_to(path)`` sends Ray's own warnings and errors of the search (tracebacks of failed trial
tasks included) to a log file in the experiment directory while it runs; the console keeps one
line per event (``TrialProgress``).
"""
from __future__ import annotations

import contextlib
import logging
import re
import time
from pathlib import Path
from typing import Any, Callable, Iterator

from ray.exceptions import RayTaskError
from ray.tune import Callback

from layerout.checks import cut
from layerout.experiment import USER_ERROR
from layerout.formatting import pct
from layerout.progress import JobProgress, StatusDisplay, format_seconds, say
from search_spaces.trials import config_epochs
from tuning import internals
# NODE_ID and RAY_LOG are also this module's names (the trainable and the search import them from here)
from tuning.nodes import (DEAD_NODES, LOST_WORKER, NODE_ID, RAY_LOG, RAYLET_DEATHS, NodeWatch,  # noqa: F401
                          log_hint)
from tuning.diskfull import is_no_space

# the cluster's messages about a node's death: one console line from TrialProgress says it all
_RAYLET_DIED = "Raylet is terminated"
_NODE_MARKED_DEAD = re.compile(r"node id: ([0-9a-f]+)\b.*has been marked dead", re.S)


def _pct(x: Any, digits: int = 1) -> str:
    return pct(x, digits, missing="-", width=5)


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
    """One console line per trial that ends; one per node whose trials lost their workers (with
    their ids); the search's status every ``interval`` seconds (None: a few on a terminal, a
    minute in a log file; 0: never), from ``layerout.progress``. ``scheduler``: the early-stopping
    scheduler's name, for trials it stopped. ``repeats``: what tells the number of proposals not
    trained (the searcher's count; set by ``configure``, not pickled)."""

    def __init__(self, num_samples: int, epochs: int, scheduler: str = "the scheduler",
                 interval: float | None = None) -> None:
        self.num_samples = int(num_samples)
        self.epochs = int(epochs)
        self.scheduler = scheduler
        self.interval = interval
        self._printed: set[str] = set()
        self._repeats: Callable[[], int] | None = None
        self._shown: StatusDisplay | None = None
        self._watch: NodeWatch | None = None
        self.estimate_once = False  # a huge search: one line with what it needs once an epoch was timed

    def __getstate__(self) -> dict:  # pickled with the Tuner: the console's state stays here
        state = dict(self.__dict__)
        for key in ("_shown", "_repeats", "_watch"):
            state.pop(key, None)
        return state

    def __setstate__(self, state: dict) -> None:  # restored by --resume: a new clock and console
        self.__dict__.update(state)
        self.__dict__.setdefault("scheduler", "the scheduler")
        self.__dict__.setdefault("interval", None)
        for key in ("quiet_s", "_last_print", "_lost", "_alive", "_reported", "_polled"):  # older versions' state
            self.__dict__.pop(key, None)
        self._repeats = None
        self._shown = None
        self._watch = None

    def ended_before(self, trial_ids: set[str]) -> None:
        """Trials that ended before a resumed search started (their line was printed then): a
        second end, when Ray's saved state had them still running, prints no line again."""
        self._printed |= set(trial_ids)

    def configure(self, interval: float | None = None, repeats: Callable[[], int] | None = None) -> None:
        """Set the status interval (None keeps it) and what counts the repeated proposals."""
        if interval is not None:
            self.interval = interval
        self._repeats = repeats

    @property
    def display(self) -> StatusDisplay:
        """The job's counts and the console they are shown on (made on first use)."""
        if self._shown is None:
            job = JobProgress(self.num_samples, self.epochs, clock=lambda: time.time(), noun="trials")
            self._shown = StatusDisplay(job, self.interval, label="search")
        return self._shown

    @property
    def nodes(self) -> NodeWatch:
        """Which node each trial runs on and the lines for lost nodes (made on first use)."""
        if self._watch is None:
            self._watch = NodeWatch(self._print)
        return self._watch

    def _print(self, line: str) -> None:
        self.display.write(line)

    def _ended(self, trials: list, trial: Any, error: bool, result: dict | None = None) -> None:
        if trial.trial_id in self._printed:
            return
        self._printed.add(trial.trial_id)
        done = len({t.trial_id for t in trials if t.status in ("TERMINATED", "ERROR")} | {trial.trial_id})
        width = len(str(self.num_samples))
        cfg = trial.config or {}
        res = result or trial.last_result or {}
        epoch = res.get("epoch")
        what = f"{cfg.get('family', '?')}" + (f" ({cfg['paper_config']})" if cfg.get("paper_config") else
                                                  f" ({cfg['reference']})" if cfg.get("reference") else "")
        budget = config_epochs(trial.config, self.epochs)
        head = f"[{done:>{width}}/{self.num_samples}] trial {trial.trial_id}  {what:<26}"
        if error:
            self._print(f"{head} FAILED after {epoch or 0}/{budget} epochs (see {trial.path}/error.txt)")
            return
        if res.get(USER_ERROR):  # ended on a mistake in the user's code or data (not retried)
            self._print(f"{head} FAILED: {res[USER_ERROR]}")
            return
        if epoch is None:
            self._print(f"{head} ended without reporting")
            return
        stopped = int(epoch) < budget
        ran = f"{int(epoch)}/{budget} epochs" + (f" ({self.scheduler} stopped it)" if stopped else "")
        secs = res.get("time_total_s")
        self._print(f"{head} {ran:<32} val acc {_pct(res.get('val_accuracy'), 2)}  "
                    f"compute saved {_pct(res.get('compute_saved_frac'))}  "
                    f"time saved {_pct(res.get('time_saved_frac'))}"
                    + (f"  {secs:.0f} s" if isinstance(secs, (int, float)) else ""))

    # ------------------------------------------------------------------ failures
    def _failure(self, trial: Any, recovers: bool) -> None:
        """A failed attempt: a lost worker is reported with its node (``tuning.nodes``); a failure
        of the trial itself that will be retried gets its own line."""
        exc = internals.last_trial_error(trial)
        if is_no_space(exc):  # the search stops for it, with one line (tuning.diskfull)
            return
        if isinstance(exc, LOST_WORKER):
            self.nodes.lost(trial, recovers)
            return
        if recovers:
            cause = getattr(exc, "cause", None) or exc if isinstance(exc, RayTaskError) else exc
            what = f"{type(cause).__name__}: {cut(' '.join(str(cause).split()), 80)}" if cause is not None else "an error"
            res = trial.last_result or {}
            self._print(f"trial {trial.trial_id} failed ({what}; details in {log_hint(trial)}); it restarts from "
                        f"its last checkpoint (epoch {res.get('epoch') or 0}), attempt {trial.num_failures + 1}")

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._known(trials)
        self.display.job.started(trial.trial_id, epochs=config_epochs(trial.config, self.epochs))

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        self.nodes.located(trial, result)
        self.display.job.trained(trial.trial_id, _epoch(result))
        if result.get(USER_ERROR):  # its last report: its line now, even if the search then stops it
            self.display.job.ended(trial.trial_id, failed=True)
            self._ended(trials, trial, error=False, result=result)
        if self.__dict__.get("estimate_once"):  # a huge search: what it needs, once an epoch has been timed
            st = self.display.job.status()
            if st.left_s is not None:
                self.estimate_once = False
                self._print(f"after the first epoch: {st.epochs_planned:,} epochs planned, about "
                            f"{format_seconds(st.left_s)} of training at this rate")

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._failure(trial, recovers=True)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        failed = bool((trial.last_result or {}).get(USER_ERROR))  # a mistake in the user's code: not retried
        self.nodes.ended(trial)
        self.display.job.ended(trial.trial_id, _epoch(trial.last_result), failed=failed)
        self._ended(trials, trial, error=False)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.display.job.ended(trial.trial_id, _epoch(trial.last_result), failed=True)
        self._failure(trial, recovers=False)
        if not is_no_space(internals.last_trial_error(trial)):  # that stops the search, with its own line
            self._ended(trials, trial, error=True)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self.nodes.look(trials, force=True)
        job = self.display.job
        for t in trials:  # ended by a search that stopped (tuning.usercode) before they reported: never ran
            if (t.trial_id not in self._printed and t.status in ("TERMINATED", "ERROR")
                    and (t.last_result or {}).get("epoch") is None):  # every report of a trial has its epoch
                job.forget(t.trial_id)
        self.close()

    def close(self) -> None:
        """The search ended (or was interrupted): the last status."""
        if self._shown is not None:
            self._count_repeats()
            self._shown.close()

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        self.nodes.look(trials)
        self._known(trials)
        self._count_repeats()
        self.display.tick()

    def _known(self, trials: list) -> None:
        """Trials the counts have not heard of: those a resumed search restored (what they trained
        before is done, but not in the rate of this run)."""
        job = self.display.job
        for t in trials:
            if t.trial_id in job:
                continue
            epochs, budget = _epoch(t.last_result), config_epochs(t.config, self.epochs)
            if t.status in ("TERMINATED", "ERROR"):
                job.restored(t.trial_id, epochs, ended=True, failed=t.status == "ERROR", budget=budget)
            elif epochs or t.status == "RUNNING":
                job.restored(t.trial_id, epochs, ended=False, budget=budget)
                if t.status == "RUNNING":
                    job.started(t.trial_id, epochs=budget)

    def _count_repeats(self) -> None:
        if self._repeats is not None:
            job = self.display.job
            try:
                job.repeated(int(self._repeats()) - job.repeats)
            except Exception:  # noqa: BLE001 - only a number on the status line
                pass


def _epoch(result: dict | None) -> int:
    """The epochs a trial's result says it trained (0 for a user error or none)."""
    try:
        return int((result or {}).get("epoch") or 0)
    except (TypeError, ValueError):
        return 0


class _NotOnConsole(logging.Filter):
    """Keeps Ray Tune's trial-failure tracebacks, its list of trials that did not complete (the
    summary counts them) and its failures to read a trial's results (a trial that never reported)
    off the console (the log file has them)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(("Trial task failed for trial", "Trials did not complete",
                                                   "Failed to fetch metrics"))


class _BestEffortFileHandler(logging.FileHandler):
    """ray.log: a record that cannot be written (a full disk) is dropped, not a traceback on stderr."""

    def handleError(self, record: logging.LogRecord) -> None:
        pass

    def close(self) -> None:
        try:
            super().close()
        except OSError:  # its last buffered lines could not be written
            pass


@contextlib.contextmanager
def ray_log_to(path: Path | None) -> Iterator[None]:
    """While the search runs: Ray's warnings and errors, and the error messages its GCS sends the
    driver (a raylet that died, with the tail of its log), go to ``path``; trial-failure tracebacks
    and those messages leave the console (``TrialProgress`` prints one line per event; other GCS
    messages get one line pointing at the file). ``None``: nothing changes."""
    if path is None:
        yield
        return
    handler = _BestEffortFileHandler(path, encoding="utf-8")
    handler.setLevel(logging.WARNING)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    ray_logger = logging.getLogger("ray")
    gcs_logger = logging.getLogger("tuning.ray_errors")  # outside "ray": never reaches Ray's console handler
    gcs_logger.propagate = False
    quiet = _NotOnConsole()
    consoles = [h for h in ray_logger.handlers if isinstance(h, logging.StreamHandler)
                and not isinstance(h, logging.FileHandler)]

    def gcs_message(message: str) -> None:
        gcs_logger.error("message from the Ray cluster:\n%s", message)
        dead = _NODE_MARKED_DEAD.search(message)
        if message.startswith(_RAYLET_DIED):  # a dead node: TrialProgress says which, in one line
            RAYLET_DEATHS.append(time.time())
        elif dead:
            DEAD_NODES.add(dead.group(1))
        else:
            first = message.strip().splitlines()[0] if message.strip() else ""
            say(f"ray: {cut(first, 160)} (details in {path})")

    ray_logger.addHandler(handler)
    gcs_logger.addHandler(handler)
    for h in consoles:
        h.addFilter(quiet)
    try:
        with internals.driver_error_messages(gcs_message):
            yield
    finally:
        for h in consoles:
            h.removeFilter(quiet)
        ray_logger.removeHandler(handler)
        gcs_logger.removeHandler(handler)
        handler.close()
