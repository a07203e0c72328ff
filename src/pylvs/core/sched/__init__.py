"""Scheduler registry: each algorithm lives in its own module and registers itself by name."""

from __future__ import annotations

import importlib
import pkgutil

from pylvs.core.sched.base import Scheduler

_REGISTRY: dict[str, type[Scheduler]] = {}
_loaded = False  # not "registry empty": importing one scheduler module directly registers it early


def register(cls: type[Scheduler]) -> type[Scheduler]:
    """Class decorator: make a scheduler available under cls.name."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    _REGISTRY[cls.name] = cls
    return cls


def _load_all() -> None:
    # Import every module of this package once, so that dropping a file in is enough.
    global _loaded
    _loaded = True
    for info in pkgutil.iter_modules(__path__):
        if info.name != "base":
            importlib.import_module(f"{__name__}.{info.name}")


def get_scheduler(name: str) -> type[Scheduler] | None:
    if not _loaded:
        _load_all()
    return _REGISTRY.get(name)


def scheduler_names() -> list[str]:
    if not _loaded:
        _load_all()
    return sorted(_REGISTRY)
