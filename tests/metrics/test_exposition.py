"""The text exposition: node_exporter's ipvs names, types and labels, and the pylvs_* figures."""

from __future__ import annotations

import ipaddress

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from pylvs.core.director import Director, take_snapshot
from pylvs.core.types import DestConfig, Fwd
from pylvs.metrics.collector import IPVSCollector
from pylvs.metrics.exposition import Exposition
from pylvs.metrics.model import Extras, Health, LiveRows, rows_from_snapshot
from tests.metrics.conftest import TCP

NODE_LABELS = {"local_address", "local_port", "remote_address", "remote_port", "proto", "local_mark"}


def samples(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, []).append((dict(s.labels), s.value))
    return out


def types(text: str) -> dict[str, str]:
    return {f.name: f.type for f in text_string_to_metric_families(text)}


def test_node_exporter_names_types_and_totals(director: Director) -> None:
    text = Exposition().render(LiveRows(director)()).decode()
    t = types(text)
    for name in ("connections", "incoming_packets", "outgoing_packets", "incoming_bytes", "outgoing_bytes"):
        assert t[f"node_ipvs_{name}"] == "counter"
    for name in ("connections_active", "connections_inactive", "weight"):
        assert t[f"node_ipvs_backend_{name}"] == "gauge"
    s = samples(text)
    assert s["node_ipvs_connections_total"] == [({}, 7.0)]
    assert s["node_ipvs_incoming_packets_total"] == [({}, 70.0)]
    assert s["node_ipvs_outgoing_packets_total"] == [({}, 60.0)]
    assert s["node_ipvs_incoming_bytes_total"] == [({}, 7000.0)]
    assert s["node_ipvs_outgoing_bytes_total"] == [({}, 600000.0)]


def test_backend_labels_one_series_per_real_server(director: Director) -> None:
    s = samples(Exposition().render(LiveRows(director)()).decode())
    weight = s["node_ipvs_backend_weight"]
    assert len(weight) == 4
    assert all(set(lbl) == NODE_LABELS for lbl, _ in weight)
    by_remote = {(lbl["remote_address"], lbl["remote_port"]): (lbl, v) for lbl, v in weight}
    lbl, v = by_remote[("10.0.0.1", "8080")]
    assert lbl == {
        "local_address": "192.0.2.10",
        "local_port": "80",
        "remote_address": "10.0.0.1",
        "remote_port": "8080",
        "proto": "TCP",
        "local_mark": "",
    }
    assert v == 3
    lbl, v = by_remote[("2001:db8::1", "53")]
    assert (lbl["local_address"], lbl["proto"], lbl["local_mark"]) == ("2001:db8::10", "UDP", "")
    # A mark service: no address, port 0, the mark as /proc/net/ip_vs prints it (%08X).
    lbl, v = by_remote[("10.0.0.3", "0")]
    assert (lbl["local_address"], lbl["local_port"], lbl["proto"], lbl["local_mark"]) == (
        "",
        "0",
        "FWM",
        "0000001A",
    )
    assert v == 5
    active = {(lbl["remote_address"]): v for lbl, v in s["node_ipvs_backend_connections_active"]}
    inactive = {(lbl["remote_address"]): v for lbl, v in s["node_ipvs_backend_connections_inactive"]}
    assert (active["10.0.0.1"], inactive["10.0.0.1"]) == (2, 3)
    assert (active["10.0.0.2"], inactive["10.0.0.2"]) == (0, 0)


def test_snapshot_and_live_rows_render_the_same(director: Director) -> None:
    live = Exposition().render(LiveRows(director)())
    snap = Exposition().render(rows_from_snapshot(take_snapshot(director)))
    assert live == snap


def test_cache_follows_values_and_rule_changes(director: Director) -> None:
    rows, expo = LiveRows(director), Exposition()
    first = samples(expo.render(rows()).decode())
    assert len(first["node_ipvs_backend_weight"]) == 4
    svc = director.services.get(TCP)
    assert svc is not None
    svc.dests[-1].stats.conns += 5  # traffic on one server only
    director.add_dest(TCP, DestConfig(ipaddress.ip_address("10.0.0.9"), 8080, Fwd.MASQ, 9))
    second = samples(expo.render(rows()).decode())
    weights = {lbl["remote_address"]: v for lbl, v in second["node_ipvs_backend_weight"]}
    assert weights["10.0.0.9"] == 9
    conns = {lbl["remote_address"]: v for lbl, v in second["pylvs_backend_connections_total"]}
    assert conns["10.0.0.1"] == 12
    assert second["pylvs_backends"] == [({}, 5.0)]
    director.del_service(TCP)
    third = samples(expo.render(rows()).decode())
    assert {lbl["remote_address"] for lbl, _ in third["node_ipvs_backend_weight"]} == {
        "2001:db8::1",
        "10.0.0.3",
    }


