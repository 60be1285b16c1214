"""Freezing schedules: small pure objects mapping (epoch, step) to a FreezeState.

One module per family, each registering its ``Schedule`` subclass with ``@register_schedule``
when it is imported. To add a family: write ``layerout/schedules/<kind>.py`` (copy ``prefix.py``,
the smallest) and import it below; ``schedule_from_dict``, policy files and
``python -m layerout.train`` (its flags come from the class's ``flags``) then know it. A search
space also needs its search-space family (``search_spaces/families/<kind>.py``).
"""
from layerout.schedules.base import SCHEDULES, Flag, FreezeState, Schedule, register_schedule, schedule_from_dict
# The families, in the order --help and the docs list them (importing a module registers it).
from layerout.schedules.none import NoFreezeSchedule
from layerout.schedules.layerout import LayerOutSchedule, V_MODES, paper_vectors, ramp_vector, stage_vector
from layerout.schedules.freezeout import SCALES, FreezeOutSchedule, cosine_factor, freezeout_fractions
from layerout.schedules.prefix import PrefixSchedule
from layerout.schedules.adaptive import THRESHOLD_MODES, AdaptiveSchedule, relative_change

__all__ = ["SCHEDULES", "Flag", "FreezeState", "Schedule", "register_schedule", "schedule_from_dict",
           "NoFreezeSchedule", "LayerOutSchedule", "V_MODES", "paper_vectors", "ramp_vector", "stage_vector",
           "FreezeOutSchedule", "SCALES", "cosine_factor", "freezeout_fractions", "PrefixSchedule",
           "AdaptiveSchedule", "THRESHOLD_MODES", "relative_change"]
