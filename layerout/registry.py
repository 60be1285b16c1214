"""``Registry``: name -> entry, filled as modules are imported. The freezing schedules, their
search-space families, the built-in datasets and the search's schedulers are each one.

Hand-written rather than taken from a library: a dict that refuses a second, different entry
under a name is all four need, and this module must import neither torch nor Ray (the command
lines list the names before importing them).
"""
from __future__ import annotations

import importlib
from typing import Callable, TypeVar

T = TypeVar("T")


class Registry(dict):
    """A dict of registered entries, in registration order (the order ``--help`` and errors list
    them). ``what`` names an entry in errors ("schedule kind")."""

    def __init__(self, what: str) -> None:
        super().__init__()
        self.what = what

    def add(self, name: str, entry: T) -> T:
        """Register ``entry`` under ``name``; the same entry again is a no-op (a module imported twice)."""
        if not name or name in self and self[name] is not entry:
            raise ValueError(f"{self.what} {name!r} is empty or registered twice")
        self[name] = entry
        return entry

    def by(self, attr: str) -> Callable[[T], T]:
        """A class decorator registering a class under its attribute ``attr`` (e.g. ``kind``)."""
        def register(cls: T) -> T:
            return self.add(getattr(cls, attr), cls)
        return register

    def named(self, name: str) -> Callable[[T], T]:
        """A decorator registering a function or class under ``name``."""
        def register(entry: T) -> T:
            return self.add(name, entry)
        return register

    def names(self) -> str:
        """The names, comma-separated, for errors and help."""
        return ", ".join(self)


def resolved(entry: T | str) -> T:
    """An entry given as an import path ``module:name`` (so that a registry is read without
    importing what it names), imported now; any other entry as it is."""
    if not isinstance(entry, str):
        return entry
    module, _, attr = entry.partition(":")
    return getattr(importlib.import_module(module), attr)
