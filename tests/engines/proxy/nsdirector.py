"""Run a Director and the proxy engine inside a lab namespace (started by nslab.Lab.director).

argv[1] is JSON: {"services": [{"tcp" | "udp": "ADDR:PORT" | "fwmark": N, "sched": "rr", "persistent": SECONDS,
"dests": [["ADDR", PORT, "fullnat" | "masq"], ...]}], "tproxy_port": PORT}. Prints READY, runs until
SIGTERM, then stops with a drain.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "src"))

import uvloop

from pylvs.core.director import Director
from pylvs.core.types import DestConfig, Fwd, Proto, ServiceConfig, ServiceKey, SvcFlags
from pylvs.engines.proxy import ProxyEngine

FWD = {"fullnat": Fwd.FULLNAT, "masq": Fwd.MASQ}


async def main(cfg: dict) -> None:  # type: ignore[type-arg]
    director = Director()
    for s in cfg["services"]:
        if "fwmark" in s:
            key = ServiceKey.for_fwmark(int(s["fwmark"]))
        else:
            proto = Proto.UDP if "udp" in s else Proto.TCP
            addr, port = s.get("udp", s.get("tcp", "")).rsplit(":", 1)
            key = ServiceKey.for_addr(proto, ipaddress.ip_address(addr), int(port))
        persist = int(s.get("persistent", 0))
        flags = SvcFlags.PERSISTENT if persist else SvcFlags.NONE
        director.add_service(key, ServiceConfig(scheduler=s.get("sched", "rr"), flags=flags, timeout=persist))
        for addr, port, fwd in s["dests"]:
            director.add_dest(key, DestConfig(ipaddress.ip_address(addr), int(port), fwd=FWD[fwd]))
    engine = ProxyEngine(director, asyncio.get_running_loop(), tproxy_port=int(cfg.get("tproxy_port", 9999)))
    await engine.start()
    print("READY", flush=True)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await engine.stop(drain=True)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    uvloop.run(main(json.loads(sys.argv[1])))
