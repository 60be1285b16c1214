"""The unfrozen baseline as a search family: nothing to choose."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from layerout.schedules.none import UNFROZEN
from search_spaces.checks import Checker
from search_spaces.families.base import FamilySpace, SpaceContext, register_family


@register_family
@dataclass
class NoneSpace(FamilySpace):
    kind = UNFROZEN
    keys = ()

    @classmethod
    def parse(cls, check: Checker, fld: str, raw: dict, ctx: SpaceContext) -> "NoneSpace":
        return cls()

    def suggest(self, trial: Any, ctx: SpaceContext) -> dict[str, Any]:
        return {}

    @classmethod
    def schedule(cls, params: dict[str, Any], ctx: SpaceContext, space: FamilySpace | None) -> dict[str, Any]:
        return {"kind": UNFROZEN}
