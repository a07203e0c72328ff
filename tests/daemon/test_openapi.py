"""The OpenAPI document describes exactly the routes the daemon serves."""

from __future__ import annotations

import json

from pylvs.daemon.api import make_app
from pylvs.daemon.openapi import openapi_document
from pylvs.daemon.rules import Rules
from pylvs.daemon.state import DaemonState


def test_document_matches_routes() -> None:
    app = make_app(DaemonState(Rules()))
    served = set()
    for route in app.router.routes():
        if route.method == "HEAD":
            continue
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("path") or info.get("formatter")
        served.add((route.method.lower(), path))
    doc = openapi_document()
    described = {(m, p) for p, item in doc["paths"].items() for m in item if m != "parameters"}
    assert served == described
    json.dumps(doc)  # serialisable


def test_every_operation_documents_its_errors() -> None:
    doc = openapi_document()
    for path, item in doc["paths"].items():
        for method, op in item.items():
            if method == "parameters" or path in ("/events/stream",):
                continue
            assert "4XX" in op["responses"], (method, path)
