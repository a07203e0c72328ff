"""pylvsd's control API through DaemonBackend and raw requests (engine none, no rules file)."""

from __future__ import annotations

import ipaddress
import os
import stat

import pytest

from pylvs.core.errors import IPVSError, Op
from pylvs.core.snapshot import DaemonView
from pylvs.core.types import DestConfig, Fwd, Proto, ServiceConfig, ServiceKey, SvcFlags
from pylvs.daemon.client import DaemonBackend, DaemonError, DaemonUnavailable
from tests.support import free_port

from .conftest import Pylvsd

VIP = ipaddress.ip_address("172.25.254.100")
KEY = ServiceKey.for_addr(Proto.TCP, VIP, 80)
RS1 = DestConfig(ipaddress.ip_address("192.168.1.10"), 80, Fwd.MASQ, 1)
RS2 = DestConfig(ipaddress.ip_address("192.168.1.20"), 80, Fwd.MASQ, 2)


def test_socket_is_mode_0600(ephemeral: Pylvsd) -> None:
    st = os.stat(ephemeral.socket)
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o600


def test_services_and_servers_round_trip(ephemeral: Pylvsd) -> None:
    b = ephemeral.backend()
    b.add_service(KEY, ServiceConfig("rr"))
    b.add_dest(KEY, RS1)
    b.add_dest(KEY, RS2)
    snap = b.snapshot()
    (svc,) = snap.services
    assert svc.key() == KEY and svc.scheduler == "rr"
    # the kernel's list order: newest first
    assert [d.addr for d in svc.dests] == ["192.168.1.20", "192.168.1.10"]
    b.edit_dest(KEY, DestConfig(RS1.addr, 80, Fwd.MASQ, 5))
    b.edit_service(KEY, ServiceConfig("wlc", SvcFlags.PERSISTENT, 360))
    svc = b.snapshot().services[0]
    assert svc.scheduler == "wlc" and svc.timeout == 360
    assert {d.addr: d.weight for d in svc.dests} == {"192.168.1.10": 5, "192.168.1.20": 2}
    b.del_dest(KEY, RS2.addr, 80)
    assert [d.addr for d in b.snapshot().services[0].dests] == ["192.168.1.10"]
    b.zero(KEY)
    b.zero(None)
    b.del_service(KEY)
    assert b.snapshot().services == ()


def test_fwmark_and_ipv6_services(ephemeral: Pylvsd) -> None:
    b = ephemeral.backend()
    fwm = ServiceKey.for_fwmark(66)
    fwm6 = ServiceKey.for_fwmark(66, 10)
    v6 = ServiceKey.for_addr(Proto.UDP, ipaddress.ip_address("2001:db8::1"), 53)
    b.add_service(fwm, ServiceConfig("rr"))
    b.add_service(fwm6, ServiceConfig("rr", netmask=128))
    b.add_service(v6, ServiceConfig("rr", netmask=128))
    b.add_dest(v6, DestConfig(ipaddress.ip_address("2001:db8::10"), 53, Fwd.MASQ))
    b.add_dest(fwm, RS1)
    b.edit_dest(v6, DestConfig(ipaddress.ip_address("2001:db8::10"), 53, Fwd.MASQ, 7))
    keys = {s.key() for s in b.snapshot().services}
    assert keys == {fwm, fwm6, v6}
    b.del_dest(v6, ipaddress.ip_address("2001:db8::10"), 53)
    b.del_service(fwm6)
    b.flush()
    assert b.snapshot().services == ()


