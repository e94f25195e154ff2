"""Helpers for the HTTP face's tests: a real server with RECSVC_HTTP_PORT=0, a urllib client."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

from recsvc.api.server import RunningServer, build_server
from recsvc.core import schema
from recsvc.core.config import Settings
from recsvc.store.reads.reader import RedisStore, connect

SERVICE = "/recsvc.v1.RetentionOfferService"


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@contextmanager
def http_server(settings: Settings, **changes: Any) -> Iterator[RunningServer]:
    settings = replace(settings, http_port=0, **changes)
    store = RedisStore(connect(settings), schema.keys_for(settings), settings)
    running = build_server(settings, store)
    try:
        yield running
    finally:
        running.stop(0)


def request(port: int, path: str, body: bytes | dict[str, Any] | list[Any] | None = None,
            method: str | None = None, headers: dict[str, str] | None = None,
            timeout: float = 5.0) -> Reply:
    """One HTTP request with urllib; 4xx/5xx come back as a Reply, not an exception."""
    data = json.dumps(body).encode() if isinstance(body, (dict, list)) else body
    all_headers = {"content-type": "application/json"} if data is not None else {}
    all_headers.update(headers or {})
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data,
                                 headers=all_headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as answer:
            return Reply(answer.status, {k.lower(): v for k, v in answer.headers.items()},
                         answer.read())
    except urllib.error.HTTPError as exc:
        return Reply(exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read())


def call(port: int, method: str, body: dict[str, Any] | bytes,
         token: str | None = None, **headers: str) -> Reply:
    more = {k.replace("_", "-"): v for k, v in headers.items()}
    if token is not None:
        more["authorization"] = f"Bearer {token}"
    return request(port, f"{SERVICE}/{method}", body, headers=more)
