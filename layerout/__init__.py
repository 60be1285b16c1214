"""layerout: a plain PyTorch library for training under layer-freezing schedules (no Ray here).

    from layerout import load_policy
    freezer = load_policy("policy.json").attach(model, optimizer)

The public names are imported on first use (PEP 562), so that a command line importing a light
submodule (``layerout.errors`` for its argument parser) answers ``--help`` without loading torch.
"""
from __future__ import annotations

from layerout.lazy import lazy_exports

# public name -> the module that defines it
_PUBLIC = {"UserError": "layerout.errors", "Freezer": "layerout.freezer", "Policy": "layerout.policy",
           "load_policy": "layerout.policy", "save_policy": "layerout.policy", "FreezeState": "layerout.schedules",
           "Schedule": "layerout.schedules", "schedule_from_dict": "layerout.schedules", "Unit": "layerout.units",
           "units_of": "layerout.units"}

__all__ = ["Freezer", "FreezeState", "Policy", "Schedule", "Unit", "UserError", "load_policy", "save_policy",
           "schedule_from_dict", "units_of"]


__getattr__, __dir__ = lazy_exports(__name__, _PUBLIC)
