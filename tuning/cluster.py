"""Where a search runs: the embedded local Ray on loopback, or a cluster joined within
``--connect-timeout`` (with the packages trials import shipped to its workers), the resources a
trial asks for, and the ``Tuner.fit`` call with its signals (SIGTERM as Ctrl-C), Ray's console
messages and a full disk. Used by the search (``tuning.search``) and the confirmation
(``tuning.confirm``) alike.
"""
from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

import ray
from ray import cloudpickle, tune

from layerout import userland
from layerout.checks import cut
from layerout.errors import UserError
from tuning import internals, loggers, storage
from tuning.diskfull import NoSpace, NoSpaceWatch, QuietAboutNoSpace, is_no_space, no_space_file
from tuning.options import SearchOptions
from tuning.progress import RAY_LOG, TrialProgress, ray_log_to
from tuning.trainable import train_trial
from tuning.usercode import with_user_modules

ROOT = Path(__file__).resolve().parent.parent


def _is_loopback(address: str | None) -> bool:
    if not address:
        return True
    host = address.split("://", 1)[-1].rsplit(":", 1)[0]
    return host in ("127.0.0.1", "localhost", "::1")


def init_ray(address: str | None, connect_timeout: float = 30.0, code: dict[str, Any] | None = None) -> None:
    """Start the embedded local Ray (on loopback), or join the cluster at ``address`` within
    ``connect_timeout`` seconds (shipping the trials' packages and the user's modules in ``code``)."""
    if _is_loopback(address):
        # Ray otherwise advertises the machine's network address even for a local instance, and a
        # driver may then fail to reach its own head; loopback keeps a laptop run self-contained.
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # legacy output: silent at verbose=0 (TrialProgress prints)
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    if address:
        _probe(address, connect_timeout)
        _join(address, connect_timeout, with_user_modules(runtime_env(), code))
    else:
        # address="local" always starts a new instance, even where a killed cluster left its
        # address file behind. Its token-authentication notice is for clusters people join; this
        # one is private to the run.
        logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
        ray.init(address="local", num_cpus=os.cpu_count() or 1, include_dashboard=False,
                 log_to_driver=False, logging_level=logging.WARNING)


def _host_port(address: str) -> tuple[str, int] | None:
    """(host, port) of ``HOST:PORT`` or ``ray://HOST:PORT``; None for ``auto`` (Ray finds it)."""
    if address == "auto":
        return None
    rest = address.split("://", 1)[1] if "://" in address else address
    host, sep, port = rest.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise UserError(f"--address {address}: expected auto, HOST:PORT or ray://HOST:PORT")
    return host.strip("[]"), int(port)


def _probe(address: str, timeout: float) -> None:
    """One TCP connection to the cluster's port, so that a wrong address fails at once."""
    hp = _host_port(address)
    if hp is None:
        return
    try:
        socket.create_connection(hp, timeout=timeout).close()
    except socket.timeout:
        raise UserError(f"--address {address}: nothing answered within {timeout:g} s (--connect-timeout); "
                        "check the address and that the head node is reachable") from None
    except OSError as exc:
        reason = (exc.strerror or exc.__class__.__name__).lower()
        raise UserError(f"--address {address}: cannot connect ({reason}); is a Ray head node running there "
                        "(ray start --head)?") from None


AUTH_HINT = ("a cluster with token authentication needs RAY_AUTH_MODE=token and its token here too "
             "(RAY_AUTH_TOKEN, or ~/.ray/auth_token)")


