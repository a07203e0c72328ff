"""Fuzzed API requests: every answer is JSON, never a 5xx or a traceback; a 4xx changes nothing."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pylvs.daemon.client import _UnixHTTPConnection

from .conftest import Pylvsd

json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False),
    st.text(max_size=20),
    st.sampled_from(["tcp", "udp", "sctp", "rr", "wlc", "10.0.0.1", "::1", "master", "lo", "masq", "flush"]),
)
json_value = st.recursive(
    json_leaf,
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4),
    max_leaves=12,
)
ips = st.sampled_from(["10.0.0.1", "10.0.0.2", "192.168.1.10", "2001:db8::1", "224.0.0.1", "0.0.0.0", "x"])
ports = st.one_of(st.integers(min_value=-2, max_value=70000), st.sampled_from([0, 80, 65535]))
service_key = st.fixed_dictionaries(
    {"protocol": st.sampled_from(["tcp", "udp", "sctp", "icmp", 6]), "addr": ips, "port": ports}
) | st.fixed_dictionaries({"fwmark": st.integers(min_value=-1, max_value=2**33)})
service_cfg = st.fixed_dictionaries(
    {},
    optional={
        "scheduler": st.sampled_from(["rr", "wlc", "sh", "nosuch", ""]),
        "flags": st.integers(min_value=-1, max_value=64),
        "timeout": st.integers(min_value=-1, max_value=10**10),
        "netmask": st.integers(min_value=-1, max_value=2**32),
        "pe_name": st.sampled_from(["", "sip", "nope"]),
    },
)
dest_cfg = st.fixed_dictionaries(
    {"addr": ips, "port": ports},
    optional={
        "fwd": st.sampled_from([0, 1, 2, 3, 4, 7, 9, "masq", "route", "bogus"]),
        "weight": st.integers(min_value=-5, max_value=2**32),
        "u_threshold": st.integers(min_value=-1, max_value=10),
        "l_threshold": st.integers(min_value=-1, max_value=10),
        "tun_type": st.integers(min_value=-1, max_value=3),
        "tun_port": ports,
    },
)
compact = st.one_of(
    st.tuples(
        st.just("D"),
        st.sampled_from(["tcp:10.0.0.1:80", "fwm:1", "udp:[::1]:53", "bad", 7]),
        ips,
        ports,
        st.sampled_from([0, 2, 3, 5, 7, 8, -1, "masq"]),
        st.integers(-(2**32), 2**32),
        st.integers(-1, 5),
        st.integers(-1, 5),
        st.integers(-1, 3),
        ports,
        st.integers(-1, 4),
    ).map(list),
    st.tuples(
        st.just("S"),
        st.sampled_from(["tcp:10.0.0.1:80", "fwm:1", "udp:[::1]:53", "bad", None]),
        st.sampled_from(["rr", "wlc", "nosuch", 5]),
        st.integers(-1, 64),
        st.integers(-1, 2**33),
        st.integers(-1, 2**33),
        st.sampled_from(["", "sip", None]),
    ).map(list),
    st.lists(json_leaf, max_size=12),
)
change = st.one_of(
    st.fixed_dictionaries({"op": st.just("add_service"), "service": service_key, "config": service_cfg}),
    st.fixed_dictionaries({"op": st.just("edit_service"), "service": service_key, "config": service_cfg}),
    st.fixed_dictionaries({"op": st.just("del_service"), "service": service_key}),
    st.fixed_dictionaries({"op": st.just("add_dest"), "service": service_key, "dest": dest_cfg}),
    st.fixed_dictionaries({"op": st.just("edit_dest"), "service": service_key, "dest": dest_cfg}),
    st.fixed_dictionaries({"op": st.just("del_dest"), "service": service_key, "addr": ips, "port": ports}),
    st.just({"op": "flush"}),
    compact,
    st.fixed_dictionaries({"op": st.just("zero"), "service": st.none() | service_key}),
    json_value,
)
sids = st.sampled_from(
    ["tcp:10.0.0.1:80", "udp:[2001:db8::1]:53", "fwm:1", "fwm6:2", "tcp:x:1", "fwm:0", "%zz"]
)
dids = st.sampled_from(["192.168.1.10:80", "[2001:db8::1]:0", "1.2.3.4:99999", "nope"])
requests = st.one_of(
    st.tuples(
        st.just("POST"),
        st.just("/services"),
        st.fixed_dictionaries({"service": service_key, "config": service_cfg}) | json_value,
    ),
    st.tuples(
        st.just("PUT"),
        sids.map(lambda s: f"/services/{s}"),
        st.fixed_dictionaries({"config": service_cfg}) | json_value,
    ),
    st.tuples(st.just("DELETE"), sids.map(lambda s: f"/services/{s}"), st.none()),
    st.tuples(st.just("POST"), sids.map(lambda s: f"/services/{s}/dests"), dest_cfg | json_value),
    st.tuples(
        st.just("PUT"),
        st.tuples(sids, dids).map(lambda t: f"/services/{t[0]}/dests/{t[1]}"),
        dest_cfg | json_value,
    ),
    st.tuples(
        st.just("DELETE"), st.tuples(sids, dids).map(lambda t: f"/services/{t[0]}/dests/{t[1]}"), st.none()
    ),
    st.tuples(
        st.just("POST"),
        st.just("/batch"),
        st.fixed_dictionaries({"changes": st.lists(change, max_size=6)}) | json_value,
    ),
    st.tuples(st.just("PUT"), st.just("/timeouts"), json_value),
    st.tuples(st.just("POST"), st.just("/daemons"), json_value),
    st.tuples(st.just("POST"), st.just("/zero"), json_value),
    st.tuples(
        st.sampled_from(["GET", "POST", "PATCH"]),
        st.sampled_from(["/events?since=x", "/nope", "/services/fwm:1"]),
        st.none(),
    ),
)


@pytest.fixture(scope="module")
def fuzz_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pylvsd]:
    d = Pylvsd(Path(tmp_path_factory.mktemp("fuzz")), ephemeral=True).start()
    yield d
    d.stop()


def send(d: Pylvsd, method: str, path: str, body: Any, raw: bytes | None = None) -> tuple[int, Any]:
    conn = _UnixHTTPConnection(d.socket, 30)
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    conn.request(method, path, body=data, headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    text = resp.read()
    conn.close()
    return resp.status, json.loads(text)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(req=requests, mangle=st.booleans())
def test_fuzzed_requests(fuzz_daemon: Pylvsd, req: tuple[str, str, Any], mangle: bool) -> None:
    method, path, body = req
    _, before = send(fuzz_daemon, "GET", "/snapshot", None)
    raw = None
    if mangle and body is not None:
        raw = json.dumps(body).encode()[:-1] + b"\xff"  # truncated / not UTF-8
    status, answer = send(fuzz_daemon, method, path, body, raw)
    assert status < 500, (status, answer)
    if status >= 400:
        assert isinstance(answer, dict) and {"errno", "op", "message"} <= set(answer)
        assert "Traceback" not in json.dumps(answer)
        _, after = send(fuzz_daemon, "GET", "/snapshot", None)
        assert after == before


WORDS = st.sampled_from(
    "-A -E -D -C -a -e -d -L -l -n -Z -R -S -t -u -f -s -r -g -m -i -w -x -y -p -M -b -c --stats --rate "
    "--exact --sort --nosort --set --fullnat --pe sip rr wlc mh sh-port 10.0.0.1:80 10.0.0.2 192.168.1.9:81 "
    "[2001:db8::1]:53 1 0 -1 65536 4294967296 x \udcff ipvsadm".split()
)
adm_body = st.fixed_dictionaries(
    {"argv": st.lists(WORDS | st.text(max_size=8), max_size=9)},
    optional={
        "stdin": st.none() | st.lists(st.lists(WORDS, max_size=8).map(" ".join), max_size=5).map("\n".join),
        "flush_first": st.booleans(),
        "prog": st.sampled_from(["pylvsadm", "ipvsadm"]),
    },
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=adm_body | json_value)
def test_fuzzed_command_lines_in_the_daemon(fuzz_daemon: Pylvsd, body: Any) -> None:
    """POST /ipvsadm: any argv/stdin gets ipvsadm's answer (or a 4xx for a malformed request), never a
    traceback; a command that fails changes nothing."""
    _, before = send(fuzz_daemon, "GET", "/snapshot", None)
    status, answer = send(fuzz_daemon, "POST", "/ipvsadm", body)
    assert status < 500, (status, answer)
    assert "Traceback" not in json.dumps(answer)
    _, after = send(fuzz_daemon, "GET", "/snapshot", None)
    if status >= 400:
        assert {"errno", "op", "message"} <= set(answer)
        assert after == before
    else:
        assert set(answer) == {"out", "err", "code"}
        if answer["code"] != 0:
            assert after == before, answer
