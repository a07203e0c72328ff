"""The `none` engine: keeps state, forwards nothing (dry runs, config checks, tests)."""

from __future__ import annotations

from pylvs.engines.base import Engine


class NoneEngine(Engine):
    name = "none"


ENGINE = NoneEngine
