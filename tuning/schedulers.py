"""Trial schedulers (early stopping) for the search.

- ``PaperASHA``: ASHA (asynchronous successive halving) that never stops the paper's
  configurations (the trials whose config has a ``paper_config``): they are the reference points
  every Pareto plot shows, and the baseline is what "accuracy lost" is measured against. Their
  results still count at ASHA's rungs.

Ray pickles the scheduler into the experiment state, so it lives in an importable module and
``tune_main.py --resume`` finds it again.
"""
from __future__ import annotations

from typing import Any

from ray.tune.schedulers import AsyncHyperBandScheduler, TrialScheduler

from tuning.internals import asha_settings, uncount_asha_stop


class PaperASHA(AsyncHyperBandScheduler):
    """ASHA (asynchronous successive halving) that lets the paper's configurations finish."""

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        action = super().on_trial_result(tune_controller, trial, result)
        time_attr, max_t = asha_settings(self)
        if (action == TrialScheduler.STOP and (trial.config or {}).get("paper_config")
                and result.get(time_attr, 0) < max_t):
            uncount_asha_stop(self)
            return TrialScheduler.CONTINUE
        return action
