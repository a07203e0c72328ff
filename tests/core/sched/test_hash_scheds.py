"""sh, dh and mh: bucket mappings for given addresses, fallback probing, and which mappings survive
a change to an unrelated server (exactly what the kernel's table rebuild keeps)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from pylvs.core.sched.base import SchedEnv
from pylvs.core.sched.dh import DestinationHashing
from pylvs.core.sched.hashing import fold, hash_32
from pylvs.core.sched.mh import TAB_SIZE as MH_SIZE
from pylvs.core.sched.mh import MaglevHashing, mh_hashkey
from pylvs.core.sched.sh import SourceHashing
from pylvs.core.service import VirtualService
from pylvs.core.types import DestConfig, Fwd, Proto, ServiceConfig, ServiceKey, SvcFlags

from ..helpers import director_with, ip, svc_of, syn


def pick(svc: VirtualService, client: str, cport: int = 40000, vip: str = "172.25.254.100") -> str:
    assert svc.scheduler is not None
    r = svc.scheduler.schedule(syn(client=client, cport=cport, vip=vip), SchedEnv())
    return str(r.addr) if r else "none"


def test_sh_spec_example() -> None:
    d, key = director_with("sh", [("192.168.1.10", 1), ("192.168.1.20", 1)])
    svc = svc_of(d, key)
    sched = svc.scheduler
    assert isinstance(sched, SourceHashing)
    assert [str(b.addr)[-2:] if b else "" for b in sched.buckets[:4]] == ["20", "10", "20", "10"]
    assert pick(svc, "172.25.254.1") == "192.168.1.10"  # H = 39


def test_sh_weights_fill_runs_of_buckets() -> None:
    d, key = director_with("sh", [("192.168.1.10", 3), ("192.168.1.20", 1), ("192.168.1.30", 0)])
    sched = svc_of(d, key).scheduler
    assert isinstance(sched, SourceHashing)
    names = [str(b.addr)[-2:] if b else "" for b in sched.buckets]
    # list .30 .20 .10: one bucket each for weight 0 and 1, three for weight 3, cyclically.
    assert names[:10] == ["30", "20", "10", "10", "10", "30", "20", "10", "10", "10"]
    d.add_dest(key, DestConfig(ip("192.168.1.40"), 80, Fwd.MASQ, 300))
    assert {b.addr for b in sched.buckets if b} == {ip("192.168.1.40")}


def test_sh_fallback_starts_at_twice_the_hash() -> None:
    # Buckets i % 4 -> .40 .30 .20 .10; .10 quiesced. H % 4 == 3 lands on .10; the kernel's probe
    # starts at 2H (even, -> .20) where a linear probe would reach .40. Oracle: sh-fallback-port.sim.
    servers = [(f"192.168.1.{s}", 1) for s in (10, 20, 30, 40)]
    d, key = director_with("sh", servers, flags=SvcFlags.SCHED1)
    d.edit_dest(key, DestConfig(ip("192.168.1.10"), 80, Fwd.MASQ, 0))
    svc = svc_of(d, key)
    for c in ("172.25.254.1", "172.25.254.3", "172.25.254.14"):
        assert hash_32(fold(ip(c)), 8) % 4 == 3
        assert pick(svc, c) == "192.168.1.20"
    d.edit_service(key, ServiceConfig("sh"))
    assert pick(svc, "172.25.254.1") == "none"


def test_sh_port_flag_changes_the_key() -> None:
    servers = [(f"192.168.1.{s}", 1) for s in (10, 20, 30, 40)]
    d, key = director_with("sh", servers, flags=SvcFlags.SCHED2)
    svc = svc_of(d, key)
    got = {pick(svc, "172.25.254.6", p) for p in range(40010, 40016)}
    assert len(got) > 1
    for p in range(40010, 40016):
        h = hash_32((p + fold(ip("172.25.254.6"))) & 0xFFFFFFFF, 8)
        sched = svc.scheduler
        assert isinstance(sched, SourceHashing)
        b = sched.buckets[h]
        assert b is not None and pick(svc, "172.25.254.6", p) == str(b.addr)


def test_dh_hashes_the_destination() -> None:
    key = ServiceKey.for_fwmark(5)
    d, key = director_with("dh", [(f"192.168.1.{s}", 1) for s in (10, 20, 30)], key=key)
    svc = svc_of(d, key)
    sched = svc.scheduler
    assert isinstance(sched, DestinationHashing)
    # bucket i -> list index i % 3 (list .30 .20 .10)
    for v in range(1, 9):
        vip = f"10.9.0.{v}"
        h = hash_32(fold(ip(vip)), 8)
        want = ["192.168.1.30", "192.168.1.20", "192.168.1.10"][h % 3]
        assert pick(svc, "172.25.254.10", vip=vip) == want


def test_mh_table_is_full_and_weighted() -> None:
    d, key = director_with("mh", [("192.168.1.10", 1), ("192.168.1.20", 2), ("192.168.1.30", 1)])
    sched = svc_of(d, key).scheduler
    assert isinstance(sched, MaglevHashing)
    counts: dict[str, int] = {}
    for b in sched.lookup:
        assert b is not None
        counts[str(b.addr)] = counts.get(str(b.addr), 0) + 1
    assert sum(counts.values()) == MH_SIZE
    assert counts["192.168.1.20"] > counts["192.168.1.10"] + 500


def test_mh_known_mappings() -> None:
    # From the oracle file mh-clients.sim: clients .1..12, servers .10 w1, .20 w2, .30 w1.
    d, key = director_with("mh", [("192.168.1.10", 1), ("192.168.1.20", 2), ("192.168.1.30", 1)])
    svc = svc_of(d, key)
    got = [pick(svc, f"172.25.254.{c}")[-2:] for c in range(1, 13)]
    assert got == ["30", "10", "20", "10", "20", "30", "20", "20", "10", "10", "10", "20"]
    assert mh_hashkey(ip("172.25.254.1"), 0, 2654435761, 0) % MH_SIZE == MaglevHashing.slot_of(
        svc.scheduler,  # type: ignore[arg-type]
        syn(client="172.25.254.1"),
    )


def test_mh_refuses_more_servers_than_slots() -> None:
    d, key = director_with("mh", [("10.0.0.1", 1)])
    svc = svc_of(d, key)
    sched = svc.scheduler
    assert isinstance(sched, MaglevHashing)
    before = list(sched.lookup)
    for i in range(MH_SIZE):  # the list grows past 4093 by direct insertion (cheap), then a rebuild
        svc.dests.insert(
            0, svc.dests[0].__class__(DestConfig(ip(f"10.1.{i // 250}.{i % 250 + 1}"), 80), svc, i + 10)
        )
    sched.upd_dest(svc.dests[0])
    assert sched.lookup == before


CLIENTS = [f"172.25.{a}.{b}" for a in (254, 1) for b in range(1, 40)]


def mapping(svc: VirtualService) -> list[str]:
    return [pick(svc, c) for c in CLIENTS]


@settings(max_examples=25, deadline=None)
@given(st.sampled_from(["sh", "dh", "mh"]), st.integers(2, 6), st.data())
def test_unrelated_quiesce_or_overload_keeps_mappings(sched: str, n: int, data: st.DataObject) -> None:
    """Quiescing (weight 0) or overloading server X never moves a client that was not on X:
    sh with all weights 1 keeps one bucket per server, dh ignores weights, mh keeps last_weight."""
    servers = [(f"192.168.1.{10 + i}", 1) for i in range(n)]
    d, key = director_with(sched, servers)
    svc = svc_of(d, key)
    before = mapping(svc)
    victim = svc.dests[data.draw(st.integers(0, n - 1))]
    if data.draw(st.booleans()):
        d.edit_dest(key, DestConfig(victim.addr, 80, Fwd.MASQ, 0))
    else:
        d.edit_dest(key, DestConfig(victim.addr, 80, Fwd.MASQ, 1, u_threshold=1))
        victim.bind_conn()
        assert victim.overload
    after = mapping(svc)
    for b, a in zip(before, after, strict=True):
        if b != str(victim.addr):
            assert a == b
        else:
            assert a == "none"


@settings(max_examples=15, deadline=None)
@given(st.integers(3, 6), st.data())
def test_mh_delete_moves_few_clients(n: int, data: st.DataObject) -> None:
    """Maglev's promise, as the kernel keeps it: deleting one server moves mostly its own clients."""
    d, key = director_with("mh", [(f"192.168.1.{10 + i}", 1) for i in range(n)])
    svc = svc_of(d, key)
    sched = svc.scheduler
    assert isinstance(sched, MaglevHashing)
    before = list(sched.lookup)
    victim = svc.dests[data.draw(st.integers(0, n - 1))]
    d.del_dest(key, victim.addr, 80)
    moved = sum(1 for b, a in zip(before, sched.lookup, strict=True) if b is not victim and a is not b)
    assert moved < MH_SIZE // 10