@pytest.mark.parametrize(
    ("call", "op", "message"),
    [
        (lambda b: b.del_service(KEY), Op.DEL_SERVICE, "No such service"),
        (lambda b: b.edit_service(KEY, ServiceConfig("rr")), Op.EDIT_SERVICE, "No such service"),
        (lambda b: b.add_dest(KEY, RS1), Op.ADD_DEST, "Service not defined"),
        (lambda b: b.zero(KEY), Op.ZERO, "No such service"),
        (
            lambda b: b.add_service(ServiceKey.for_fwmark(1), ServiceConfig("nosuch")),
            Op.ADD_SERVICE,
            "Scheduler or persistence engine not found",
        ),
        (lambda b: b.stop_daemon("master", 0), Op.STOP_DAEMON, "No daemon is running"),
    ],
)
def test_refusals_carry_ipvsadm_messages(ephemeral: Pylvsd, call, op: Op, message: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(IPVSError) as ei:
        call(ephemeral.backend())
    assert ei.value.op == op and ei.value.message == message


def test_existing_things_refused(ephemeral: Pylvsd) -> None:
    b = ephemeral.backend()
    b.add_service(KEY, ServiceConfig("rr"))
    b.add_dest(KEY, RS1)
    with pytest.raises(IPVSError, match="Service already exists"):
        b.add_service(KEY, ServiceConfig("rr"))
    with pytest.raises(IPVSError, match="Destination already exists"):
        b.add_dest(KEY, RS1)
    with pytest.raises(IPVSError, match="No such destination"):
        b.del_dest(KEY, RS2.addr, 80)
    with pytest.raises(IPVSError) as ei:
        b.add_dest(KEY, DestConfig(RS2.addr, 80, Fwd.MASQ, -1))
    assert ei.value.message == "Numerical result out of range"
    assert len(b.snapshot().services[0].dests) == 1


def test_timeouts_and_sync_daemons(ephemeral: Pylvsd) -> None:
    b = ephemeral.backend()
    b.set_timeouts(100, 0, 50)
    assert b.snapshot().timeouts == (100, 120, 50)
    b.start_daemon(DaemonView("master", "lo", 7))
    with pytest.raises(IPVSError, match="Daemon has already run"):
        b.start_daemon(DaemonView("master", "lo", 7))
    with pytest.raises(IPVSError) as ei:
        b.start_daemon(DaemonView("backup", "nosuchif0", 7))
    assert ei.value.message == "No such device"
    (d,) = b.snapshot().daemons
    assert (d.state, d.mcast_ifn, d.syncid, d.maxlen, d.group, d.port, d.ttl) == (
        "master",
        "lo",
        7,
        1472,
        "224.0.0.81",
        8848,
        1,
    )
    b.stop_daemon("master", 7)
    assert b.snapshot().daemons == ()


def test_connections_empty_list(ephemeral: Pylvsd) -> None:
    assert ephemeral.backend().connections() == []


def test_unavailable_socket(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(DaemonUnavailable) as ei:
        DaemonBackend(str(tmp_path / "nope.sock")).snapshot()
    assert "nope.sock" in str(ei.value)


def test_openapi_document_served(ephemeral: Pylvsd) -> None:
    doc = ephemeral.backend().request("GET", "/openapi.json")
    assert doc["openapi"].startswith("3.")
    for path in ("/services", "/services/{sid}/dests", "/batch", "/snapshot", "/events", "/timeouts"):
        assert path in doc["paths"]


def test_events_logged_with_source(ephemeral: Pylvsd) -> None:
    b = ephemeral.backend()
    b.add_service(KEY, ServiceConfig("rr"))
    api = DaemonBackend(ephemeral.socket, source="api")
    api.add_dest(KEY, RS1)
    evs = b.request("GET", "/events")["events"]
    kinds = [(e["kind"], e["source"]) for e in evs]
    assert ("add_service", "pylvsadm") in kinds and ("add_dest", "api") in kinds
    since = evs[-1]["seq"]
    assert b.request("GET", f"/events?since={since}")["events"] == []


def test_bad_requests_are_4xx_json_and_change_nothing(ephemeral: Pylvsd) -> None:
    b = ephemeral.backend()
    b.add_service(KEY, ServiceConfig("rr"))
    before = b.snapshot()
    bad = [
        ("POST", "/services", {"service": {"protocol": "tcp", "addr": "1.2.3.4", "port": 70000}}),
        ("POST", "/services", {"service": {"protocol": "icmp", "addr": "1.2.3.4", "port": 1}}),
        ("POST", "/services", {"service": {"protocol": "tcp", "addr": "1.2.3.4", "port": 1}, "x": 1}),
        ("POST", "/services", [1, 2]),
        ("POST", "/services/tcp:172.25.254.100:80/dests", {"addr": "nonsense", "port": 80}),
        ("POST", "/services/tcp:172.25.254.100:80/dests", {"addr": "1.1.1.1", "port": 80, "fwd": 9}),
        ("POST", "/services/tcp:172.25.254.100:80/dests", {"addr": "1.1.1.1", "port": True}),
        ("PUT", "/services/garbage", {"config": {}}),
        ("DELETE", "/services/tcp:1.2.3.4:99999", None),
        ("PUT", "/timeouts", {"tcp": -1, "tcpfin": 0, "udp": 0}),
        ("POST", "/batch", {"changes": [{"op": "flush"}, {"op": "explode"}]}),
        ("POST", "/batch", {"changes": "no"}),
        ("POST", "/daemons", {"state": "slave"}),
        ("DELETE", "/daemons/slave", None),
        ("GET", "/events?since=-1", None),
        ("GET", "/no/such/path", None),
        ("PATCH", "/services", None),
    ]
    for method, path, body in bad:
        with pytest.raises((IPVSError, DaemonError)) as ei:
            b.request(method, path, body)
        if isinstance(ei.value, DaemonError):
            assert 400 <= ei.value.status < 500, (method, path, ei.value.status)
            assert {"errno", "op", "message"} <= set(ei.value.body)
    # not JSON at all
    with pytest.raises(IPVSError):
        raw_request(b, "POST", "/services", b"{not json")
    assert b.snapshot() == before


def raw_request(b: DaemonBackend, method: str, path: str, data: bytes) -> None:
    import json

    from pylvs.daemon.client import _UnixHTTPConnection

    conn = _UnixHTTPConnection(b.socket_path, 10)
    conn.request(method, path, body=data, headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    body = json.loads(resp.read())
    conn.close()
    assert 400 <= resp.status < 500 and "message" in body
    raise IPVSError(Op(body["op"]), body["errno"])


def test_tcp_api_needs_the_bearer_token(make_daemon) -> None:  # type: ignore[no-untyped-def]
    import http.client
    import json

    port = free_port()
    d = make_daemon("--tcp", f"127.0.0.1:{port}", "--token", "s3cret-token", ephemeral=True).start()

    def get(headers: dict[str, str]) -> tuple[int, dict]:  # type: ignore[type-arg]
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        c.request("GET", "/status", headers=headers)
        r = c.getresponse()
        body = json.loads(r.read())
        c.close()
        return r.status, body

    status, body = get({})
    assert status == 401 and body["message"] == "Permission denied (you must be root)"
    assert get({"Authorization": "Bearer wrong-token"})[0] == 401
    status, body = get({"Authorization": "Bearer s3cret-token"})
    assert status == 200 and body["engine"] == "none"
    d.stop()


def test_tcp_without_token_is_refused(make_daemon) -> None:  # type: ignore[no-untyped-def]
    d = make_daemon("--tcp", "127.0.0.1:1", ephemeral=True).start(wait=False)
    assert d.proc.wait(20) == 2
    assert "--tcp needs --token" in d.log.read_text()


def test_fast_path_goes_only_with_the_packet_engine(make_daemon) -> None:  # type: ignore[no-untyped-def]
    d = make_daemon("--engine", "proxy", "--fast-path", ephemeral=True).start(wait=False)
    assert d.proc.wait(20) == 2
    assert "--fast-path goes with --engine packet" in d.log.read_text()
    d = make_daemon("--engine", "proxy", "--queue-bypass", "no", ephemeral=True).start(wait=False)
    assert d.proc.wait(20) == 2
    assert "--queue-bypass goes with the fast path" in d.log.read_text()


def test_event_stream(ephemeral: Pylvsd) -> None:
    import json

    from pylvs.daemon.client import _UnixHTTPConnection

    conn = _UnixHTTPConnection(ephemeral.socket, 10)
    conn.request("GET", "/events/stream")
    resp = conn.getresponse()
    assert resp.status == 200 and resp.getheader("Content-Type", "").startswith("text/event-stream")
    ephemeral.backend().add_service(KEY, ServiceConfig("rr"))
    data = None
    for _ in range(20):
        line = resp.fp.readline().decode()
        if line.startswith("data: "):
            data = json.loads(line[6:])
            break
    conn.close()
    assert data is not None and data["kind"] == "add_service" and data["source"] == "pylvsadm"


def test_second_daemon_on_the_same_socket_is_refused(make_daemon) -> None:  # type: ignore[no-untyped-def]
    first = make_daemon(ephemeral=True).start()
    second = make_daemon(ephemeral=True).start(wait=False)
    assert second.proc.wait(20) == 1
    assert "already listening" in second.log.read_text()
    assert first.backend().status()["engine"] == "none"
    first.stop()


def test_path_that_is_not_a_socket_is_left_alone(make_daemon, tmp_path) -> None:  # type: ignore[no-untyped-def]
    d = make_daemon(ephemeral=True)
    with open(d.socket, "w") as f:
        f.write("precious\n")
    d.start(wait=False)
    assert d.proc.wait(20) == 1
    assert open(d.socket).read() == "precious\n"


def test_sigterm_with_an_open_event_stream_is_quick(make_daemon) -> None:  # type: ignore[no-untyped-def]
    import signal
    import time

    from pylvs.daemon.client import _UnixHTTPConnection

    d = make_daemon(ephemeral=True).start()
    conn = _UnixHTTPConnection(d.socket, 30)
    conn.request("GET", "/events/stream")
    assert conn.getresponse().status == 200
    t0 = time.monotonic()
    d.signal(signal.SIGTERM)
    assert d.proc.wait(20) == 0
    assert time.monotonic() - t0 < 5
    conn.close()
