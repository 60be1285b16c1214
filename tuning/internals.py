"""Everything this tool reads of Ray Tune's *private* state, in one place.

Ray Tune has no public API for these, and they may change with Ray's version; each function here
is pinned by a test (tests/test_tuning_internals.py) run against the installed Ray, which also
records the version it was written for (``CHECKED_WITH``):

- ``saved_trial_states``: the trials of the newest ``experiment_state-*.json``, which is what
  ``Tuner.restore`` continues from (after an interrupted ``fit()`` Ray's in-memory trials all read
  TERMINATED, but the saved state still says RUNNING / PENDING / PAUSED for unfinished ones);
- ``checkpoint_names``: the checkpoint folder names a saved trial refers to (its pickled
  checkpoint manager, stored hex-encoded);
- ``uncount_asha_stop``, ``asha_settings``, ``asha_state``, ``load_asha_state``: ASHA's count of
  stopped trials (corrected when we overrule its decision), its time attribute and budget, its
  rungs (saved for ``--resume`` by ``tuning.schedulers.SchedulerState``);
- ``tuner_searcher``, ``tuner_scheduler``, ``tuner_callbacks``: the searcher, scheduler and
  callbacks a ``Tuner`` runs with. For a new Tuner they are the objects passed in; after
  ``Tuner.restore`` they are the ones unpickled from ``tuner.pkl`` (the searcher then restored
  from ``searcher-state-*.pkl``, the scheduler's state by ``tuning.schedulers.SchedulerState``),
  which only the Tuner holds; the callbacks list is the one ``fit()`` runs with (so callbacks
  added to it run too).
- ``has_saved_state``, ``restore_files``: whether Ray Tune saved anything ``Tuner.restore`` can
  continue from, and the files it unpickles when it does (the saved states, and a failed trial's
  ``error.pkl``);
- ``check_restorable``, ``restore_failure_guard``: when a saved state ``fit()`` restores from is
  damaged, Ray Tune logs "Failed to restore the run state" and starts the search *from scratch*
  in the same folder, so its tables would be overwritten with a new search's. The first reads
  the newest saved states as Ray will (before anything starts); the second turns that log
  record into an exception (``RestoreFailed``), for whatever the first could not foresee;
- ``last_trial_error``: in the driver, the exception of a trial's latest failed attempt (Ray
  pickles it into the trial's driver-side folder before it calls the callbacks);
- ``driver_error_messages``: the error messages Ray's GCS publishes to the driver (a raylet that
  died, with the tail of its log) go to a function instead of the console while it is active;
- ``trial_folder``: inside a running trial, its own folder (``trial_<id>/`` in the experiment
  directory when the storage is a local file system, else Ray's per-trial working directory);
- ``trial_node``: in the driver, the node a trial's worker (its Ray actor) was placed on, from
  the GCS's actor table, before the trial has reported anything (``node_id`` in its results
  says it after);
- ``checkpoint_epoch``: in the driver, the epoch of the checkpoint a failed trial restarts from.
- ``atomic_state_copies``: while a search runs, the driver's copies of Ray's saved state (and the
  trials' driver-side files) into a local experiment folder are each written to a temporary file
  and renamed into place, the experiment state last, instead of being overwritten in place (a full
  disk left ``experiment_state-*.json`` cut short, and the search could not be resumed); a copy
  that fails for lack of space is reported to a function (``tuning.diskfull``);
- ``tune_run_catches_sigint``: whether Ray Tune's own SIGINT handler (a graceful stop) is installed.
- ``optuna_study``, ``optuna_trials``, ``completed_trials``: what Ray's ``OptunaSearch`` holds of
  its study: the Optuna study, the Optuna trial each Ray trial was suggested as (ask-and-tell),
  and the Ray trials it has already told (``tuning.searcher`` tells Optuna itself).
"""
from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import pickle
import re
import shutil
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from layerout.checks import cut
from layerout.errors import UserError
from layerout.files import WriteError, atomic_write
from tuning import storage

