"""The OpenAPI 3 document of pylvsd's control API (served at GET /openapi.json)."""

from __future__ import annotations

from typing import Any

from pylvs import __version__
from pylvs.daemon.changes import KINDS

_INT = {"type": "integer"}
_STR = {"type": "string"}


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _int(lo: int, hi: int) -> dict[str, Any]:
    return {"type": "integer", "minimum": lo, "maximum": hi}


_COUNTERS = {"type": "array", "items": _INT, "minItems": 5, "maxItems": 5}

SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["errno", "op", "message"],
        "properties": {
            "errno": {**_INT, "description": "the errno the kernel would return"},
            "op": {"type": "string", "nullable": True, "description": "ipvsadm's operation name"},
            "message": {**_STR, "description": "exactly what ipvsadm prints for this errno and op"},
            "detail": {**_STR, "description": "why, for people and logs"},
            "index": {**_INT, "description": "batch only: the refused change (0-based)"},
        },
    },
    "ServiceKey": {
        "type": "object",
        "description": "tcp/udp/sctp + addr + port, or fwmark (+ af)",
        "additionalProperties": False,
        "properties": {
            "af": {"type": "integer", "enum": [2, 10]},
            "protocol": {"type": "string", "enum": ["tcp", "udp", "sctp"]},
            "addr": {**_STR, "format": "ipaddress"},
            "port": _int(0, 65535),
            "fwmark": _int(0, 0xFFFFFFFF),
        },
    },
    "ServiceConfig": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "scheduler": {**_STR, "maxLength": 15, "default": "wlc"},
            "flags": {
                **_int(0, 0xFFFFFFFF),
                "description": "1 persistent, 4 one-packet, 8/16/32 sched flags",
            },
            "timeout": {**_int(0, 0xFFFFFFFF), "description": "persistence timeout (s)"},
            "netmask": {**_int(0, 0xFFFFFFFF), "description": "IPv4 mask as an integer, IPv6 prefix length"},
            "pe_name": {**_STR, "maxLength": 31},
        },
    },
    "DestConfig": {
        "type": "object",
        "required": ["addr", "port"],
        "additionalProperties": False,
        "properties": {
            "addr": {**_STR, "format": "ipaddress"},
            "port": _int(0, 65535),
            "fwd": {
                "description": "0 masq, 1 local, 2 tunnel, 3 route, 4 bypass, 7 fullnat (or the name)",
                "oneOf": [
                    {"type": "integer", "enum": [0, 1, 2, 3, 4, 7]},
                    {"type": "string", "enum": ["masq", "local", "tunnel", "route", "bypass", "fullnat"]},
                ],
            },
            "weight": _int(-(2**31), 2**31 - 1),
            "u_threshold": _int(0, 0xFFFFFFFF),
            "l_threshold": _int(0, 0xFFFFFFFF),
            "tun_type": {"type": "integer", "enum": [0, 1, 2], "description": "ipip, gue, gre"},
            "tun_port": _int(0, 65535),
            "tun_flags": _int(0, 3),
        },
    },
    "Daemon": {
        "type": "object",
        "required": ["state"],
        "additionalProperties": False,
        "properties": {
            "state": {"type": "string", "enum": ["master", "backup"]},
            "mcast_ifn": {**_STR, "maxLength": 15, "default": "eth0"},
            "syncid": _int(0, 255),
            "maxlen": _int(0, 65535),
            "group": _STR,
            "port": _int(0, 65535),
            "ttl": _int(0, 255),
        },
    },
    "Timeouts": {
        "type": "object",
        "required": ["tcp", "tcpfin", "udp"],
        "properties": {"tcp": _int(0, 2**31 - 1), "tcpfin": _int(0, 2**31 - 1), "udp": _int(0, 2**31 - 1)},
    },
    "Change": {
        "type": "object",
        "required": ["op"],
        "description": "One rule change, as in the batch endpoint. Fields by op: add_service/edit_service: "
        "service, config; del_service: service; flush; add_dest/edit_dest: service, dest; del_dest: service, "
        "addr, port; zero: service (null = all); set_timeouts: tcp, tcpfin, udp; start_daemon: daemon; "
        "stop_daemon: state, syncid.",
        "properties": {
            "op": {
                "type": "string",
                "enum": list(KINDS),  # what parse_change accepts
            },
            "service": _ref("ServiceKey"),
            "config": _ref("ServiceConfig"),
            "dest": _ref("DestConfig"),
            "addr": _STR,
            "port": _int(0, 65535),
            "tcp": _INT,
            "tcpfin": _INT,
            "udp": _INT,
            "daemon": _ref("Daemon"),
            "state": {"type": "string", "enum": ["master", "backup"]},
            "syncid": _int(0, 255),
        },
    },
    "DestView": {
        "type": "object",
        "properties": {
            "addr": _STR,
            "port": _INT,
            "fwd": _INT,
            "weight": _INT,
            "u_threshold": _INT,
            "l_threshold": _INT,
            "activeconns": _INT,
            "inactconns": _INT,
            "persistconns": _INT,
            "tun_type": _INT,
            "tun_port": _INT,
            "tun_flags": _INT,
            "stats": _COUNTERS,
            "rates": _COUNTERS,
            "health": _STR,
        },
    },
    "ServiceView": {
        "type": "object",
        "properties": {
            "af": _INT,
            "protocol": _INT,
            "addr": _STR,
            "port": _INT,
            "fwmark": _INT,
            "scheduler": _STR,
            "flags": _INT,
            "timeout": _INT,
            "netmask": _INT,
            "pe_name": _STR,
            "dests": {"type": "array", "items": _ref("DestView")},
            "stats": _COUNTERS,
            "rates": _COUNTERS,
        },
    },
    "Snapshot": {
        "type": "object",
        "properties": {
            "services": {"type": "array", "items": _ref("ServiceView")},
            "stats": _COUNTERS,
            "rates": _COUNTERS,
            "timeouts": {"type": "array", "items": _INT},
            "conn_tab_size": _INT,
            "daemons": {"type": "array", "items": _ref("Daemon")},
        },
    },
    "Event": {
        "type": "object",
        "properties": {
            "seq": _INT,
            "time": {"type": "number"},
            "kind": _STR,
            "detail": _STR,
            "source": {"type": "string", "enum": ["pylvsadm", "api", "config", "health", "web", "daemon"]},
        },
    },
}

