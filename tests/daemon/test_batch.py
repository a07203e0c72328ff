"""The batch endpoint and client transactions: all changes or none."""

from __future__ import annotations

import ipaddress

import pytest

from pylvs.core.errors import IPVSError, Op
from pylvs.core.types import DestConfig, Fwd, Proto, ServiceConfig, ServiceKey
from pylvs.daemon.changes import Change
from pylvs.daemon.client import BatchRefused

from .conftest import Pylvsd


def key(i: int) -> ServiceKey:
    return ServiceKey.for_addr(Proto.TCP, ipaddress.ip_address(f"10.0.{i // 250}.{i % 250 + 1}"), 80)


def dest(i: int, j: int) -> DestConfig:
    return DestConfig(ipaddress.ip_address(f"192.168.{i % 250}.{j + 1}"), 8080, Fwd.MASQ, j + 1)


def changes(n: int, per: int) -> list[Change]:
    out = []
    for i in range(n):
        out.append(Change("add_service", key=key(i), svc=ServiceConfig("rr")))
        out += [Change("add_dest", key=key(i), dest=dest(i, j)) for j in range(per)]
    return out


def test_batch_applies_all(ephemeral: Pylvsd) -> None:
    b = ephemeral.backend()
    b.apply_changes(changes(20, 3))
    snap = b.snapshot()
    assert len(snap.services) == 20 and all(len(s.dests) == 3 for s in snap.services)
    ev = b.request("GET", "/events?limit=1")["events"][-1]
    assert ev["source"] == "pylvsadm"


def test_batch_refused_changes_nothing(ephemeral: Pylvsd) -> None:
    b = ephemeral.backend()
    b.apply_changes(changes(2, 1))
    before = b.snapshot()
    bad = [Change("flush"), *changes(5, 2)]
    bad.insert(7, Change("add_dest", key=key(99), dest=dest(0, 0)))  # no such service
    with pytest.raises(BatchRefused) as ei:
        b.apply_changes(bad, lines=list(range(100, 100 + len(bad))))
    e = ei.value
    assert (e.index, e.line, e.op, e.message) == (7, 107, Op.ADD_DEST, "Service not defined")
    assert b.snapshot() == before


def test_large_batch_with_leading_flush(ephemeral: Pylvsd) -> None:
    b = ephemeral.backend()
    b.apply_changes(changes(50, 2))
    b.apply_changes([Change("flush"), *changes(300, 4)])
    snap = b.snapshot()
    assert len(snap.services) == 300 and sum(len(s.dests) for s in snap.services) == 1200
    ev = b.request("GET", "/events?limit=1")["events"][-1]
    assert ev["kind"] == "batch" and "1501 changes" in ev["detail"]


def test_transaction_checks_each_call_locally(ephemeral: Pylvsd) -> None:
    b = ephemeral.backend()
    b.add_service(key(0), ServiceConfig("rr"))
    with pytest.raises(IPVSError, match="Service already exists"):
        with b.transaction(check_locally=True) as tx:
            tx.add_service(key(1), ServiceConfig("rr"))
            tx.add_service(key(0), ServiceConfig("rr"))  # refused at once, like the kernel would
    assert [s.key() for s in b.snapshot().services] == [key(0)]
    with b.transaction() as tx:
        tx.add_service(key(1), ServiceConfig("wlc"))
        tx.add_dest(key(1), dest(1, 0))
        assert len(tx.snapshot().services) == 2  # reads see the transaction's own changes
    assert len(b.snapshot().services) == 2


def test_transaction_without_local_check_names_the_line(ephemeral: Pylvsd) -> None:
    b = ephemeral.backend()
    tx = b.transaction(check_locally=False)
    for n, c in enumerate(changes(3, 1), start=1):
        tx.line = n
        if c.kind == "add_service":
            assert c.key is not None and c.svc is not None
            tx.add_service(c.key, c.svc)
        else:
            assert c.key is not None and c.dest is not None
            tx.add_dest(c.key, c.dest)
    tx.line = 42
    tx.del_service(key(77))
    with pytest.raises(BatchRefused) as ei:
        tx.commit()
    assert ei.value.line == 42 and ei.value.message == "No such service"
    assert b.snapshot().services == ()


def test_default_transaction_checks_in_the_daemon_and_reads_see_its_changes(ephemeral: Pylvsd) -> None:
    b = ephemeral.backend()
    b.add_service(key(0), ServiceConfig("rr"))
    tx = b.transaction()
    tx.line = 1
    tx.add_service(key(1), ServiceConfig("rr"))
    tx.line = 2
    tx.add_dest(key(1), dest(1, 0))
    assert [len(s.dests) for s in tx.snapshot().services] == [0, 1]  # a read plays what came before
    tx.line = 3
    tx.add_dest(key(2), dest(2, 0))  # no such service: recorded, reported at commit
    tx.line = 4
    tx.add_service(key(3), ServiceConfig("rr"))
    with pytest.raises(BatchRefused) as ei:
        tx.commit()
    assert (ei.value.line, ei.value.message) == (3, "Service not defined")
    assert [s.key() for s in b.snapshot().services] == [key(0)]
    tx2 = b.transaction()
    tx2.line = 7
    tx2.add_service(key(0), ServiceConfig("rr"))  # exists already: the daemon says so at commit
    with pytest.raises(BatchRefused) as ei:
        tx2.commit()
    assert (ei.value.index, ei.value.line, ei.value.message) == (0, 7, "Service already exists")
