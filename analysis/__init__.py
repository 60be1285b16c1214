"""Reading stored search results: Pareto fronts, hypervolume, knee, plots, HTML report, policy export.

No Ray needed: everything works from the experiment directory's files (see results.py).

    from analysis import run_analysis, export_policy, load_experiment, pareto_front

The names are imported on first use (PEP 562): ``python -m analysis --help`` and the other command
lines of this package answer without loading pandas, matplotlib or torch.
"""
from __future__ import annotations

from layerout.lazy import lazy_exports

# public name -> the module that defines it
_PUBLIC = {"Experiment": "analysis.results", "load_experiment": "analysis.results",
           "pareto_front": "analysis.pareto", "hypervolume_2d": "analysis.pareto", "knee_point": "analysis.pareto",
           "run_analysis": "analysis.run", "export_policy": "analysis.export"}

__all__ = ["Experiment", "load_experiment", "pareto_front", "hypervolume_2d", "knee_point",
           "run_analysis", "export_policy"]


__getattr__, __dir__ = lazy_exports(__name__, _PUBLIC)
