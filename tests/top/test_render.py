"""`pylvs top` without a terminal: what render() draws for a snapshot, and what keys do."""

from __future__ import annotations

import curses

from pylvs.cli.cmd_top import Frame, View, handle_key, render, visible
from pylvs.core.snapshot import DestView, ServiceView, Snapshot


def dest(addr: str, cps: int, active: int = 0, weight: int = 1, health: str = "") -> DestView:
    return DestView(
        addr,
        80,
        0,
        weight,
        0,
        0,
        active,
        0,
        0,
        rates=(cps, cps * 10, cps * 9, cps * 1000, cps * 9000),
        health=health,
    )


def service(addr: str, *dests: DestView) -> ServiceView:
    rates = tuple(sum(d.rates[i] for d in dests) for i in range(5))
    return ServiceView(2, 6, addr, 80, 0, "rr", 0, 0, 0xFFFFFFFF, "", dests, rates=rates)  # type: ignore[arg-type]


SNAP = Snapshot(
    services=(
        service("10.0.0.1", dest("10.1.0.1", 5), dest("10.1.0.2", 50, health="up")),
        service("10.0.0.2", dest("10.2.0.1", 500, active=7, health="down"), dest("10.2.0.2", 0)),
    ),
    rates=(555, 5550, 4995, 555000, 4995000),
)


def names(view: View) -> list[str]:
    return [f"{s.addr}>" + ",".join(d.addr for d in ds) for s, ds in visible(SNAP, view)]


def test_busiest_first_by_connections_per_second() -> None:
    assert names(View()) == ["10.0.0.2>10.2.0.1,10.2.0.2", "10.0.0.1>10.1.0.2,10.1.0.1"]
    assert names(View(reverse=True)) == ["10.0.0.1>10.1.0.1,10.1.0.2", "10.0.0.2>10.2.0.2,10.2.0.1"]
    assert names(View(sort="n")) == ["10.0.0.1>10.1.0.1,10.1.0.2", "10.0.0.2>10.2.0.1,10.2.0.2"]
    assert names(View(sort="a"))[0].startswith("10.0.0.2>10.2.0.1")


def test_filter_by_server_or_service() -> None:
    assert names(View(filter="10.1.0.2")) == ["10.0.0.1>10.1.0.2"]
    assert names(View(filter="tcp 10.0.0.2")) == ["10.0.0.2>10.2.0.1,10.2.0.2"]
    assert names(View(filter="nothing")) == []
    lines = render(Frame(snapshot=SNAP), View(filter="nothing"), 120, 40)
    assert "(nothing matches the filter)" in lines


def test_screen_has_rates_health_and_events() -> None:
    events = [
        {"seq": i, "time": 0, "kind": "edit_dest", "detail": f"change {i}", "source": "pylvsadm"}
        for i in range(8)
    ]
    lines = render(Frame(snapshot=SNAP, events=events, source="/run/x.sock"), View(), 140, 40)
    text = "\n".join(lines)
    assert lines[0].startswith("pylvs top  /run/x.sock") and "2 services, 4 real servers" in lines[0]
    first = lines.index(next(line for line in lines if line.startswith("TCP  10.0.0.2:80")))
    row = lines[first + 1].split()
    assert row[:7] == ["->", "10.2.0.1:80", "Masq", "1", "7", "0", "500"]
    assert row[-1] == "down" and "4.5M" in row  # 500 * 9000 bytes/s out
    assert "up" in lines[first + 4].split()
    assert "change 7" in text and "change 2" not in text  # the last five events


def test_fits_the_terminal() -> None:
    lines = render(Frame(snapshot=SNAP), View(), 40, 10)
    assert len(lines) <= 10 and all(len(line) <= 40 for line in lines)
    assert lines[-1].startswith("... ")


def test_error_is_shown() -> None:
    lines = render(Frame(error="cannot reach pylvsd on /x: No such file or directory"), View(), 100, 20)
    assert any(line.startswith("! cannot reach pylvsd") for line in lines)


def test_keys() -> None:
    v = View()
    assert handle_key(v, ord("n")) and v.sort == "n"
    assert handle_key(v, ord("r")) and v.reverse
    assert handle_key(v, ord("/")) and v.editing
    for ch in "10.1":
        handle_key(v, ord(ch))
    handle_key(v, curses.KEY_BACKSPACE)
    handle_key(v, ord("2"))
    handle_key(v, 10)
    assert (v.filter, v.editing) == ("10.2", False)
    handle_key(v, 27)
    assert v.filter == ""
    assert handle_key(v, ord("x"))  # unknown keys are ignored
    assert not handle_key(v, ord("q"))
