"""mh cannot take more real servers than its 4093-slot table (ip_vs_mh_init_svc refuses with EINVAL).

Checked on the real kernel: tests/data/oracle/sip/sip.out, sections "mh limit: ..." (sip.sh)."""

from __future__ import annotations

import errno

import pytest

from pylvs.core.director import Director
from pylvs.core.errors import IPVSError
from pylvs.core.sched.mh import TAB_SIZE
from pylvs.core.types import DestConfig, Fwd, Proto, ServiceConfig, ServiceKey, SvcFlags

from .helpers import ip


def director_with_servers(n: int) -> tuple[Director, ServiceKey]:
    d = Director()
    key = ServiceKey.for_addr(Proto.TCP, ip("10.9.9.9"), 80)
    d.add_service(key, ServiceConfig("rr"))
    for i in range(1, n + 1):
        d.add_dest(key, DestConfig(ip(f"10.8.{i // 256}.{i % 256}"), 80, Fwd.MASQ, 1))
    return d, key


def test_edit_to_mh_with_too_many_servers_fails_and_changes_nothing() -> None:
    d, key = director_with_servers(TAB_SIZE + 1)
    svc = d.services.get(key)
    assert svc is not None
    before = svc.scheduler
    with pytest.raises(IPVSError) as exc:
        d.edit_service(key, ServiceConfig("mh", SvcFlags.PERSISTENT, 100))
    assert exc.value.errno == errno.EINVAL
    assert exc.value.message == "Invalid operation.  Possibly wrong module version, address not unicast, ..."
    # the kernel binds the new scheduler before unbinding the old: the service is untouched
    assert svc.scheduler is before and svc.scheduler_name == "rr"
    assert not svc.flags & SvcFlags.PERSISTENT
    # one server fewer and it fits
    d.del_dest(key, ip("10.8.0.1"), 80)
    d.edit_service(key, ServiceConfig("mh"))
    assert svc.scheduler_name == "mh"


def test_adding_beyond_the_table_to_an_mh_service_is_accepted() -> None:
    d, key = director_with_servers(TAB_SIZE)
    d.edit_service(key, ServiceConfig("mh"))  # one table set-up, not one per server added
    svc = d.services.get(key)
    assert svc is not None and svc.scheduler is not None
    table = list(svc.scheduler.lookup)  # type: ignore[attr-defined]
    d.add_dest(key, DestConfig(ip("10.8.255.255"), 80, Fwd.MASQ, 1))  # the kernel says nothing
    assert len(svc.dests) == TAB_SIZE + 1
    assert svc.scheduler.lookup == table  # type: ignore[attr-defined]  # and keeps its table