def _join(address: str, timeout: float, runtime_env: dict[str, Any] | None) -> None:
    """``ray.init(address)`` bounded by ``timeout``. Something listens there (``_probe``), but
    ray.init has no timeout of its own, retries for minutes when the listener is not a Ray head
    or refuses this driver's token, and cannot be interrupted while it waits: a watchdog ends the
    process with one error line past the deadline, or as soon as Ray's client reports a refused
    token. Ray's client prints its retries on the process's stderr (below Python), so stderr goes
    to a scratch file meanwhile; it is replayed when the connection succeeds."""
    sys.stdout.flush()
    sys.stderr.flush()
    captured = tempfile.TemporaryFile()
    real_stderr = os.dup(2)
    os.dup2(captured.fileno(), 2)
    done = threading.Event()

    def said() -> str:
        return os.pread(captured.fileno(), 1 << 20, 0).decode("utf-8", "replace")

    def fail(reason: str) -> None:
        os.write(real_stderr, f"error: --address {address}: {reason}\n".encode())
        os._exit(2)

    def watch() -> None:
        deadline = time.monotonic() + timeout
        while not done.wait(0.25):
            if "InvalidAuthToken" in said():
                fail(f"the cluster refused this driver's authentication token; {AUTH_HINT}")
            if time.monotonic() > deadline:
                fail(f"something listens there but no Ray cluster answered within {timeout:g} s "
                     f"(--connect-timeout); check that it is a Ray head node's address and port; {AUTH_HINT}")

    watchdog = threading.Thread(target=watch, name="connect-watchdog", daemon=True)
    watchdog.start()
    error: str | None = None
    try:
        ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING, runtime_env=runtime_env)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        error = cut(" ".join(str(exc).split()), 300)
    finally:
        done.set()
        watchdog.join()
        sys.stderr.flush()
        os.dup2(real_stderr, 2)
        os.close(real_stderr)
    text = said()
    captured.close()
    if error is not None:
        if "InvalidAuthToken" in text or "AuthenticationError" in error:
            raise UserError(f"--address {address}: the cluster refused this driver's authentication token; "
                            f"{AUTH_HINT}")
        raise UserError(f"--address {address}: cannot connect to a Ray cluster ({error})")
    if text.strip():
        sys.stderr.write(text)


# The packages the cluster side imports (the trial function, tuning.trainable; the searcher and the
# scheduler, which a ray:// driver runs there): the code a cluster's workers need; nothing else of
# the checkout (the analysis, data, results, tests) is shipped.
TRIAL_PACKAGES = ("layerout", "search_spaces", "tuning")


def runtime_env() -> dict[str, Any] | None:
    """Ship the packages trials import to the cluster's workers (Ray ``py_modules``) unless they
    already have them (LAYEROUT_TUNE_SHIP_CODE=0 for clusters where every node has the package
    installed)."""
    if os.environ.get("LAYEROUT_TUNE_SHIP_CODE", "1") == "0":
        return None
    return {"py_modules": [str(ROOT / pkg) for pkg in TRIAL_PACKAGES]}


def check_resources(cpus: float, gpus: float, local: bool) -> None:
    res = ray.cluster_resources()
    have_gpu, have_cpu = float(res.get("GPU", 0)), float(res.get("CPU", 0))
    msgs = []
    if gpus > 0 and have_gpu < gpus:
        msgs.append(f"--gpus-per-trial {gpus:g}: the Ray cluster has {have_gpu:g} GPUs")
    if cpus > have_cpu:
        msgs.append(f"--cpus-per-trial {cpus:g}: the Ray cluster has {have_cpu:g} CPUs")
    if msgs and local:
        raise UserError("; ".join(msgs) + " (no trial could ever start)")
    for m in msgs:
        print(f"warning: {m}; trials wait until the cluster grows", file=sys.stderr)


def trainable(options: SearchOptions, code: dict[str, Any] | None = None, address: str | None = None,
               fn: Callable[..., None] = train_trial) -> Any:
    """The trial function ``fn`` (``train_trial``) with its options, the user's objects and resources."""
    code = code or {}
    # where the trials import the user's modules from: the driver's folders, unless the modules
    # are shipped to a cluster (then the shipped copies, as on nodes that lack those folders)
    shipped = bool(address) and with_user_modules(None, code) is not None
    opts = {"threads": max(1, int(options.cpus_per_trial)), "data_dir": options.data_dir,
            "download": options.download, "code_paths": [] if shipped else list(code.get("paths") or [])}
    # by value: pickled here, loaded by the trial after it has set up its import path (train_trial)
    objects = {name: cloudpickle.dumps(userland.resolve(name, role))
               for role, name in (code.get("objects") or {}).items()}
    res = {"cpu": options.cpus_per_trial, "gpu": options.gpus_per_trial}
    return tune.with_resources(tune.with_parameters(fn, opts=opts, objects=objects), res)


