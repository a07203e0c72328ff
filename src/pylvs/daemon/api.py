"""The control API: JSON over HTTP (aiohttp), on the unix socket and optionally on TCP with a token.

Every handler turns the request into Change values (codec/changes validate shapes and ranges) and hands
them to DaemonState.apply; a refusal comes back as a 4xx JSON body
{"errno": N, "op": "add-service", "message": <ipvsadm's text>, ...}. Nothing else ever leaks out: an
unexpected exception is logged and answered with a 500 JSON body, never a traceback.
"""

from __future__ import annotations

import asyncio
import errno
import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import fields
from typing import Any

from aiohttp import web

from pylvs import __version__ as PYLVS_VERSION
from pylvs.core.errors import IPVSError, Op
from pylvs.core.snapshot import ConnView
from pylvs.daemon import codec
from pylvs.daemon.changes import Change, ChangeParser, daemon_to_json, parse_change, parse_daemon
from pylvs.daemon.codec import BadRequest
from pylvs.daemon.events import SOURCES
from pylvs.daemon.openapi import openapi_document
from pylvs.daemon.state import BatchError, DaemonState, SaveError
from pylvs.daemon.store import RulesFileError

log = logging.getLogger("pylvsd")

STATE_KEY: web.AppKey[DaemonState] = web.AppKey("state", DaemonState)
MAX_BODY = 512 * 1024 * 1024  # a 100,000-server batch is ~25 MB of JSON
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_STATUS = {
    errno.EEXIST: 409,
    errno.ESRCH: 404,
    errno.ENOENT: 404,
    errno.EPERM: 403,
}


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


def _json(obj: Any, status: int = 200) -> web.Response:
    return web.Response(text=_dumps(obj), status=status, content_type="application/json")


def error_body(op: Op | None, err: int, message: str, **extra: Any) -> dict[str, Any]:
    return {"errno": err, "op": op.value if op is not None else None, "message": message, **extra}


def _ipvs_error_response(e: IPVSError, **extra: Any) -> web.Response:
    body = error_body(e.op, e.errno, e.message, detail=e.detail, **extra)
    return _json(body, _STATUS.get(e.errno, 400))


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except BadRequest as e:
        return _json(error_body(e.op, e.errno, e.message, detail=e.detail), e.status)
    except IPVSError as e:
        return _ipvs_error_response(e)
    except BatchError as e:
        return _ipvs_error_response(e.error, index=e.index)
    except SaveError as e:
        body = error_body(None, errno.EIO, "Input/output error", detail=f"rules file not written: {e}")
        return _json(body, 503)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        body = error_body(None, errno.EINVAL, e.reason, detail=f"{request.method} {request.path}")
        return _json(body, e.status)
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("internal error on %s %s", request.method, request.path)
        return _json(error_body(None, errno.EIO, "Internal error", detail="see the pylvsd log"), 500)


def token_middleware(token: str) -> Any:
    want = f"Bearer {token}".encode()

    @web.middleware
    async def check(request: web.Request, handler: Handler) -> web.StreamResponse:
        got = request.headers.get("Authorization", "").encode()
        if not hmac.compare_digest(got, want):
            body = error_body(None, errno.EPERM, "Permission denied (you must be root)", detail="bad token")
            return _json(body, 401)
        return await handler(request)

    return check


# -- helpers ------------------------------------------------------------------------------------------
def _state(request: web.Request) -> DaemonState:
    return request.app[STATE_KEY]


def _source(request: web.Request, default: str = "api") -> str:
    src = request.headers.get("X-Pylvs-Source", default)
    return src if src in SOURCES else default


async def _body(request: web.Request, op: Op | None = None) -> Any:
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise BadRequest("request body too large", op, status=413) from None
    if not raw:
        return {}
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("request body is not valid JSON", op) from None


async def _apply(request: web.Request, change: Change) -> None:
    await _state(request).apply([change], _source(request))


def _find_service(state: DaemonState, sid: str, op: Op) -> dict[str, Any]:
    key = codec.parse_service_id(sid, op)
    for s in state.snapshot().services:
        if s.key() == key:
            return codec.service_view_to_json(s)
    raise IPVSError(op, errno.ESRCH)


