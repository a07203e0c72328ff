"""`--save-counters yes`: keep the shown counters (conns, packets, bytes) across a restart.

Saved on stop next to the rules file (RULES.counters, JSON) and put back at start on the services and
real servers that still exist. Rates start from zero again; a missing or bad file is ignored.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from pylvs.core.stats import Stats
from pylvs.daemon import codec
from pylvs.daemon.rules import Rules
from pylvs.daemon.store import write_atomic

log = logging.getLogger("pylvsd")


def _set(stats: Stats, raw: Any) -> None:
    if not (isinstance(raw, list) and len(raw) == 5 and all(isinstance(v, int) and v >= 0 for v in raw)):
        return
    stats.conns, stats.inpkts, stats.outpkts, stats.inbytes, stats.outbytes = raw
    stats.base = (0, 0, 0, 0, 0)
    stats.last = stats.raw()  # the first estimator tick must not see the whole history as one burst


def save_counters(rules: Rules, path: Path) -> None:
    data: dict[str, Any] = {"total": list(rules.director.services.tot_stats.shown()), "services": {}}
    for svc in rules.director.services:
        data["services"][codec.service_id(svc.key)] = {
            "stats": list(svc.stats.shown()),
            "dests": {codec.hostport(d.addr, d.port): list(d.stats.shown()) for d in svc.dests},
        }
    try:
        write_atomic(path, json.dumps(data).encode())
    except OSError as e:
        log.error("could not save counters to %s: %s", path, e)


def restore_counters(rules: Rules, path: Path) -> None:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return
    except (OSError, ValueError) as e:
        log.warning("ignoring counters file %s: %s", path, e)
        return
    if not isinstance(data, dict) or not isinstance(data.get("services"), dict):
        log.warning("ignoring counters file %s: not a counters document", path)
        return
    _set(rules.director.services.tot_stats, data.get("total"))
    for svc in rules.director.services:
        saved = data["services"].get(codec.service_id(svc.key))
        if not isinstance(saved, dict):
            continue
        _set(svc.stats, saved.get("stats"))
        dests = saved.get("dests")
        if isinstance(dests, dict):
            for d in svc.dests:
                _set(d.stats, dests.get(codec.hostport(d.addr, d.port)))
