"""pylvs.health: keepalived.conf and health checkers (see docs/health.md).

    from pylvs.health import load_config, HealthManager
    cfg = load_config("keepalived.conf")          # ConfigError(file, line, reason) when refused
    mgr = HealthManager(backend, cfg, time.time, on_event)
    await mgr.start(); ...; mgr.apply_config(load_config(...)); ...; await mgr.stop()
"""

from pylvs.health.config import ConfigError, KeepalivedConfig, load_config
from pylvs.health.manager import HealthEvent, HealthManager

__all__ = ["ConfigError", "HealthEvent", "HealthManager", "KeepalivedConfig", "load_config"]
