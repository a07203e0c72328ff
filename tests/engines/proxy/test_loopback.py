"""The proxy engine on loopback: scheduling, counters, UDP, failures, rule changes, half-close, limits."""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import logging
import os
import socket
import struct
from pathlib import Path

import pytest

from pylvs.core.types import DestConfig, Fwd, Proto, ServiceConfig, ServiceKey, SvcFlags
from pylvs.engines.proxy import ProxyEngine
from pylvs.engines.proxy.feed import TCP_HDR4, UDP_HDR4
from pylvs.engines.proxy.tcp import CHUNK

from .helpers import LO, LO_IP, Backend, Harness, ask, behind, free_port, run


def test_round_robin_alternates_between_backends() -> None:
    async def body() -> list[str]:
        a, b = await Backend("A").start(), await Backend("B").start()
        h = Harness()
        async with behind(h, a, b):
            return [(await ask(h.vport)).split()[0] for _ in range(10)]

    names = run(body)
    assert sorted(set(names)) == ["A", "B"]
    assert all(names[i] != names[i + 1] for i in range(9)), names


def test_fullnat_backend_sees_the_director() -> None:
    async def body() -> tuple[str, int]:
        a = await Backend("A").start()
        h = Harness()
        async with behind(h, a):
            reader, writer = await asyncio.open_connection(LO, h.vport)
            client_port = writer.get_extra_info("sockname")[1]
            writer.write(b"x\n\n")
            await reader.read()
            writer.close()
            return a.peers[0][0], client_port if a.peers[0][1] != client_port else -1

    addr, port = run(body)
    assert addr == LO and port != -1  # a new socket of the director's, not the client's port


