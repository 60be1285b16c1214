"""Reading stored search results: Pareto fronts, hypervolume, knee, plots, HTML report, policy export.

No Ray needed: everything works from the experiment directory's files (see results.py).

    from analysis import run_analysis, export_policy, load_experiment, pareto_front
"""
from __future__ import annotations

from analysis.pareto import hypervolume_2d, knee_point, pareto_front
from analysis.results import Experiment, load_experiment


def run_analysis(*args, **kwargs):  # noqa: ANN002, ANN003
    """See ``analysis.run.run_analysis`` (imported lazily: it pulls in matplotlib)."""
    from analysis.run import run_analysis as _run

    return _run(*args, **kwargs)


def export_policy(*args, **kwargs):  # noqa: ANN002, ANN003
    """See ``analysis.export.export_policy``."""
    from analysis.export import export_policy as _export

    return _export(*args, **kwargs)


__all__ = ["Experiment", "load_experiment", "pareto_front", "hypervolume_2d", "knee_point",
           "run_analysis", "export_policy"]