class _TuneMessages(logging.Filter):
    """Ray Tune's interrupt messages, in this tool's terms (it tells people to call Tuner.restore);
    none when the tool stopped the search itself (``watch``: a full disk)."""

    def __init__(self, watch: NoSpaceWatch | None = None) -> None:
        super().__init__()
        self.watch = watch

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        if msg.startswith("Stop signal received"):
            if self.watch is None or self.watch.file is None:
                print("\ninterrupted: stopping the running trials and saving the search state "
                      "(interrupt again to quit at once)", file=sys.stderr, flush=True)
            return False
        return "has been interrupted" not in msg and "Tuner.restore(" not in msg


def fit(tuner: tune.Tuner, exp_dir: str, own_loggers: bool = True, no_space_hint: str = "") -> tune.ResultGrid:
    """``tuner.fit()``, with SIGTERM handled like Ctrl-C: Ray Tune stops the running trials and
    saves the search state, the tables and analysis of what finished are written, and
    ``--resume`` continues from there. Ray's warnings and errors go to the experiment's ray.log
    (local storage), the console gets one line per event and the status (``tuning.progress``).
    ``own_loggers``: the Tuner's callbacks hold the search's logger set (``tuning.loggers``), so
    Ray Tune adds none of its own (an experiment from before ``loggers`` existed gets Ray's).
    A write that fails for lack of space stops the search the same way, with its last saved state
    whole (``tuning.diskfull``), and raises ``NoSpace`` naming the file (with ``no_space_hint``)."""
    watch = NoSpaceWatch()
    callbacks = internals.tuner_callbacks(tuner)
    callbacks[:] = [cb for cb in callbacks if not isinstance(cb, NoSpaceWatch)] + [watch]
    messages = _TuneMessages(watch)
    tune_logger = logging.getLogger("ray.tune.tune")
    tune_logger.addFilter(messages)
    log = storage.local_path(f"{exp_dir}/{RAY_LOG}") if storage.is_local(exp_dir) else None
    quiet, consoles = QuietAboutNoSpace(), _ray_consoles()
    for h in consoles:
        h.addFilter(quiet)
    try:
        with ray_log_to(log), loggers.ray_defaults_off(own_loggers), internals.atomic_state_copies(watch.hit):
            results = fit_signals(tuner)
    except OSError as exc:  # a write Ray makes itself, outside its trials and saved states
        if is_no_space(exc) and watch.file is None:
            raise NoSpace(no_space_file(exc, exp_dir), no_space_hint) from None
        raise
    finally:
        tune_logger.removeFilter(messages)
        for h in consoles:
            h.removeFilter(quiet)
        for cb in callbacks:  # interrupted: the bar ends before the summary
            if isinstance(cb, TrialProgress):
                cb.close()
    if watch.file is not None:
        raise NoSpace(watch.file, no_space_hint)
    return results


def _ray_consoles() -> list[logging.Handler]:
    """Ray's console handlers (on its ``ray`` logger)."""
    return [h for h in logging.getLogger("ray").handlers
            if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)]


def fit_signals(tuner: tune.Tuner) -> tune.ResultGrid:
    """``tuner.fit()`` with SIGTERM sent on as SIGINT; the SIGINT handler as it was afterwards
    (Ray Tune leaves its own installed when fit() ends, and a Ctrl-C during the analysis would
    then only set its stale stop flag)."""
    try:
        old = signal.signal(signal.SIGTERM, lambda sig, frame: os.kill(os.getpid(), signal.SIGINT))
        old_int = signal.getsignal(signal.SIGINT)
    except ValueError:  # not the main thread: leave signals alone
        old = old_int = None
    try:
        return tuner.fit()
    finally:
        if old is not None:
            signal.signal(signal.SIGTERM, old)
            signal.signal(signal.SIGINT, old_int)