def test_counters_match_the_traffic_sent() -> None:
    sizes = [1, 1000, 5000, 70000, 300000]

    async def body() -> tuple[tuple[int, ...], int, int]:
        a, b = await Backend("A", "echo").start(), await Backend("B", "echo").start()
        h = Harness()
        async with behind(h, a, b):
            for n in sizes:
                reader, writer = await asyncio.open_connection(LO, h.vport)
                writer.write(b"z" * n)
                await writer.drain()
                got = 0
                while got < n:
                    chunk = await reader.read(65536)
                    assert chunk
                    got += len(chunk)
                writer.write_eof()
                assert await reader.read() == b""
                writer.close()
            await asyncio.sleep(0.3)
            st = h.stats()
            return st, a.received + b.received, len(a.peers) + len(b.peers)

    (conns, inpkts, outpkts, inbytes, outbytes), received, accepted = run(body)
    assert conns == len(sizes) == accepted
    assert received == sum(sizes)
    # Each synthetic packet carries one header's worth of bytes: what is left is the payload.
    assert inbytes - TCP_HDR4 * inpkts == sum(sizes)
    assert outbytes - TCP_HDR4 * outpkts == sum(sizes)
    assert inpkts >= len(sizes) + sum((n + 1459) // 1460 for n in sizes)  # SYNs + data segments


def test_connection_states_follow_the_relay() -> None:
    async def body() -> tuple[list[str], list[str]]:
        a = await Backend("A", "echo").start()
        h = Harness()
        async with behind(h, a):
            reader, writer = await asyncio.open_connection(LO, h.vport)
            writer.write(b"ping")
            await reader.readexactly(4)
            await asyncio.sleep(0.3)  # the engine hands its batches to the core every 0.1 s here
            during = [c.state for c in h.director.connections_view(h.clock())]
            writer.write_eof()
            await reader.read()
            writer.close()
            await asyncio.sleep(0.2)
            after = [c.state for c in h.director.connections_view(h.clock())]
            return during, after

    during, after = run(body)
    assert during == ["ESTABLISHED"]
    assert after in (["TIME_WAIT"], ["CLOSE"], ["CLOSE_WAIT"], ["LAST_ACK"]), after


def test_udp_flows_round_robin_and_counters() -> None:
    async def body() -> tuple[list[bytes], tuple[int, ...], int]:
        loop = asyncio.get_running_loop()
        servers = []
        for name in (b"A", b"B"):

            class Echo(asyncio.DatagramProtocol):
                tag = name

                def connection_made(self, t: asyncio.BaseTransport) -> None:
                    self.t = t

                def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
                    self.t.sendto(self.tag + b":" + data, addr)  # type: ignore[attr-defined]

            t, _ = await loop.create_datagram_endpoint(Echo, local_addr=(LO, 0))
            servers.append(t)
        h = Harness(Proto.UDP)
        for t in servers:
            h.add(t.get_extra_info("sockname")[1])
        await h.start()
        answers: list[bytes] = []
        sent = 0
        try:
            for _ in range(4):  # four client flows, two datagrams each
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as c:
                    c.setblocking(False)
                    c.connect((LO, h.vport))
                    for payload in (b"one", b"two"):
                        c.send(payload)
                        sent += len(payload)
                        answers.append(await asyncio.wait_for(loop.sock_recv(c, 100), 3))
            return answers, h.stats(), sent
        finally:
            await h.stop()
            for t in servers:
                t.close()

    answers, (conns, inpkts, outpkts, inbytes, outbytes), sent = run(body)
    tags = [a.split(b":")[0] for a in answers]
    assert tags[0] == tags[1] and tags[2] == tags[3] and tags[0] != tags[2]  # one flow, one server
    assert conns == 4 and inpkts == 8 and outpkts == 8
    assert inbytes - UDP_HDR4 * inpkts == sent
    assert outbytes - UDP_HDR4 * outpkts == sent + 2 * 8


def test_weight_zero_is_quiescent_and_removed_server_gets_no_new_connections() -> None:
    async def body() -> tuple[list[str], bytes, list[str]]:
        a, b = await Backend("A", "echo").start(), await Backend("B").start()
        ka = await Backend("A2").start()
        h = Harness()
        h.add(a.port)
        await h.start()
        try:
            # A keep-alive connection to A, then A gets weight 0 and B joins.
            reader, writer = await asyncio.open_connection(LO, h.vport)
            writer.write(b"1")
            await reader.readexactly(1)
            h.add(b.port)
            h.set_weight(a.port, 0)
            names = [(await ask(h.vport)).split()[0] for _ in range(4)]
            writer.write(b"still")  # the quiescent server keeps its connection
            kept = await asyncio.wait_for(reader.readexactly(5), 3)
            writer.close()
            # A killed backend: B is stopped and removed; KA takes over new connections.
            await b.stop()
            h.director.del_dest(h.key, LO_IP, b.port)
            h.add(ka.port)
            after = [(await ask(h.vport)).split()[0] for _ in range(3)]
            return names, kept, after
        finally:
            await h.stop()
            for x in (a, b, ka):
                await x.stop()

    names, kept, after = run(body)
    assert names == ["B"] * 4
    assert kept == b"still"
    assert after == ["A2"] * 3


def test_no_destination_refuses_at_once_and_logs_once(caplog: pytest.LogCaptureFixture) -> None:
    async def body() -> list[float]:
        h = Harness(no_dest_interval=60.0)
        await h.start()  # a service without real servers
        loop = asyncio.get_running_loop()
        took = []
        try:
            for _ in range(5):
                t0 = loop.time()
                with pytest.raises((ConnectionResetError, asyncio.IncompleteReadError, BrokenPipeError)):
                    # The reset may even beat the client's own connect() completion.
                    reader, writer = await asyncio.open_connection(LO, h.vport)
                    writer.write(b"x")
                    try:
                        await asyncio.wait_for(reader.readexactly(1), 2)
                    finally:
                        writer.close()
                took.append(loop.time() - t0)
            return took
        finally:
            await h.stop()

    with caplog.at_level(logging.WARNING, logger="pylvs.proxy"):
        took = run(body)
    assert max(took) < 0.5
    lines = [r for r in caplog.records if "no destination available" in r.getMessage()]
    assert len(lines) == 1


def test_refuse_dest_names_the_packet_engine() -> None:
    h = Harness()
    eng = ProxyEngine(h.director)
    for fwd in (Fwd.DROUTE, Fwd.TUNNEL):
        msg = eng.refuse_dest(h.key, DestConfig(LO_IP, 80, fwd=fwd))
        assert msg is not None and "packet" in msg and "proxy" in msg
    assert eng.refuse_dest(h.key, DestConfig(LO_IP, 80, fwd=Fwd.MASQ)) is None
    assert eng.refuse_dest(h.key, DestConfig(LO_IP, 80, fwd=Fwd.FULLNAT)) is None


def test_rules_changed_starts_and_stops_listeners_without_cutting_connections() -> None:
    async def body() -> tuple[str, bytes, bool]:
        a = await Backend("A", "echo").start()
        h = Harness()
        async with behind(h, a) as eng:
            port2 = free_port()
            key2 = ServiceKey.for_addr(Proto.TCP, LO_IP, port2)
            h.director.add_service(key2, ServiceConfig(scheduler="rr"))
            b = await Backend("B").start()
            h.director.add_dest(key2, DestConfig(LO_IP, b.port, fwd=Fwd.FULLNAT))
            eng.rules_changed()
            await eng.ready()
            new = await ask(port2)
            # A connection in flight on the first service survives its deletion.
            reader, writer = await asyncio.open_connection(LO, h.vport)
            writer.write(b"a")
            await reader.readexactly(1)
            h.director.del_service(h.key)
            eng.rules_changed()
            await asyncio.sleep(0.05)
            writer.write(b"b")
            kept = await asyncio.wait_for(reader.readexactly(1), 3)
            writer.close()
            try:
                await ask(h.vport, timeout=1)
                refused = False
            except OSError:
                refused = True
            await b.stop()
            return new.split()[0], kept, refused

    new, kept, refused = run(body)
    assert new == "B" and kept == b"b" and refused


def test_half_close_lets_the_server_answer_after_the_client_is_done() -> None:
    async def body() -> str:
        a = await Backend("A").start()
        h = Harness()
        async with behind(h, a):
            reader, writer = await asyncio.open_connection(LO, h.vport)
            writer.write(b"request without the terminator")
            writer.write_eof()  # the backend answers only after our EOF
            data = await asyncio.wait_for(reader.read(), 3)
            writer.close()
            return data.decode()

    assert run(body).startswith("A ")


def test_backpressure_bounds_the_relay_buffers() -> None:
    async def body() -> tuple[int, int]:
        stalled: list[asyncio.StreamReader] = []

        async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            stalled.append(reader)  # never reads
            await asyncio.sleep(10)
            writer.close()

        server = await asyncio.start_server(slow, LO, 0)
        h = Harness()
        h.add(server.sockets[0].getsockname()[1])
        eng = await h.start()
        try:
            with socket.socket() as c:
                c.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
                c.connect((LO, h.vport))
                c.setblocking(False)
                pushed = 0
                blob = b"q" * 65536
                for _ in range(2000):  # 128 MiB at most; the client must block long before
                    try:
                        pushed += c.send(blob)
                    except BlockingIOError:
                        await asyncio.sleep(0.05)
                        try:
                            pushed += c.send(blob)
                        except BlockingIOError:
                            break
                    await asyncio.sleep(0)
                relay = next(iter(eng.relays))
                return pushed, relay.buffered()
        finally:
            await h.stop()
            server.close()

    pushed, buffered = run(body)
    assert buffered <= CHUNK
    assert pushed < 64 * 1024 * 1024


def test_idle_connection_ends_with_its_state_timeout() -> None:
    async def body() -> tuple[bool, float]:
        a = await Backend("A", "echo").start()
        h = Harness()
        h.add(a.port)
        h.director.set_timeouts(1, 1, 1)
        eng = await h.start()
        loop = asyncio.get_running_loop()
        try:
            reader, writer = await asyncio.open_connection(LO, h.vport)
            writer.write(b"x")
            await reader.readexactly(1)
            t0 = loop.time()
            try:
                data = await asyncio.wait_for(reader.read(), 6)
                ended = data == b""
            except ConnectionResetError:
                ended = True
            writer.close()
            return ended and not eng.relays, loop.time() - t0
        finally:
            await h.stop()
            await a.stop()

    ended, after = run(body)
    assert ended and 0.9 < after < 4.0


def test_stop_drains_connections_in_flight() -> None:
    async def body() -> tuple[bytes, bool]:
        a = await Backend("A", "echo").start()
        h = Harness(drain_timeout=5.0)
        h.add(a.port)
        eng = await h.start()
        try:
            reader, writer = await asyncio.open_connection(LO, h.vport)
            writer.write(b"1")
            await reader.readexactly(1)
            stopping = asyncio.create_task(eng.stop(drain=True))
            await asyncio.sleep(0.2)
            writer.write(b"2")  # still relayed while draining
            got = await asyncio.wait_for(reader.readexactly(1), 3)
            writer.write_eof()
            await reader.read()
            writer.close()
            await asyncio.wait_for(stopping, 5)
            try:
                await ask(h.vport, timeout=1)
                listening = True
            except OSError:
                listening = False
            return got, listening
        finally:
            await a.stop()

    got, listening = run(body)
    assert got == b"2" and not listening


def test_demo_prints_alternating_answers_and_the_table(capsys: pytest.CaptureFixture[str]) -> None:
    from pylvs.cli.pylvs import main

    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    answers = [line for line in out.splitlines() if "hello from backend" in line]
    assert len(answers) == 10
    who = [line.split("backend ")[1][0] for line in answers]
    assert all(who[i] != who[i + 1] for i in range(9))
    assert "FullNat" in out or "FULLNAT" in out.upper()


def test_health_checks_move_new_connections_off_a_killed_backend(tmp_path: Path) -> None:
    from pylvs.health.config import load_config
    from pylvs.health.manager import HealthManager

    async def body() -> tuple[set[str], list[str]]:
        a, b = await Backend("A").start(), await Backend("B").start()
        vport = free_port()
        conf = tmp_path / "keepalived.conf"
        rs = "".join(
            f"  real_server {LO} {p} {{\n    weight 1\n    TCP_CHECK {{\n      connect_timeout 1\n    }}\n  }}\n"
            for p in (a.port, b.port)
        )
        conf.write_text(
            f"virtual_server {LO} {vport} {{\n  delay_loop 1\n  lb_algo rr\n  lb_kind FULLNAT\n"
            f"  protocol TCP\n{rs}}}\n"
        )
        h = Harness()
        h.director.del_service(h.key)  # the manager programs its own service
        health = HealthManager(h.director, load_config(str(conf)), run_scripts=False)
        await health.start()
        eng = await h.start()
        try:
            before = {(await ask(vport)).split()[0] for _ in range(4)}
            await b.stop()
            key = ServiceKey.for_addr(Proto.TCP, LO_IP, vport)
            for _ in range(100):  # the checker notices within a few delay_loops
                svc = h.director.services.get(key)
                if svc is not None and svc.find_dest(LO_IP, b.port) is None:
                    break
                await asyncio.sleep(0.1)
            after = [(await ask(vport)).split()[0] for _ in range(4)]
            return before, after
        finally:
            await health.stop()
            await eng.stop(drain=False)
            await a.stop()

    before, after = run(body, timeout=40)
    assert before == {"A", "B"}
    assert after == ["A"] * 4


def test_ipv6_service_on_loopback() -> None:
    async def body() -> list[str]:
        v6 = ipaddress.ip_address("::1")
        a = await Backend("A", host="::1").start()
        h = Harness()
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
            vport = s.getsockname()[1]
        key = ServiceKey.for_addr(Proto.TCP, v6, vport)
        h.director.add_service(key, ServiceConfig(scheduler="rr", netmask=128))
        h.director.add_dest(key, DestConfig(v6, a.port, fwd=Fwd.FULLNAT))
        await h.start()
        try:
            return [await ask(vport, host="::1") for _ in range(2)]
        finally:
            await h.stop()
            await a.stop()

    answers = run(body)
    assert all(a.startswith("A ::1:") for a in answers), answers


def test_persistence_keeps_a_client_on_one_server() -> None:
    async def body() -> list[str]:
        a, b = await Backend("A").start(), await Backend("B").start()
        h = Harness()
        h.director.edit_service(h.key, ServiceConfig(scheduler="rr", flags=SvcFlags.PERSISTENT, timeout=60))
        async with behind(h, a, b):
            return [(await ask(h.vport)).split()[0] for _ in range(6)]

    names = run(body)
    assert len(set(names)) == 1, names


def test_upper_threshold_refuses_the_connection_over_it() -> None:
    async def body() -> tuple[bytes, bool]:
        a = await Backend("A", "echo").start()
        h = Harness()
        h.director.add_dest(h.key, DestConfig(LO_IP, a.port, fwd=Fwd.FULLNAT, weight=1, u_threshold=1))
        await h.start()
        try:
            reader, writer = await asyncio.open_connection(LO, h.vport)
            writer.write(b"1")
            first = await reader.readexactly(1)
            try:
                await ask(h.vport, timeout=2)
                refused = False
            except (ConnectionResetError, asyncio.IncompleteReadError, BrokenPipeError):
                refused = True
            writer.close()
            return first, refused
        finally:
            await h.stop()
            await a.stop()

    first, refused = run(body)
    assert first == b"1" and refused


def test_a_server_reset_reaches_the_client_as_a_reset() -> None:
    async def body() -> tuple[str, list[str]]:
        async def rude(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.read(1)
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()

        server = await asyncio.start_server(rude, LO, 0)
        h = Harness()
        h.add(server.sockets[0].getsockname()[1])
        await h.start()
        try:
            reader, writer = await asyncio.open_connection(LO, h.vport)
            writer.write(b"x")
            try:
                await asyncio.wait_for(reader.read(10), 3)
                outcome = "eof"
            except ConnectionResetError:
                outcome = "reset"
            writer.close()
            await asyncio.sleep(0.2)
            states = [c.state for c in h.director.connections_view(h.clock())]
            return outcome, states
        finally:
            await h.stop()
            server.close()

    outcome, states = run(body)
    assert outcome == "reset"
    assert states == ["CLOSE"], states


def test_removed_server_connections_follow_expire_nodest_conn() -> None:
    async def body(expire: int) -> str:
        a = await Backend("A", "echo").start()
        h = Harness()
        h.director.sysctl.expire_nodest_conn = expire
        async with behind(h, a):
            reader, writer = await asyncio.open_connection(LO, h.vport)
            writer.write(b"1")
            await reader.readexactly(1)
            h.director.del_dest(h.key, LO_IP, a.port)
            writer.write(b"2")  # relayed, then handed to the core with the next batch
            await reader.readexactly(1)
            await asyncio.sleep(0.3)
            try:
                writer.write(b"3")
                got = await asyncio.wait_for(reader.read(10), 1.5)
                outcome = "eof" if got == b"" else "data"
            except (ConnectionResetError, BrokenPipeError, RuntimeError):  # RuntimeError: uvloop's
                outcome = "reset"  # transport was already closed by the reset
            except TimeoutError:
                outcome = "stalled"
            writer.close()
            return outcome

    # The kernel's rule: 1 = the entry is expired and the flow reset, 0 = its packets are dropped.
    assert run(lambda: body(1)) in ("reset", "eof")
    assert run(lambda: body(0)) == "stalled"


def test_bulk_both_ways_arrives_intact_with_a_slow_reader() -> None:
    blob = os.urandom(8 << 20)

    async def body() -> tuple[bytes, int]:
        a = await Backend("A", "echo").start()
        h = Harness()
        h.add(a.port)
        eng = await h.start()
        most = 0
        try:
            reader, writer = await asyncio.open_connection(LO, h.vport, limit=1 << 16)

            async def send() -> None:
                for i in range(0, len(blob), 1 << 20):
                    writer.write(blob[i : i + (1 << 20)])
                    await writer.drain()
                writer.write_eof()

            sender = asyncio.create_task(send())
            got = bytearray()
            while True:
                chunk = await asyncio.wait_for(reader.read(1 << 16), 10)
                if not chunk:
                    break
                got += chunk
                if len(got) % (1 << 20) < (1 << 16):
                    await asyncio.sleep(0.01)  # a slow reader: the relay must hold, not hoard
                for r in eng.relays:
                    most = max(most, r.buffered())
            await sender
            writer.close()
            return bytes(got), most
        finally:
            await h.stop()
            await a.stop()

    got, most = run(body)
    assert hashlib.sha256(got).digest() == hashlib.sha256(blob).digest()
    assert most <= 2 * CHUNK


def test_a_refused_connect_resets_the_client() -> None:
    async def body() -> tuple[str, list[str], float]:
        h = Harness()
        h.add(free_port())  # nothing listens there
        eng = await h.start()
        try:
            try:
                await ask(h.vport, timeout=3)
                outcome = "answered"
            except (ConnectionResetError, asyncio.IncompleteReadError, BrokenPipeError, RuntimeError):
                outcome = "reset"  # RuntimeError: uvloop's transport was closed by the reset already
            await asyncio.sleep(0.1)
            return (
                outcome,
                [c.state for c in h.director.connections_view(h.clock())],
                eng.stats()["connect_failed"],
            )
        finally:
            await h.stop()

    outcome, states, failed = run(body)
    assert outcome == "reset" and states == ["CLOSE"] and failed == 1


def test_demo_rejects_bad_input_without_a_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    from pylvs.cli.pylvs import main

    assert main(["demo", "-s", "nosuch"]) == 1
    assert main(["demo", "-n", "0"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "nosuch" in err and "--requests" in err