# -- handlers -------------------------------------------------------------------------------------------
async def get_openapi(request: web.Request) -> web.Response:
    return _json(openapi_document())


async def get_status(request: web.Request) -> web.Response:
    st = _state(request)
    d = st.director
    return _json(
        {
            "version": PYLVS_VERSION,
            "engine": st.engine_name,
            "services": len(d.services),
            "dests": sum(len(s.dests) for s in d.services),
            "generation": d.services.generation,
            "uptime": round(st.clock() - st.started, 3),
            "rules_file": str(st.store.path) if st.store is not None else None,
            "events": st.events.last_seq,
        }
    )


async def get_health(request: web.Request) -> web.Response:
    """Health-check state from --config (keepalived.conf): per real server up/down and why."""
    health = getattr(_state(request), "health", None)
    if health is None:
        return _json({"config": None, "virtual_servers": [], "events": [], "lag": {}})
    return _json(health.to_json())


async def get_snapshot(request: web.Request) -> web.Response:
    snap = _state(request).snapshot()
    if request.query.get("compact") in ("1", "true", "yes"):
        return _json(codec.snapshot_to_compact(snap))
    return _json(codec.snapshot_to_json(snap))


async def list_services(request: web.Request) -> web.Response:
    snap = _state(request).snapshot()
    return _json({"services": [codec.service_view_to_json(s) for s in snap.services]})


async def add_service(request: web.Request) -> web.Response:
    op = Op.ADD_SERVICE
    body = codec._obj(await _body(request, op), "request", op)
    codec._only(body, frozenset({"service", "config"}), "request", op)
    key = codec.parse_key(body.get("service"), op)
    cfg = codec.parse_service_config(body.get("config", {}), op, key.af)
    await _apply(request, Change("add_service", key=key, svc=cfg))
    return _json({"service": codec.service_id(key)}, 201)


async def get_service(request: web.Request) -> web.Response:
    return _json(_find_service(_state(request), request.match_info["sid"], Op.GET_SERVICE))


async def edit_service(request: web.Request) -> web.Response:
    op = Op.EDIT_SERVICE
    key = codec.parse_service_id(request.match_info["sid"], op)
    body = codec._obj(await _body(request, op), "request", op)
    codec._only(body, frozenset({"config"}), "request", op)
    cfg = codec.parse_service_config(body.get("config", {}), op, key.af)
    await _apply(request, Change("edit_service", key=key, svc=cfg))
    return _json({"service": codec.service_id(key)})


async def del_service(request: web.Request) -> web.Response:
    key = codec.parse_service_id(request.match_info["sid"], Op.DEL_SERVICE)
    await _apply(request, Change("del_service", key=key))
    return _json({})


async def flush(request: web.Request) -> web.Response:
    await _apply(request, Change("flush"))
    return _json({})


async def list_dests(request: web.Request) -> web.Response:
    svc = _find_service(_state(request), request.match_info["sid"], Op.GET_SERVICE)
    return _json({"dests": svc["dests"]})


async def add_dest(request: web.Request) -> web.Response:
    op = Op.ADD_DEST
    key = codec.parse_service_id(request.match_info["sid"], op)
    cfg = codec.parse_dest_config(await _body(request, op), op)
    await _apply(request, Change("add_dest", key=key, dest=cfg))
    return _json({"dest": codec.hostport(cfg.addr, cfg.port)}, 201)


async def edit_dest(request: web.Request) -> web.Response:
    op = Op.EDIT_DEST
    key = codec.parse_service_id(request.match_info["sid"], op)
    addr, port = codec.parse_dest_id(request.match_info["did"], op)
    body = codec._obj(await _body(request, op), "dest", op)
    body = {"addr": str(addr), "port": port, **body}
    cfg = codec.parse_dest_config(body, op)
    if (cfg.addr, cfg.port) != (addr, port):
        raise BadRequest("addr/port in the body differ from the path", op)
    await _apply(request, Change("edit_dest", key=key, dest=cfg))
    return _json({"dest": codec.hostport(addr, port)})


async def del_dest(request: web.Request) -> web.Response:
    op = Op.DEL_DEST
    key = codec.parse_service_id(request.match_info["sid"], op)
    addr, port = codec.parse_dest_id(request.match_info["did"], op)
    await _apply(request, Change("del_dest", key=key, addr=addr, port=port))
    return _json({})


