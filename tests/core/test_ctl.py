"""Rule editing: the kernel's checks, error messages and list order."""

from __future__ import annotations

import pytest

from pylvs.core.director import Director
from pylvs.core.errors import IPVSError
from pylvs.core.types import DestConfig, Fwd, ServiceConfig, ServiceKey

from .helpers import director_with, ip, tcp_svc


def test_add_duplicate_service() -> None:
    d = Director()
    d.add_service(tcp_svc(), ServiceConfig("rr"))
    with pytest.raises(IPVSError) as e:
        d.add_service(tcp_svc(), ServiceConfig("wlc"))
    assert e.value.message == "Service already exists"


def test_unknown_scheduler() -> None:
    with pytest.raises(IPVSError) as e:
        Director().add_service(tcp_svc(), ServiceConfig("bogus"))
    assert e.value.message == "Scheduler or persistence engine not found"


def test_missing_service_messages() -> None:
    d = Director()
    with pytest.raises(IPVSError) as e:
        d.add_dest(tcp_svc(), DestConfig(ip("192.168.1.10"), 80))
    assert e.value.message == "Service not defined"
    with pytest.raises(IPVSError) as e:
        d.del_service(tcp_svc())
    assert e.value.message == "No such service"


def test_dest_checks() -> None:
    d, key = director_with("rr", [("192.168.1.10", 1)])
    with pytest.raises(IPVSError) as e:
        d.add_dest(key, DestConfig(ip("192.168.1.10"), 80))
    assert e.value.message == "Destination already exists"
    with pytest.raises(IPVSError) as e:
        d.add_dest(key, DestConfig(ip("192.168.1.11"), 80, weight=-1))
    assert e.value.message == "Numerical result out of range"
    with pytest.raises(IPVSError) as e:
        d.add_dest(key, DestConfig(ip("192.168.1.11"), 80, l_threshold=5))
    assert e.value.message == "Numerical result out of range"
    with pytest.raises(IPVSError) as e:
        d.add_dest(key, DestConfig(ip("224.0.0.1"), 80))
    assert e.value.message.startswith("Invalid operation.  Possibly wrong module version")
    with pytest.raises(IPVSError) as e:
        d.edit_dest(key, DestConfig(ip("192.168.1.99"), 80))
    assert e.value.message == "No such destination"


def test_list_order_newest_first_and_edit_keeps_position() -> None:
    d, key = director_with("rr", [("10.0.0.1", 1), ("10.0.0.2", 1), ("10.0.0.3", 1)])
    svc = d.services.get(key)
    assert svc is not None
    assert [str(x.addr) for x in svc.dests] == ["10.0.0.3", "10.0.0.2", "10.0.0.1"]
    d.edit_dest(key, DestConfig(ip("10.0.0.2"), 80, Fwd.MASQ, 5))
    assert [x.weight for x in svc.dests] == [1, 5, 1]


def test_edit_replaces_every_field() -> None:
    d, key = director_with("rr", [("10.0.0.1", 3)])
    d.edit_dest(key, DestConfig(ip("10.0.0.1"), 80))
    svc = d.services.get(key)
    assert svc is not None
    assert (svc.dests[0].fwd, svc.dests[0].weight) == (Fwd.DROUTE, 1)


def test_deleted_server_is_resurrected_with_its_counters() -> None:
    d, key = director_with("rr", [("10.0.0.1", 1)])
    svc = d.services.get(key)
    assert svc is not None
    old = svc.dests[0]
    old.stats.conns = 7
    d.del_dest(key, ip("10.0.0.1"), 80)
    assert not old.available and old in d.services.trash
    again = d.add_dest(key, DestConfig(ip("10.0.0.1"), 80, Fwd.MASQ, 2))
    assert again is old and again.available and again.stats.conns == 7


def test_fwmark_and_ipv6_keys_are_distinct() -> None:
    d = Director()
    d.add_service(ServiceKey.for_fwmark(66), ServiceConfig("rr"))
    d.add_service(ServiceKey.for_fwmark(66, af=10), ServiceConfig("rr", netmask=128))
    assert len(d.services) == 2
    with pytest.raises(IPVSError):
        d.add_service(ServiceKey.for_fwmark(66), ServiceConfig("rr"))


def test_set_timeouts_zero_keeps() -> None:
    d = Director()
    d.set_timeouts(0, 60, 0)
    assert (d.timeouts.tcp, d.timeouts.tcpfin, d.timeouts.udp) == (900, 60, 300)