def test_sh_add_reshapes_exactly_as_rebuilt() -> None:
    """sh/dh/mh tables are a pure function of the list: incremental hooks equal a fresh init."""
    for sched in ("sh", "dh", "mh"):
        d, key = director_with(sched, [("192.168.1.10", 2), ("192.168.1.20", 1)])
        d.add_dest(key, DestConfig(ip("192.168.1.30"), 80, Fwd.MASQ, 3))
        d.edit_dest(key, DestConfig(ip("192.168.1.10"), 80, Fwd.MASQ, 0))
        d.del_dest(key, ip("192.168.1.20"), 80)
        svc = svc_of(d, key)
        fresh = type(svc.scheduler)(svc)
        assert mapping(svc) == [
            str(r.addr) if (r := fresh.schedule(syn(client=c), SchedEnv())) else "none" for c in CLIENTS
        ]


def test_ipv6_clients_fold_their_address() -> None:
    key = ServiceKey.for_addr(Proto.TCP, ip("2001:db8::100"), 80)
    d, key = director_with("sh", [("2001:db8:1::10", 1), ("2001:db8:1::20", 1)], key=key, netmask=128)
    svc = svc_of(d, key)
    sched = svc.scheduler
    assert isinstance(sched, SourceHashing)
    for c in ("2001:db8:5::1", "2001:db8:5::2", "fe80::1234"):
        h = hash_32(fold(ip(c)), 8)
        b = sched.buckets[h]
        assert b is not None and pick(svc, c, vip="2001:db8::100") == str(b.addr)


def test_sh_quiesce_reshapes_weighted_tables_like_the_kernel() -> None:
    """sh reads weights at rebuild time: quiescing a weight-2 server shrinks it to one bucket per
    round, so clients of *other* servers move too (the kernel is no more stable than this)."""
    d, key = director_with("sh", [("192.168.1.10", 2), ("192.168.1.20", 1), ("192.168.1.30", 1)])
    svc = svc_of(d, key)
    sched = svc.scheduler
    assert isinstance(sched, SourceHashing)
    before = list(sched.buckets)
    d.edit_dest(key, DestConfig(ip("192.168.1.10"), 80, Fwd.MASQ, 0))
    after = list(sched.buckets)
    moved_others = [
        i
        for i, (b, a) in enumerate(zip(before, after, strict=True))
        if b is not a and b is not None and str(b.addr) != "192.168.1.10"
    ]
    assert moved_others
    # 256 buckets, round of 4 then 3: .30 .20 .10 .10 | .30 .20 .10
    assert [str(b.addr)[-2:] for b in before[:8] if b] == ["30", "20", "10", "10", "30", "20", "10", "10"]
    assert [str(b.addr)[-2:] for b in after[:6] if b] == ["30", "20", "10", "30", "20", "10"]