_SID = {
    "name": "sid",
    "in": "path",
    "required": True,
    "schema": {"type": "string"},
    "description": "tcp:ADDR:PORT, udp:ADDR:PORT, sctp:ADDR:PORT ([v6]:PORT), fwm:MARK or fwm6:MARK",
}
_DID = {
    "name": "did",
    "in": "path",
    "required": True,
    "schema": {"type": "string"},
    "description": "ADDR:PORT or [V6ADDR]:PORT",
}


def _resp(desc: str, schema: dict[str, Any] | None = None, code: str = "200") -> dict[str, Any]:
    ok: dict[str, Any] = {"description": desc}
    if schema is not None:
        ok["content"] = {"application/json": {"schema": schema}}
    err = {
        "description": "refused: nothing changed",
        "content": {"application/json": {"schema": _ref("Error")}},
    }
    return {code: ok, "4XX": err}


def _body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def _obj(**props: Any) -> dict[str, Any]:
    return {"type": "object", "properties": props}


def openapi_document() -> dict[str, Any]:
    svc_body = {
        "type": "object",
        "required": ["service"],
        "additionalProperties": False,
        "properties": {"service": _ref("ServiceKey"), "config": _ref("ServiceConfig")},
    }
    paths: dict[str, Any] = {
        "/openapi.json": {
            "get": {"summary": "this document", "responses": _resp("the document", {"type": "object"})}
        },
        "/status": {
            "get": {"summary": "version, engine, counts", "responses": _resp("status", {"type": "object"})}
        },
        "/health": {
            "get": {
                "summary": "health checks (--config): real servers up or down, last result, reason",
                "responses": _resp("health state", {"type": "object"}),
            }
        },
        "/snapshot": {
            "get": {
                "summary": "rules, counters, rates, timeouts, daemons",
                "parameters": [
                    {
                        "name": "compact",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "string", "enum": ["0", "1"]},
                        "description": "1: services and servers as positional rows (big listings)",
                    }
                ],
                "responses": _resp("snapshot", _ref("Snapshot")),
            }
        },
        "/services": {
            "get": {
                "summary": "list services (ipvsadm -L)",
                "responses": _resp(
                    "services", _obj(services={"type": "array", "items": _ref("ServiceView")})
                ),
            },
            "post": {
                "summary": "add a service (-A)",
                "requestBody": _body(svc_body),
                "responses": _resp("added", _obj(service=_STR), "201"),
            },
            "delete": {
                "summary": "delete every service (-C)",
                "responses": _resp("flushed", {"type": "object"}),
            },
        },
        "/flush": {
            "post": {
                "summary": "delete every service (-C)",
                "responses": _resp("flushed", {"type": "object"}),
            }
        },
        "/services/{sid}": {
            "parameters": [_SID],
            "get": {"summary": "one service", "responses": _resp("service", _ref("ServiceView"))},
            "put": {
                "summary": "edit a service (-E)",
                "requestBody": _body(_obj(config=_ref("ServiceConfig"))),
                "responses": _resp("edited", _obj(service=_STR)),
            },
            "delete": {"summary": "delete a service (-D)", "responses": _resp("deleted", {"type": "object"})},
        },
        "/services/{sid}/zero": {
            "parameters": [_SID],
            "post": {
                "summary": "zero one service's counters (-Z -t ...)",
                "responses": _resp("zeroed", {"type": "object"}),
            },
        },
        "/services/{sid}/dests": {
            "parameters": [_SID],
            "get": {
                "summary": "real servers of a service",
                "responses": _resp("dests", _obj(dests={"type": "array", "items": _ref("DestView")})),
            },
            "post": {
                "summary": "add a real server (-a)",
                "requestBody": _body(_ref("DestConfig")),
                "responses": _resp("added", _obj(dest=_STR), "201"),
            },
        },
        "/services/{sid}/dests/{did}": {
            "parameters": [_SID, _DID],
            "put": {
                "summary": "edit a real server (-e); addr/port come from the path",
                "requestBody": _body({"type": "object"}),
                "responses": _resp("edited", _obj(dest=_STR)),
            },
            "delete": {
                "summary": "delete a real server (-d)",
                "responses": _resp("deleted", {"type": "object"}),
            },
        },
        "/zero": {
            "post": {
                "summary": "zero counters (-Z): all, or {service}",
                "requestBody": _body(_obj(service=_ref("ServiceKey"))),
                "responses": _resp("zeroed", {"type": "object"}),
            }
        },
        "/timeouts": {
            "get": {
                "summary": "tcp tcpfin udp (--timeout)",
                "responses": _resp("timeouts", _ref("Timeouts")),
            },
            "put": {
                "summary": "set timeouts (--set); 0 keeps a value",
                "requestBody": _body(_ref("Timeouts")),
                "responses": _resp("timeouts", _ref("Timeouts")),
            },
        },
        "/daemons": {
            "get": {
                "summary": "sync daemons (--daemon)",
                "responses": _resp("daemons", _obj(daemons={"type": "array", "items": _ref("Daemon")})),
            },
            "post": {
                "summary": "start a sync daemon (--start-daemon); state only, no multicast",
                "requestBody": _body(_ref("Daemon")),
                "responses": _resp("started", _obj(daemon=_ref("Daemon")), "201"),
            },
        },
        "/daemons/{state}": {
            "parameters": [
                {
                    "name": "state",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string", "enum": ["master", "backup"]},
                },
                {"name": "syncid", "in": "query", "required": False, "schema": _int(0, 255)},
            ],
            "delete": {
                "summary": "stop a sync daemon (--stop-daemon)",
                "responses": _resp("stopped", {"type": "object"}),
            },
        },
        "/connections": {
            "get": {
                "summary": "connection entries (-Lc)",
                "responses": _resp(
                    "connections", _obj(connections={"type": "array", "items": {"type": "object"}})
                ),
            }
        },
        "/batch": {
            "post": {
                "summary": "apply changes as one transaction (pylvsadm -R): all or none, one save",
                "requestBody": _body(
                    {
                        "type": "object",
                        "required": ["changes"],
                        "additionalProperties": False,
                        "properties": {
                            "changes": {
                                "type": "array",
                                "items": {
                                    "oneOf": [
                                        _ref("Change"),
                                        {
                                            "type": "array",
                                            "description": 'compact: ["S", service_id, scheduler, flags, '
                                            'timeout, netmask, pe_name] or ["D", service_id, addr, port, fwd, '
                                            "weight, u_threshold, l_threshold, tun_type, tun_port, tun_flags]",
                                        },
                                    ]
                                },
                            },
                            "source": {
                                "type": "string",
                                "enum": ["pylvsadm", "api", "config", "health", "web", "daemon"],
                            },
                        },
                    }
                ),
                "responses": _resp("applied", _obj(applied=_INT)),
            }
        },
        "/ipvsadm": {
            "post": {
                "summary": "run one pylvsadm command line in the daemon: what ipvsadm prints, and its exit code",
                "requestBody": _body(
                    {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "argv": {"type": "array", "items": _STR, "description": "the arguments"},
                            "prog": {**_STR, "minLength": 1, "default": "pylvsadm"},
                            "stdin": {**_STR, "nullable": True, "description": "-R's input"},
                            "flush_first": {
                                "type": "boolean",
                                "default": False,
                                "description": "pylvsadm-restore: -C then -R of stdin, one transaction",
                            },
                        },
                    }
                ),
                "responses": _resp("the command's result", _obj(out=_STR, err=_STR, code=_INT)),
            }
        },
        "/events": {
            "get": {
                "summary": "recent accepted changes",
                "parameters": [
                    {
                        "name": "since",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "integer", "minimum": 0},
                    },
                    {
                        "name": "limit",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "integer", "minimum": 0},
                    },
                ],
                "responses": _resp(
                    "events", _obj(events={"type": "array", "items": _ref("Event")}, last=_INT)
                ),
            }
        },
        "/events/stream": {
            "get": {
                "summary": "server-sent events, one per accepted change",
                "responses": {"200": {"description": "text/event-stream"}},
            }
        },
        "/reload": {
            "post": {
                "summary": "re-read the rules file (as SIGHUP); a bad file changes nothing",
                "responses": _resp("reloaded", _obj(changes=_INT, seconds={"type": "number"})),
            }
        },
    }
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "pylvsd control API",
            "version": __version__,
            "description": "IPVS rules over JSON. Refusals are 4xx with ipvsadm's message; nothing changes.",
        },
        "paths": paths,
        "components": {"schemas": SCHEMAS},
    }