CHECKED_WITH = {"ray": "2.60.0"}
_CHECKPOINT_NAME = re.compile(r"checkpoint_\d{6}")
TUNER_PKL = "tuner.pkl"  # the Tuner (its searcher, scheduler, callbacks), pickled when the search starts
# what a restore reads that holds pickles, in the experiment folder: the Tuner, the experiment state
# (each trial's pickled checkpoint manager, hex-encoded), the search generator's state (a pickle
# despite its .json name), the searcher's and the callbacks' states; in a trial's folder: the
# exception of its failure (error.pkl, unpickled for the ResultGrid a restored fit() returns).
# tests/test_hardening.py's test_restore_reads_only_the_files_checked lists what a resume reads.
_EXPERIMENT_STATE = ("experiment_state-", ".json")  # Ray's snapshot of the trials (prefix, suffix)
_RESTORE_FILE = re.compile(r"tuner\.pkl|experiment_state-.*\.json|search_gen_state-.*\.json|searcher-state-.*\.pkl"
                           r"|callback-states-.*\.pkl")
TRIAL_ERROR_PKL = "error.pkl"


@dataclass
class SavedTrial:
    trial_id: str
    status: str
    last_result: dict[str, Any]
    checkpoint_names: list[str]


def _newest(names: list[str], kind: tuple[str, str]) -> str | None:
    """The newest saved state of ``kind`` (prefix, suffix) among ``names``: Ray picks the largest name."""
    found = [n for n in names if n.startswith(kind[0]) and n.endswith(kind[1])]
    return max(found) if found else None


def has_saved_state(exp_dir: str) -> bool:
    """True when ``Tuner.restore`` has something to continue: the pickled Tuner and at least one
    saved experiment state. A driver killed before Ray's first save leaves neither, or only the
    Tuner."""
    names = storage.list_names(exp_dir)
    return TUNER_PKL in names and _newest(names, _EXPERIMENT_STATE) is not None


def restore_files(exp_dir: str) -> list[str]:
    """Paths, relative to ``exp_dir``, of the files a restore unpickles (directly or inside JSON):
    the saved states in the folder and each trial folder's ``error.pkl``."""
    names = storage.list_names(exp_dir)
    out = [n for n in names if _RESTORE_FILE.fullmatch(n)]
    for n in storage.list_names(exp_dir, folders=True):  # the trials' folders
        if TRIAL_ERROR_PKL in storage.list_names(f"{exp_dir}/{n}"):
            out.append(f"{n}/{TRIAL_ERROR_PKL}")
    return out


# the saved states a restore reads, each the newest of its kind (prefix, suffix), and how Ray reads it
_SAVED_STATES = ((_EXPERIMENT_STATE, "json"), (("search_gen_state-", ".json"), "pickle"),
                 (("searcher-state-", ".pkl"), "pickle"), (("callback-states-", ".pkl"), "pickle"))
_RESTORE_LOGGER = "ray.tune.execution.tune_controller"
_RESTORE_FAILED = "Failed to restore the run state"


def damaged(path: str, exc: BaseException) -> UserError:
    """The one error line for a saved state a search cannot be restored from."""
    msg = cut(" ".join(str(exc).split()), 120)
    return UserError(f"{path}: cannot restore the search from it ({exc.__class__.__name__}: {msg}); Ray Tune's "
                     "saved state is damaged")


def check_restorable(exp_dir: str) -> None:
    """Read the newest experiment state, search generator, searcher and callback states, and
    the trials' ``error.pkl``, as a restore will (JSON, pickles); a UserError naming the first
    that cannot be read. Only for a folder the user trusts (``tuning.trust.check_trusted``): it
    unpickles what Ray would unpickle."""
    names = storage.list_names(exp_dir)
    files = [(newest, how) for kind, how in _SAVED_STATES if (newest := _newest(names, kind)) is not None]
    files += [(rel, "pickle") for rel in restore_files(exp_dir) if rel.endswith(f"/{TRIAL_ERROR_PKL}")]
    for rel, how in files:
        path = f"{exp_dir}/{rel}"
        data = storage.read_bytes(path)
        try:
            if data is None:
                raise OSError("cannot be read")
            state = json.loads(data) if how == "json" else pickle.loads(data)  # noqa: S301 - trusted folder
            if how == "json" and not isinstance(state, dict):
                raise ValueError("not a JSON object")
        except (ImportError, AttributeError):
            if not rel.endswith(f"/{TRIAL_ERROR_PKL}"):
                raise damaged(path, sys.exc_info()[1]) from None
            # a trial's exception of a class only its own code defines: whole, not damaged
        except Exception as exc:  # noqa: BLE001 - whatever reading a damaged file raises
            raise damaged(path, exc) from None


