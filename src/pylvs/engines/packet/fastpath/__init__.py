"""The packet engine's kernel fast path (`pylvsd --engine fastpath`): see engine.py and docs/fastpath.md."""

from pylvs.engines.packet.fastpath.engine import FastPathEngine

ENGINE = FastPathEngine

__all__ = ["ENGINE", "FastPathEngine"]
