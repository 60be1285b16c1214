"""layerout: a plain PyTorch library for training under layer-freezing schedules (no Ray here).

    from layerout import load_policy
    freezer = load_policy("policy.json").attach(model, optimizer)
"""
from layerout.errors import UserError
from layerout.freezer import Freezer
from layerout.policy import Policy, load_policy, save_policy
from layerout.schedules import FreezeState, Schedule, schedule_from_dict
from layerout.units import Unit, units_of

__all__ = ["Freezer", "FreezeState", "Policy", "Schedule", "Unit", "UserError", "load_policy", "save_policy",
           "schedule_from_dict", "units_of"]