async def zero(request: web.Request) -> web.Response:
    op = Op.ZERO
    body = codec._obj(await _body(request, op), "request", op)
    codec._only(body, frozenset({"service"}), "request", op)
    sv = body.get("service")
    key = None if sv is None else codec.parse_key(sv, op)
    await _apply(request, Change("zero", key=key))
    return _json({})


async def zero_service(request: web.Request) -> web.Response:
    key = codec.parse_service_id(request.match_info["sid"], Op.ZERO)
    await _apply(request, Change("zero", key=key))
    return _json({})


async def get_timeouts(request: web.Request) -> web.Response:
    t = _state(request).director.timeouts
    return _json({"tcp": t.tcp, "tcpfin": t.tcpfin, "udp": t.udp})


async def set_timeouts(request: web.Request) -> web.Response:
    body = await _body(request, Op.SET_TIMEOUT)
    if isinstance(body, dict):
        body = {"op": "set_timeouts", **body}
    change = parse_change(body)
    await _apply(request, change)
    return await get_timeouts(request)


async def list_daemons(request: web.Request) -> web.Response:
    snap = _state(request).snapshot()
    return _json({"daemons": [daemon_to_json(d) for d in snap.daemons]})


async def start_daemon(request: web.Request) -> web.Response:
    dv = parse_daemon(await _body(request, Op.START_DAEMON))
    await _apply(request, Change("start_daemon", daemon=dv))
    return _json({"daemon": daemon_to_json(_state(request).rules.daemons[dv.state])}, 201)


async def stop_daemon(request: web.Request) -> web.Response:
    op = Op.STOP_DAEMON
    state = request.match_info["state"]
    if state not in ("master", "backup"):
        raise BadRequest("state must be master or backup", op)
    syncid_s = request.query.get("syncid", "0")
    if not syncid_s.isdigit() or int(syncid_s) > 255:
        raise BadRequest("syncid must be 0..255", op)
    await _apply(request, Change("stop_daemon", state=state, syncid=int(syncid_s)))
    return _json({})


async def get_connections(request: web.Request) -> web.Response:
    conns = _state(request).connections()
    return _json({"connections": [_conn_json(c) for c in conns]})


def _conn_json(c: ConnView) -> dict[str, Any]:
    return {f.name: getattr(c, f.name) for f in fields(c)}


async def batch(request: web.Request) -> web.Response:
    body = codec._obj(await _body(request), "request", None)
    codec._only(body, frozenset({"changes", "source"}), "request", None)
    raw = body.get("changes")
    if not isinstance(raw, list):
        raise BadRequest("changes must be a list")
    changes = []
    parser = ChangeParser()
    for i, item in enumerate(raw):
        try:
            changes.append(parser.parse(item))
        except BadRequest as e:
            return _json(error_body(e.op, e.errno, e.message, detail=e.detail, index=i), e.status)
    src = body.get("source", _source(request))
    if src not in SOURCES:
        raise BadRequest(f"source must be one of {', '.join(SOURCES)}")
    try:
        await _state(request).apply(changes, src)
    except IPVSError as e:  # a one-change batch is applied directly: still name the change
        return _ipvs_error_response(e, index=0)
    return _json({"applied": len(changes)})


async def ipvsadm(request: web.Request) -> web.Response:
    """Run one pylvsadm command line here (see pylvs.daemon.adm): {"out", "err", "code"}."""
    from pylvs.daemon.adm import run_command  # the ipvsadm code, loaded on first use

    body = codec._obj(await _body(request), "request", None)
    codec._only(body, frozenset({"argv", "prog", "stdin", "flush_first"}), "request", None)
    argv = body.get("argv", [])
    if not isinstance(argv, list) or not all(isinstance(a, str) for a in argv):
        raise BadRequest("argv must be a list of strings")
    prog = body.get("prog", "pylvsadm")
    stdin = body.get("stdin")
    flush_first = body.get("flush_first", False)
    if not isinstance(prog, str) or not prog:
        raise BadRequest("prog must be a non-empty string")
    if stdin is not None and not isinstance(stdin, str):
        raise BadRequest("stdin must be a string or null")
    if not isinstance(flush_first, bool):
        raise BadRequest("flush_first must be a boolean")
    result = await run_command(
        _state(request), argv, prog, stdin, flush_first=flush_first, source=_source(request, "pylvsadm")
    )
    return _json({"out": result.out, "err": result.err, "code": result.code})


