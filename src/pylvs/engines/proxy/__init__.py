"""The proxy engine (the default): an asyncio L4 relay that needs nothing but sockets."""

from pylvs.engines.proxy.engine import ProxyEngine

ENGINE = ProxyEngine

__all__ = ["ENGINE", "ProxyEngine"]
