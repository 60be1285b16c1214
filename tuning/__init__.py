"""The Ray Tune side of the tool: run and resume searches (``run_search``, ``resume_search``), the
trial function, the early-stopping scheduler, the console progress, checkpoint repair, storage,
and (``internals``) the few private Ray/Optuna details it relies on. The rest of the project
(``layerout``, ``search_spaces``, ``analysis``) works without Ray.

    from tuning import SearchOptions, run_search
    result = run_search("demo", SearchOptions(num_samples=8))
    result.exp_dir, result.trials      # the experiment directory and a pandas table
"""
from tuning.search import SearchOptions, SearchResult, read_experiment, resume_search, run_search

__all__ = ["SearchOptions", "SearchResult", "read_experiment", "resume_search", "run_search"]