class RestoreFailed(Exception):
    """Ray Tune could not restore a search's saved state (and would start it from scratch)."""


class _RaiseOnRestoreFailure(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if record.getMessage().startswith(_RESTORE_FAILED):
            logging.getLogger(record.name).callHandlers(record)  # its traceback still goes where Ray's go
            cause = record.exc_info[1] if record.exc_info else None
            if cause is None:
                raise RestoreFailed(record.getMessage())
            raise RestoreFailed(f"{cause.__class__.__name__}: {cause}" if str(cause) else cause.__class__.__name__)
        return True


@contextlib.contextmanager
def restore_failure_guard() -> Iterator[None]:
    """While a restored search's ``fit()`` starts: Ray's "Failed to restore the run state" raises
    ``RestoreFailed`` out of ``fit()`` (a logging filter's exception reaches the logging call)
    instead of a new search starting in the old one's folder."""
    log = logging.getLogger(_RESTORE_LOGGER)
    guard = _RaiseOnRestoreFailure()
    log.addFilter(guard)
    try:
        yield
    finally:
        log.removeFilter(guard)


def _newest_state(exp_dir: str) -> dict[str, Any] | None:
    newest = _newest(storage.list_names(exp_dir), _EXPERIMENT_STATE)
    if newest is None:
        return None
    try:
        doc = json.loads(storage.read_text(f"{exp_dir}/{newest}") or "{}")
    except json.JSONDecodeError:
        return None
    return doc if isinstance(doc, dict) else None


def saved_trial_states(exp_dir: str) -> list[SavedTrial]:
    """The trials of Ray Tune's newest saved experiment state (empty when missing or unreadable)."""
    doc = _newest_state(exp_dir)
    out: list[SavedTrial] = []
    for entry in (doc or {}).get("trial_data") or []:
        try:
            state, meta = (entry[0], entry[1]) if isinstance(entry, (list, tuple)) and len(entry) == 2 else (entry, {})
            state = json.loads(state) if isinstance(state, str) else state
            meta = json.loads(meta) if isinstance(meta, str) else meta
            if not (isinstance(state, dict) and state.get("trial_id") and state.get("status")):
                continue
            out.append(SavedTrial(trial_id=str(state["trial_id"]), status=str(state["status"]),
                                  last_result=dict((meta or {}).get("last_result") or {}),
                                  checkpoint_names=checkpoint_names(meta or {})))
        except (ValueError, TypeError, AttributeError):
            continue
    return out


def checkpoint_names(trial_meta: dict[str, Any]) -> list[str]:
    """``checkpoint_NNNNNN`` folder names in a saved trial's (hex-encoded, pickled) checkpoint manager."""
    blob = (trial_meta.get("checkpoint_manager") or {}).get("value") or ""
    try:
        return sorted(set(_CHECKPOINT_NAME.findall(bytes.fromhex(blob).decode("latin-1"))))
    except ValueError:
        return []


def uncount_asha_stop(scheduler: Any) -> None:
    """AsyncHyperBandScheduler counts the trials it stopped (``_num_stopped``, shown in its
    status line); call this when a STOP it returned is turned into CONTINUE."""
    scheduler._num_stopped -= 1


def asha_settings(scheduler: Any) -> tuple[str, float]:
    """(time attribute, max_t) of an AsyncHyperBandScheduler."""
    return scheduler._time_attr, scheduler._max_t


def asha_state(scheduler: Any) -> dict[str, Any]:
    """What an AsyncHyperBandScheduler has learnt: each bracket's rungs (milestone, and the result
    recorded there per trial id) and its count of stopped trials. Plain data, for pickling."""
    return {"brackets": [[[milestone, dict(recorded)] for milestone, recorded in b._rungs]
                         for b in scheduler._brackets], "num_stopped": scheduler._num_stopped}


def load_asha_state(scheduler: Any, state: dict[str, Any]) -> None:
    """Put ``asha_state``'s rungs back into a scheduler with the same brackets and milestones."""
    for bracket, rungs in zip(scheduler._brackets, state["brackets"]):
        bracket._rungs = [(milestone, dict(recorded)) for milestone, recorded in rungs]
    scheduler._num_stopped = state["num_stopped"]



def _tune_config(tuner: Any) -> Any:
    return tuner._local_tuner._tune_config


def tuner_searcher(tuner: Any) -> Any:
    """The searcher a Tuner runs with, unwrapped from Ray's SearchGenerator/ConcurrencyLimiter."""
    s = _tune_config(tuner).search_alg
    while hasattr(s, "searcher"):
        s = s.searcher
    return s


def tuner_scheduler(tuner: Any) -> Any:
    """The trial scheduler a Tuner runs with."""
    return _tune_config(tuner).scheduler


def tuner_callbacks(tuner: Any) -> list:
    """The list of callbacks a Tuner's ``fit()`` runs with (made empty if it had none)."""
    run_config = tuner._local_tuner.get_run_config()
    if run_config.callbacks is None:
        run_config.callbacks = []
    return run_config.callbacks


def tuner_stopper(tuner: Any) -> Any:
    """The experiment stopper a Tuner's ``fit()`` runs with (``RunConfig.stop``), or None."""
    return tuner._local_tuner.get_run_config().stop


def trial_folder() -> Path:
    """Inside a running trial: the trial's folder in the experiment directory (``trial_fs_path`` of
    the trial's StorageContext, a Ray DeveloperAPI) when the storage is a local (or mounted)
    file system, else the trial's working directory in Ray's session folder on this node."""
    from ray import tune

    st = tune.get_context().get_storage()
    if getattr(st.storage_filesystem, "type_name", "") == "local":
        return Path(st.trial_fs_path)
    return Path(st.trial_working_directory)


def last_trial_error(trial: Any) -> BaseException | None:
    """The exception of the trial's latest failure, as Ray Tune pickled it (``Trial.handle_error``
    writes ``error.pkl`` into the trial's driver-side folder, ``Trial.pickled_error_file``, before
    it calls ``on_trial_recover`` / ``on_trial_error``); None when there is none or it cannot be read."""
    from ray import cloudpickle

    try:
        path = trial.pickled_error_file
        if not path:
            return None
        with open(path, "rb") as f:
            exc = cloudpickle.load(f)
    except Exception:  # noqa: BLE001 - missing or unreadable: the caller reports what it knows
        return None
    return exc if isinstance(exc, BaseException) else None


@contextlib.contextmanager
def driver_error_messages(handle: Callable[[str], None]) -> Iterator[None]:
    """While active, each error message the GCS publishes to this driver is passed to
    ``handle(message)`` instead of being printed. Ray's driver prints them from its
    ``listen_error_messages`` thread through the module-level ``print_to_stdstream`` of
    ``ray._private.worker`` (as ``{"lines": [message], "pid": "raylet", "is_err": False}``);
    anything else it prints passes through unchanged."""
    import ray._private.worker as ray_worker

    original = ray_worker.print_to_stdstream

    def route(data: dict, ignore_prefix: bool) -> None:
        if data.get("pid") == "raylet" and not data.get("is_err"):
            for message in data.get("lines") or []:
                handle(str(message))
            return
        original(data, ignore_prefix)

    ray_worker.print_to_stdstream = route
    try:
        yield
    finally:
        ray_worker.print_to_stdstream = original


def trial_node(trial: Any) -> str | None:
    """The id (hex) of the node the trial's current worker, its Ray actor
    (``Trial.temporary_state.ray_actor``), was placed on: the ``Address.NodeID`` of the actor's
    entry in the GCS's actor table (``ray._private.state.actors``; kept after the actor died).
    None when the trial has no actor, the actor is not placed yet, or the table cannot be read."""
    try:
        actor = trial.temporary_state.ray_actor
        if actor is None:
            return None
        import ray._private.state as ray_state

        node = (ray_state.actors(actor_id=actor._actor_id.hex()).get("Address") or {}).get("NodeID") or ""
    except Exception:  # noqa: BLE001 - only for the wording of a console line
        return None
    return node if node.strip("0") else None


def checkpoint_epoch(trial: Any) -> int | None:
    """The epoch the trial's latest checkpoint holds (``Trial.latest_checkpoint_result``: the
    checkpoint Ray Tune restores a failed trial from, with the metrics reported with it); None
    when it has none."""
    try:
        latest = trial.latest_checkpoint_result
        epoch = latest.metrics.get("epoch") if latest is not None and latest.checkpoint is not None else None
    except Exception:  # noqa: BLE001 - only for the wording of a console line
        return None
    return int(epoch) if isinstance(epoch, (int, float)) and not isinstance(epoch, bool) and epoch > 0 else None
def tune_run_catches_sigint() -> bool:
    """True while ``Tuner.fit()`` runs its loop with Ray Tune's SIGINT handler installed
    (``ray.tune.tune._setup_signal_catching``'s ``signal_interrupt_tune_run``): a SIGINT then stops
    the search gracefully (running trials stopped and left unfinished, the state saved)."""
    return getattr(signal.getsignal(signal.SIGINT), "__name__", "") == "signal_interrupt_tune_run"


@contextlib.contextmanager
def atomic_state_copies(no_space: Callable[[str], None]) -> Iterator[None]:
    """While active, Ray's driver copies its staging folder (the saved states, the trials'
    result.json and logger files) into a local experiment folder file by file, each through a
    temporary file renamed into place, ``experiment_state-*`` last; ``no_space(path)`` is called
    for a file that could not be written for lack of space (the copy then fails as Ray's did).
    Ray's copy is ``ray.train._internal.storage._upload_to_fs_path`` (pyarrow's ``copy_files``,
    which overwrites each file in place), which ``_FilesystemSyncer._sync_up_command`` looks up by
    name each time it syncs; remote storage and copies with exclusions are left to it."""
    import ray.train._internal.storage as ray_storage

    original = ray_storage._upload_to_fs_path

    def upload(local_path: str, fs: Any, fs_path: str, exclude: list | None = None) -> None:
        if getattr(fs, "type_name", "") != "local" or exclude or not os.path.isdir(local_path):
            return original(local_path, fs, fs_path, exclude)
        src_root = Path(local_path)
        files = sorted((p for p in src_root.rglob("*") if p.is_file()),
                       key=lambda p: (p.name.startswith(_EXPERIMENT_STATE[0]), str(p)))
        for src in files:
            dest = Path(fs_path) / src.relative_to(src_root)
            try:
                with open(src, "rb") as f:
                    atomic_write(dest, lambda out, f=f: shutil.copyfileobj(f, out))
            except FileNotFoundError:  # gone from the staging folder since it was listed
                continue
            except WriteError as exc:
                if isinstance(exc.__cause__, OSError) and exc.__cause__.errno == errno.ENOSPC:
                    no_space(str(dest))
                raise

    ray_storage._upload_to_fs_path = upload
    try:
        yield
    finally:
        ray_storage._upload_to_fs_path = original


# ------------------------------------------------------------------------------ OptunaSearch
def optuna_study(searcher: Any) -> Any:
    """The ``optuna.Study`` an ``OptunaSearch`` asks and tells (after a restore: its restored copy)."""
    return searcher._ot_study


def optuna_trials(searcher: Any) -> dict[str, Any]:
    """Ray trial id -> the ``optuna.Trial`` an ``OptunaSearch`` suggested it as, until it is told
    (the dict itself: removing a trial from it makes ``OptunaSearch`` forget it)."""
    return searcher._ot_trials


def completed_trials(searcher: Any) -> set[str]:
    """The Ray trial ids an ``OptunaSearch`` has told Optuna about (the set itself)."""
    return searcher._completed_trials
