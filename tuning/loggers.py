"""Where a search's results go besides the experiment directory's tables: Ray Tune's own logger
callbacks, chosen by name (``--logger``, repeatable, or a space's ``loggers:``).

- ``csv``: Ray's ``CSVLoggerCallback`` (``progress.csv`` in every trial's folder);
- ``tensorboard``: Ray's ``TBXLoggerCallback`` (TensorBoard event files in every trial's folder;
  ``tensorboard --logdir EXPERIMENT_DIR`` shows them);
- ``mlflow``: Ray's ``MLflowLoggerCallback``, one MLflow run per trial (its config as parameters,
  every epoch's metrics), in the MLflow experiment ``MLFLOW_EXPERIMENT_NAME`` (default: the
  search's name) at ``MLFLOW_TRACKING_URI`` (default: MLflow's own);
- ``wandb``: Ray's ``WandbLoggerCallback``, one W&B run per trial in the project
  ``WANDB_PROJECT`` (or Ray's ``WANDB_PROJECT_NAME``; default ``layerout-tune``), grouped by
  ``WANDB_GROUP_NAME`` (default: the search's name); the API key from ``WANDB_API_KEY`` or
  ``wandb login``.

Without a choice a search gets ``DEFAULT`` (csv and tensorboard, what Ray Tune writes by default).
Whatever the choice, Ray's JSON logger writes every trial's ``result.json``: the tool's tables
are built from it. The callbacks are passed to the Tuner explicitly and Ray's automatic ones are
turned off while the search runs (``TUNE_DISABLE_AUTO_CALLBACK_LOGGERS``, ``ray_defaults_off``), so
the chosen set is exactly what runs. mlflow and wandb are optional packages: a missing one is one
error line (``check_loggers``) before Ray starts.
"""
from __future__ import annotations

import contextlib
import importlib.util
import os
from typing import Any, Iterator

from layerout.errors import UserError
from search_spaces.space import LOGGERS

DEFAULT = ("csv", "tensorboard")
# the package each logger needs, and the extra that installs it
PACKAGES = {"csv": None, "tensorboard": "tensorboardX", "mlflow": "mlflow", "wandb": "wandb"}
EXTRAS = {"mlflow": "mlflow", "wandb": "wandb"}
AUTO_LOGGERS_ENV = "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"


def installed(package: str) -> bool:
    """Whether ``package`` can be imported here."""
    try:
        return importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):
        return False


def check_loggers(names: list[str] | tuple[str, ...] | None, where: str = "--logger") -> None:
    """One UserError for an unknown logger or one whose package is not installed."""
    for name in names or ():
        if name not in LOGGERS:
            raise UserError(f"{where}: must be one of {', '.join(LOGGERS)}, got {name!r}")
        package = PACKAGES[name]
        if package and not installed(package):
            extra = EXTRAS.get(name)
            how = (f"pip install 'layerout-tune[{extra}]' (or pip install {package})" if extra
                   else f"pip install {package}")
            raise UserError(f"{where} {name}: needs the {package} package, which is not installed; install it with "
                            f"{how}")


def logger_callbacks(names: list[str] | tuple[str, ...], search_name: str) -> list[Any]:
    """Ray Tune's JSON logger (always: the tables read result.json) and the named loggers."""
    from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback, TBXLoggerCallback

    callbacks: list[Any] = [JsonLoggerCallback()]
    for name in names:
        if name == "csv":
            callbacks.append(CSVLoggerCallback())
        elif name == "tensorboard":
            callbacks.append(TBXLoggerCallback())
        elif name == "mlflow":
            from ray.air.integrations.mlflow import MLflowLoggerCallback

            callbacks.append(MLflowLoggerCallback(
                tracking_uri=os.environ.get("MLFLOW_TRACKING_URI") or None,
                experiment_name=os.environ.get("MLFLOW_EXPERIMENT_NAME") or search_name,
                tags={"layerout_search": search_name}))
        elif name == "wandb":
            from ray.air.integrations.wandb import WandbLoggerCallback

            project = (os.environ.get("WANDB_PROJECT") or os.environ.get("WANDB_PROJECT_NAME") or "layerout-tune")
            callbacks.append(WandbLoggerCallback(project=project,
                                                 group=os.environ.get("WANDB_GROUP_NAME") or search_name))
    return callbacks


def resolved(names: list[str] | tuple[str, ...] | None) -> list[str]:
    """The loggers a search runs with: the named ones, else ``DEFAULT`` (tensorboard only where
    tensorboardX is installed, as Ray Tune does)."""
    if names:
        return list(dict.fromkeys(names))
    return [n for n in DEFAULT if not PACKAGES[n] or installed(PACKAGES[n])]


@contextlib.contextmanager
def ray_defaults_off(active: bool = True) -> Iterator[None]:
    """While a search runs: Ray Tune adds no logger of its own (the search passes its set)."""
    if not active:
        yield
        return
    old = os.environ.get(AUTO_LOGGERS_ENV)
    os.environ[AUTO_LOGGERS_ENV] = "1"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(AUTO_LOGGERS_ENV, None)
        else:
            os.environ[AUTO_LOGGERS_ENV] = old
