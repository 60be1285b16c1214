"""The Ray Tune side of the tool: run and resume searches (``run_search``, ``resume_search``), the
trial function, the early-stopping scheduler, the console progress, checkpoint repair, storage,
and (``internals``) the few private Ray/Optuna details it relies on. The rest of the project
(``layerout``, ``search_spaces``, ``analysis``) works without Ray.

    from tuning import SearchOptions, run_search
    result = run_search("demo", SearchOptions(num_samples=8))
    result.exp_dir, result.trials      # the experiment directory and a pandas table

The names are imported on first use (PEP 562): the command line checks its options
(``tuning.options``) before Ray is imported.
"""
from __future__ import annotations

from layerout.lazy import lazy_exports

# public name -> the module that defines it
_PUBLIC = {"SearchOptions": "tuning.options", "SearchResult": "tuning.search", "read_experiment": "tuning.search",
           "resume_search": "tuning.search", "run_search": "tuning.search"}

__all__ = ["SearchOptions", "SearchResult", "read_experiment", "resume_search", "run_search"]


__getattr__, __dir__ = lazy_exports(__name__, _PUBLIC)
