"""The early-stopping schedulers a search may name (``--scheduler``, a space's
``early_stopping.scheduler``): name -> the function that builds it for a space, given as an
import path ``module:function`` so that the names are known without importing Ray (the command
line checks them first); the builders live on Ray's side, in ``tuning.schedulers``.

A scheduler is one class (a Ray Tune ``TrialScheduler``) with its builder, plus one registration
here; your own may be registered from your code with ``register_scheduler`` before the search
starts (a builder function or its import path).
"""
from __future__ import annotations

from typing import Any, Callable

from layerout.registry import Registry

SCHEDULERS: Registry = Registry("scheduler")  # name -> builder(space) or "module:builder"


def register_scheduler(name: str, builder: str | Callable[[Any], Any]) -> None:
    """Make ``--scheduler name`` build its scheduler with ``builder(space)``."""
    SCHEDULERS.add(name, builder)


# moasha: Pareto-aware successive halving, the default with two or more objectives; asha: on the first
# (accuracy) alone, the default with one; none: every trial trains its whole budget
register_scheduler("moasha", "tuning.schedulers:build_moasha")
register_scheduler("asha", "tuning.schedulers:build_asha")
register_scheduler("none", "tuning.schedulers:build_fifo")