def test_pylvs_service_and_backend_figures(director: Director) -> None:
    s = samples(Exposition().render(LiveRows(director)()).decode())
    svc = {lbl["local_address"] + lbl["local_mark"]: v for lbl, v in s["pylvs_service_incoming_bytes_total"]}
    assert svc == {"192.0.2.10": 7000, "2001:db8::10": 0, "0000001A": 0}
    assert {tuple(sorted(lbl)) for lbl, _ in s["pylvs_service_connections_per_second"]} == {
        ("local_address", "local_mark", "local_port", "proto")
    }
    backends = {lbl["local_address"] + lbl["local_mark"]: v for lbl, v in s["pylvs_service_backends"]}
    assert backends == {"192.0.2.10": 2, "2001:db8::10": 1, "0000001A": 1}
    for name in ("connections", "incoming_packets", "outgoing_packets", "incoming_bytes", "outgoing_bytes"):
        assert f"pylvs_backend_{name}_total" in s
        assert f"pylvs_backend_{name}_per_second" in s
        assert f"pylvs_{name}_per_second" in s
    assert s["pylvs_services"] == [({}, 3.0)]


def test_extras_health_connections_engine_daemon(director: Director) -> None:
    extras = Extras(
        health={
            ("TCP 192.0.2.10:80", "10.0.0.1:8080"): Health("up", True, "TCP_CHECK"),
            ("TCP 192.0.2.10:80", "10.0.0.2:8080"): Health("down", False, "HTTP_GET"),
            ("FWM 26", "10.0.0.3:0"): Health("up", None),
        },
        conn_states={("TCP", "ESTABLISHED"): 4, ("TCP", "FIN_WAIT"): 1, ("UDP", "UDP"): 2},
        templates=3,
        engine_name="proxy",
        engine={"packets_total": 120, "drops_total": 1, "queue_depth": 0.5, "odd name": 2},
        daemon={"rule_changes_total": 9, "reload_errors_total": 0},
    )
    text = Exposition().render(LiveRows(director)(), extras).decode()
    s = samples(text)
    health = {(lbl["remote_address"], lbl["state"]): v for lbl, v in s["pylvs_backend_health"]}
    assert health == {("10.0.0.1", "up"): 1, ("10.0.0.2", "down"): 1, ("10.0.0.3", "up"): 1}
    last = {lbl["remote_address"]: v for lbl, v in s["pylvs_backend_last_check_success"]}
    assert last == {"10.0.0.1": 1, "10.0.0.2": 0}
    entries = {(lbl["proto"], lbl["state"]): v for lbl, v in s["pylvs_connection_entries"]}
    assert entries[("TCP", "ESTABLISHED")] == 4
    assert s["pylvs_persistence_templates"] == [({}, 3.0)]
    assert s["pylvs_engine_packets_total"] == [({"engine": "proxy"}, 120.0)]
    assert s["pylvs_engine_queue_depth"] == [({"engine": "proxy"}, 0.5)]
    assert "pylvs_engine_odd_name" in s
    assert types(text)["pylvs_daemon_rule_changes"] == "counter"
    assert s["pylvs_daemon_reload_errors_total"] == [({}, 0.0)]


def test_label_values_are_escaped() -> None:
    from pylvs.metrics.labels import escape

    assert escape('a"b\\c\nd') == 'a\\"b\\\\c\\nd'


def test_prometheus_client_collector_gives_the_same_samples(director: Director) -> None:
    registry = CollectorRegistry()
    registry.register(IPVSCollector(LiveRows(director)))
    via_client = samples(generate_latest(registry).decode())
    direct = samples(Exposition().render(LiveRows(director)()).decode())
    assert via_client == direct


def test_empty_director() -> None:
    s = samples(Exposition().render(LiveRows(Director())()).decode())
    assert s["node_ipvs_connections_total"] == [({}, 0.0)]
    assert "node_ipvs_backend_weight" not in s
    assert s["pylvs_services"] == [({}, 0.0)]
