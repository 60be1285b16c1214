"""Search-space families: one module per schedule kind, each saying how that family is searched
(its YAML ranges, how it asks Optuna for values, how values become a schedule dict).

To add a family: write ``search_spaces/families/<kind>.py`` (copy ``prefix.py``) and import it
below, next to its schedule (``layerout/schedules/<kind>.py``). Every schedule kind must have
exactly one search-space family and the reverse; this is checked when the package is imported.
"""
from layerout.schedules import SCHEDULES
from search_spaces.families.base import FAMILY_SPACES, FamilySpace, SpaceContext, r4, register_family
# One line per family (importing a module registers it), in the order error messages list them.
from search_spaces.families.none import NoneSpace
from search_spaces.families.layerout import VECTOR_FORMS, LayerOutSpace, auto_stages, even_stages
from search_spaces.families.freezeout import FreezeOutSpace
from search_spaces.families.prefix import PrefixSpace
from search_spaces.families.adaptive import AdaptiveSpace


def check_registries() -> None:
    """Raise ImportError unless schedule kinds and search-space families match one to one."""
    no_space = sorted(set(SCHEDULES) - set(FAMILY_SPACES))
    no_schedule = sorted(set(FAMILY_SPACES) - set(SCHEDULES))
    if no_space or no_schedule:
        raise ImportError(f"schedule kinds without a search-space family: {no_space or 'none'}; search-space "
                          f"families without a schedule: {no_schedule or 'none'} (see search_spaces/families/)")


check_registries()

__all__ = ["FAMILY_SPACES", "FamilySpace", "SpaceContext", "r4", "register_family", "NoneSpace", "LayerOutSpace",
           "VECTOR_FORMS", "auto_stages", "even_stages", "FreezeOutSpace", "PrefixSpace", "AdaptiveSpace",
           "check_registries"]
