"""HealthManager with real backends on loopback: removal and return, quorum and sorry server, inhibit,
alpha, dynamic weights, scripts, reloads, and the state view."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from pathlib import Path

from pylvs.core.director import Director, take_snapshot
from pylvs.health.config import load_config
from pylvs.health.manager import HealthEvent, HealthManager
from tests.support import free_port

from .servers import TcpBackend

VIP = "127.0.0.1"


def dests(d: Director) -> dict[str, int]:
    """real server -> weight, over every service."""
    out = {}
    for s in take_snapshot(d).services:
        for x in s.dests:
            out[f"{x.addr}:{x.port}"] = x.weight
    return out


async def wait_until(pred: Callable[[], bool], timeout: float) -> float:
    """Seconds until pred() holds; raises AssertionError after `timeout`."""
    t0 = time.monotonic()
    while not pred():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(0.02)
    return time.monotonic() - t0


def conf(tmp_path: Path, body: str, vport: int = 80) -> Path:
    p = tmp_path / "keepalived.conf"
    p.write_text(f"virtual_server {VIP} {vport} {{\n protocol TCP\n lb_algo rr\n lb_kind NAT\n{body}\n}}\n")
    return p


def tcp_rs(addr: str, port: int, extra: str = "", check: str = "") -> str:
    return f"""
 real_server {addr} {port} {{
  weight 1
  {extra}
  TCP_CHECK {{
   connect_timeout 0.5
   retry 0
   {check}
  }}
 }}"""


TIMING = " delay_loop 0.5\n warmup 0\n"
SLACK = 0.4  # event-loop scheduling on a loaded 2-core machine


def test_stopped_backend_leaves_within_delay_loop_plus_timeout_and_returns(tmp_path: Path) -> None:
    p1, p2 = free_port("127.0.0.2"), free_port("127.0.0.3")
    path = conf(tmp_path, TIMING + tcp_rs("127.0.0.2", p1) + tcp_rs("127.0.0.3", p2))
    events: list[HealthEvent] = []

    async def go() -> None:
        b1 = await TcpBackend("127.0.0.2", p1).start()
        b2 = await TcpBackend("127.0.0.3", p2).start()
        d = Director()
        m = HealthManager(d, load_config(str(path)), on_event=events.append)
        await m.start()
        try:
            assert dests(d) == {f"127.0.0.2:{p1}": 1, f"127.0.0.3:{p2}": 1}
            await asyncio.sleep(0.7)  # a round of checks
            await b1.stop()
            took = await wait_until(lambda: f"127.0.0.2:{p1}" not in dests(d), 3)
            assert took <= 0.5 + 0.5 + SLACK  # delay_loop + connect_timeout
            assert dests(d) == {f"127.0.0.3:{p2}": 1}
            b1 = await TcpBackend("127.0.0.2", p1).start()
            took = await wait_until(lambda: f"127.0.0.2:{p1}" in dests(d), 3)
            assert took <= 0.5 + SLACK  # delay_loop
            view = {rs.addr: rs for vs in m.state() for rs in vs.real_servers}
            assert view["127.0.0.2"].up and view["127.0.0.2"].checkers[0].last_ok
        finally:
            await m.stop()
            await b1.stop()
            await b2.stop()
        assert take_snapshot(d).services == ()  # stop() removes what it added

    asyncio.run(go())
    kinds = [(e.kind, e.rs) for e in events if e.kind in ("up", "down")]
    assert kinds == [("down", f"127.0.0.2:{p1}"), ("up", f"127.0.0.2:{p1}")]
    down = next(e for e in events if e.kind == "down")
    assert "refused" in down.reason.lower() and down.vs == f"{VIP}:80"


def test_retry_delays_the_verdict(tmp_path: Path) -> None:
    port = free_port("127.0.0.2")
    path = conf(
        tmp_path, TIMING + tcp_rs("127.0.0.2", port).replace("retry 0", "retry 2\n   delay_before_retry 0.3")
    )

    async def go() -> float:
        d = Director()
        m = HealthManager(d, load_config(str(path)))
        await m.start()  # nothing listens: first failure, then two retries 0.3 s apart
        try:
            return await wait_until(lambda: dests(d) == {}, 3)
        finally:
            await m.stop()

    took = asyncio.run(go())
    assert 0.55 <= took <= 1.2


def test_inhibit_on_failure_sets_weight_zero(tmp_path: Path) -> None:
    port = free_port("127.0.0.2")
    path = conf(tmp_path, TIMING + tcp_rs("127.0.0.2", port, "inhibit_on_failure\n  weight 5"))

    async def go() -> None:
        d = Director()
        m = HealthManager(d, load_config(str(path)))
        await m.start()
        try:
            assert dests(d) == {f"127.0.0.2:{port}": 5}
            await wait_until(lambda: dests(d) == {f"127.0.0.2:{port}": 0}, 2)
            b = await TcpBackend("127.0.0.2", port).start()
            await wait_until(lambda: dests(d) == {f"127.0.0.2:{port}": 5}, 2)
            assert m.dest_health()[(take_snapshot(d).services[0].key(), "127.0.0.2", port)] == "up"
            await b.stop()
        finally:
            await m.stop()

    asyncio.run(go())


def test_alpha_starts_down_until_checked(tmp_path: Path) -> None:
    port = free_port("127.0.0.2")
    path = conf(tmp_path, " alpha\n delay_loop 0.3\n warmup 0.2\n" + tcp_rs("127.0.0.2", port))

    async def go() -> None:
        b = await TcpBackend("127.0.0.2", port).start()
        d = Director()
        m = HealthManager(d, load_config(str(path)))
        await m.start()
        try:
            assert dests(d) == {}
            await wait_until(lambda: dests(d) == {f"127.0.0.2:{port}": 1}, 2)
        finally:
            await m.stop()
            await b.stop()

    asyncio.run(go())


def test_quorum_loss_switches_to_sorry_server_and_back(tmp_path: Path) -> None:
    p1, p2, ps = free_port("127.0.0.2"), free_port("127.0.0.3"), free_port("127.0.0.9")
    marks = tmp_path / "marks"
    marks.mkdir()
    body = (
        TIMING
        + " quorum 2\n"
        + f" sorry_server 127.0.0.9 {ps}\n"
        + f" quorum_down \"/bin/sh -c 'touch {marks}/qdown'\"\n"
        + f" quorum_up \"/bin/sh -c 'touch {marks}/qup'\"\n"
        + tcp_rs(
            "127.0.0.2",
            p1,
            f"notify_down \"/bin/sh -c 'touch {marks}/down1'\"\n  notify_up \"/bin/sh -c 'touch {marks}/up1'\"",
        )
        + tcp_rs("127.0.0.3", p2)
    )
    path = conf(tmp_path, body)
    events: list[HealthEvent] = []

    async def go() -> None:
        b1 = await TcpBackend("127.0.0.2", p1).start()
        b2 = await TcpBackend("127.0.0.3", p2).start()
        d = Director()
        m = HealthManager(d, load_config(str(path)), on_event=events.append)
        await m.start()
        both = {f"127.0.0.2:{p1}": 1, f"127.0.0.3:{p2}": 1}
        try:
            assert dests(d) == both
            await b1.stop()
            await wait_until(lambda: dests(d) == {f"127.0.0.9:{ps}": 1}, 3)
            (vs,) = m.state()
            assert not vs.quorum_up and vs.sorry_active and vs.live_weight == 1
            b1 = await TcpBackend("127.0.0.2", p1).start()
            await wait_until(lambda: dests(d) == both, 3)
            await wait_until(lambda: len(os.listdir(marks)) == 4, 3)
        finally:
            await m.stop()
            await b1.stop()
            await b2.stop()

    asyncio.run(go())
    assert sorted(os.listdir(marks)) == ["down1", "qdown", "qup", "up1"]
    kinds = [e.kind for e in events]
    assert kinds == ["down", "quorum-lost", "up", "quorum-gained"], kinds


def test_misc_dynamic_weight_reaches_the_table(tmp_path: Path) -> None:
    state = tmp_path / "code"
    state.write_text("12")
    script = tmp_path / "check.sh"
    script.write_text(f'#!/bin/sh\nexit "$(cat {state})"\n')
    script.chmod(0o755)
    path = conf(
        tmp_path,
        TIMING
        + f""" real_server 127.0.0.2 80 {{
  weight 5
  MISC_CHECK {{
   misc_path {script}
   misc_dynamic
  }}
 }}""",
    )

    async def go() -> None:
        d = Director()
        m = HealthManager(d, load_config(str(path)))
        await m.start()
        try:
            await wait_until(lambda: dests(d) == {"127.0.0.2:80": 10}, 3)
            state.write_text("1")
            await wait_until(lambda: dests(d) == {}, 3)
            state.write_text("0")  # alive again, dynamic weight forgotten: the configured one
            await wait_until(lambda: dests(d) == {"127.0.0.2:80": 5}, 3)
        finally:
            await m.stop()

    asyncio.run(go())


def test_apply_config_keeps_state_of_servers_that_stay(tmp_path: Path) -> None:
    p1, p2 = free_port("127.0.0.2"), free_port("127.0.0.3")
    path = conf(tmp_path, TIMING + tcp_rs("127.0.0.2", p1) + tcp_rs("127.0.0.3", p2))
    events: list[HealthEvent] = []

    async def go() -> None:
        b2 = await TcpBackend("127.0.0.3", p2).start()
        d = Director()
        m = HealthManager(d, load_config(str(path)), on_event=events.append)
        await m.start()
        try:
            await wait_until(lambda: dests(d) == {f"127.0.0.3:{p2}": 1}, 3)
            # the new file drops nothing that is down, adds a second service, changes the scheduler
            new = tmp_path / "new.conf"
            new.write_text(
                path.read_text().replace("lb_algo rr", "lb_algo wrr")
                + f"virtual_server {VIP} 81 {{\n protocol TCP\n real_server 127.0.0.3 {p2} {{\n }}\n}}\n"
            )
            m.apply_config(load_config(str(new)))
            snap = take_snapshot(d)
            assert [(s.port, s.scheduler) for s in snap.services] == [(80, "wrr"), (81, "wlc")]
            assert dests(d) == {f"127.0.0.3:{p2}": 1}  # 127.0.0.2 stayed down: not re-added
            await asyncio.sleep(0.8)
            assert dests(d) == {f"127.0.0.3:{p2}": 1}
            m.apply_config(load_config(str(path)))  # back: port 81 goes away
            assert [s.port for s in take_snapshot(d).services] == [80]
        finally:
            await m.stop()
            await b2.stop()

    asyncio.run(go())
    assert [e.kind for e in events].count("reload") == 2
    assert [e.kind for e in events].count("down") == 1


def test_ha_suspend_without_the_vip_stops_checking(tmp_path: Path) -> None:
    port = free_port("127.0.0.2")
    p = tmp_path / "k.conf"
    # 192.0.2.1 is not on this host: the bind test says so, no packet is sent to it
    p.write_text(
        "virtual_server 192.0.2.1 80 {\n protocol TCP\n ha_suspend\n"
        + TIMING
        + tcp_rs("127.0.0.2", port)
        + "\n}\n"
    )
    events: list[HealthEvent] = []

    async def go() -> None:
        d = Director()
        m = HealthManager(d, load_config(str(p)), on_event=events.append)
        await m.start()
        try:
            await asyncio.sleep(0.8)
            assert dests(d) == {f"127.0.0.2:{port}": 1}  # never checked, so never removed
        finally:
            await m.stop()

    asyncio.run(go())
    assert [e.kind for e in events] == ["suspended"]


def test_backend_refusal_becomes_an_error_event(tmp_path: Path) -> None:
    path = conf(tmp_path, " real_server 127.0.0.2 80 {\n }\n")
    events: list[HealthEvent] = []

    async def go() -> None:
        d = Director()
        cfg = load_config(str(path))
        cfg.virtual_servers[0].scheduler = "nosuch"  # the core refuses an unknown scheduler
        m = HealthManager(d, cfg, on_event=events.append)
        await m.start()
        await m.stop()

    asyncio.run(go())
    assert any(e.kind == "error" for e in events)


def test_global_lvs_timeouts_and_omega_scripts(tmp_path: Path) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    p = tmp_path / "k.conf"
    p.write_text(
        "global_defs {\n lvs_timeouts tcp 600 udp 30\n}\n"
        f"virtual_server {VIP} 80 {{\n protocol TCP\n omega\n"
        f" quorum_down \"/bin/sh -c 'touch {marks}/qdown'\"\n"
        f" real_server 127.0.0.2 80 {{\n  notify_down \"/bin/sh -c 'touch {marks}/down'\"\n }}\n}}\n"
    )

    async def go() -> Director:
        d = Director()
        m = HealthManager(d, load_config(str(p)))
        await m.start()
        await m.stop()
        return d

    d = asyncio.run(go())
    assert (d.timeouts.tcp, d.timeouts.tcpfin, d.timeouts.udp) == (600, 120, 30)
    assert sorted(os.listdir(marks)) == ["down", "qdown"]


def test_servers_changed_by_hand_are_brought_back_in_line(tmp_path: Path) -> None:
    import ipaddress

    from pylvs.core.types import DestConfig, Fwd

    port = free_port("127.0.0.2")
    path = conf(tmp_path, TIMING + tcp_rs("127.0.0.2", port, "weight 4"))
    events: list[HealthEvent] = []

    async def go() -> None:
        b = await TcpBackend("127.0.0.2", port).start()
        d = Director()
        m = HealthManager(d, load_config(str(path)), on_event=events.append)
        await m.start()
        try:
            key = take_snapshot(d).services[0].key()
            d.del_dest(key, ipaddress.ip_address("127.0.0.2"), port)  # an operator removes it
            await b.stop()
            await wait_until(lambda: any(e.kind == "down" for e in events), 3)
            d.add_dest(
                key, DestConfig(ipaddress.ip_address("127.0.0.2"), port, Fwd.MASQ, 9)
            )  # and adds it back
            b = await TcpBackend("127.0.0.2", port).start()
            await wait_until(lambda: dests(d) == {f"127.0.0.2:{port}": 4}, 3)
        finally:
            await m.stop()
            await b.stop()

    asyncio.run(go())
    assert not [e for e in events if e.kind == "error"]


def test_sorry_server_inhibit_keeps_it_at_weight_zero(tmp_path: Path) -> None:
    path = conf(
        tmp_path, " sorry_server 127.0.0.9 80\n sorry_server_inhibit\n real_server 127.0.0.2 80 {\n }\n"
    )

    async def go() -> dict[str, int]:
        d = Director()
        m = HealthManager(d, load_config(str(path)))
        await m.start(checks=False)
        return dests(d)

    assert asyncio.run(go()) == {"127.0.0.2:80": 1, "127.0.0.9:80": 0}