async def get_events(request: web.Request) -> web.Response:
    since, limit = _int_query(request, "since", 0), _int_query(request, "limit", 100)
    evs = _state(request).events.recent(since, limit)
    return _json({"events": [e.to_json() for e in evs], "last": _state(request).events.last_seq})


def _int_query(request: web.Request, name: str, default: int) -> int:
    v = request.query.get(name)
    if v is None:
        return default
    if not v.isdigit() or len(v) > 18:
        raise BadRequest(f"query parameter {name} must be a non-negative integer")
    return int(v)


async def stream_events(request: web.Request) -> web.StreamResponse:
    """Server-sent events: the recent ring after ?since=N, then every new event as it happens."""
    st = _state(request)
    since = _int_query(request, "since", st.events.last_seq)
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await resp.prepare(request)
    q = st.events.subscribe()
    closing = asyncio.ensure_future(st.closing.wait())
    try:
        for ev in st.events.recent(since, 1000):
            await resp.write(f"id: {ev.seq}\ndata: {_dumps(ev.to_json())}\n\n".encode())
        while not st.closing.is_set():
            getter = asyncio.ensure_future(q.get())
            done, _ = await asyncio.wait({getter, closing}, timeout=15.0, return_when=asyncio.FIRST_COMPLETED)
            if getter not in done:
                getter.cancel()
                if not done:
                    await resp.write(b": keep-alive\n\n")
                continue
            ev = getter.result()
            if ev.seq > since:
                await resp.write(f"id: {ev.seq}\ndata: {_dumps(ev.to_json())}\n\n".encode())
    except ConnectionResetError:
        pass
    finally:
        closing.cancel()
        st.events.unsubscribe(q)
    return resp


async def reload(request: web.Request) -> web.Response:
    st = _state(request)
    t0 = time.monotonic()
    try:
        n = await st.reload(_source(request))
    except RulesFileError as e:
        body = error_body(None, errno.EINVAL, "Invalid argument", detail=f"rules file refused: {e}")
        return _json(body, 422)
    return _json({"changes": n, "seconds": round(time.monotonic() - t0, 3)})


def make_app(state: DaemonState, token: str | None = None) -> web.Application:
    middlewares: list[Any] = [error_middleware]
    if token is not None:
        middlewares.append(token_middleware(token))
    app = web.Application(client_max_size=MAX_BODY, middlewares=middlewares)
    app[STATE_KEY] = state
    r = app.router
    r.add_get("/openapi.json", get_openapi)
    r.add_get("/status", get_status)
    r.add_get("/snapshot", get_snapshot)
    r.add_get("/health", get_health)
    r.add_get("/services", list_services)
    r.add_post("/services", add_service)
    r.add_delete("/services", flush)
    r.add_post("/flush", flush)
    r.add_get("/services/{sid}", get_service)
    r.add_put("/services/{sid}", edit_service)
    r.add_delete("/services/{sid}", del_service)
    r.add_post("/services/{sid}/zero", zero_service)
    r.add_get("/services/{sid}/dests", list_dests)
    r.add_post("/services/{sid}/dests", add_dest)
    r.add_put("/services/{sid}/dests/{did}", edit_dest)
    r.add_delete("/services/{sid}/dests/{did}", del_dest)
    r.add_post("/zero", zero)
    r.add_get("/timeouts", get_timeouts)
    r.add_put("/timeouts", set_timeouts)
    r.add_get("/daemons", list_daemons)
    r.add_post("/daemons", start_daemon)
    r.add_delete("/daemons/{state}", stop_daemon)
    r.add_get("/connections", get_connections)
    r.add_post("/batch", batch)
    r.add_post("/ipvsadm", ipvsadm)
    r.add_get("/events", get_events)
    r.add_get("/events/stream", stream_events)
    r.add_post("/reload", reload)
    return app
