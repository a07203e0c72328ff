"""Engines move packets or bytes around the core; they decide nothing themselves.

Each engine is a module of this package exposing a class registered under its name; pylvsd picks one
with --engine NAME.
"""

from __future__ import annotations

import importlib

from pylvs.engines.base import Engine

ENGINE_MODULES = {
    "none": "pylvs.engines.none",
    "proxy": "pylvs.engines.proxy",
    "packet": "pylvs.engines.packet",
    "fastpath": "pylvs.engines.packet.fastpath",
}


def engine_names() -> list[str]:
    return list(ENGINE_MODULES)


def get_engine(name: str) -> type[Engine]:
    """The engine class for `name`; ValueError for an unknown or unavailable engine."""
    mod_name = ENGINE_MODULES.get(name)
    if mod_name is None:
        raise ValueError(f"unknown engine {name!r} (known: {', '.join(ENGINE_MODULES)})")
    try:
        mod = importlib.import_module(mod_name)
    except ImportError as e:
        raise ValueError(f"engine {name!r} is not available: {e}") from e
    cls: type[Engine] = mod.ENGINE
    return cls
