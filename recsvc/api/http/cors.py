"""CORS for the CRM pages that call the HTTP face from a browser: an allow-list of origins.

``RECSVC_HTTP_CORS_ORIGINS`` is a comma-separated list of exact origins
(``https://crm.example.com``); ``*`` admits any origin (for trying things out: with tokens in
browsers, name the CRM's origins). A preflight (``OPTIONS`` with
``Access-Control-Request-Method``) from an origin on the list gets 204 with the allowed methods
and headers; from any other origin 403 with a JSON body saying which setting admits it. Plain
requests from an origin not on the list are served without CORS headers, so the browser keeps
the answer from the page (non-browser clients send no Origin and are unaffected).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

METHODS = "GET, POST, OPTIONS"
MAX_AGE = "600"  # seconds a browser may cache a preflight
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class Policy:
    origins: frozenset[str]
    any_origin: bool
    headers: str

    @classmethod
    def parse(cls, text: str, headers: tuple[str, ...]) -> Policy:
        names = {o.strip().rstrip("/") for o in text.split(",") if o.strip()}
        return cls(frozenset(names - {"*"}), "*" in names, ", ".join(headers))

    def allows(self, origin: str) -> bool:
        return self.any_origin or origin in self.origins


def _same_origin(request: web.Request, origin: str) -> bool:
    return origin == f"{request.scheme}://{request.host}"


def middleware(policy: Policy) -> Any:
    @web.middleware
    async def cors(request: web.Request, handler: Handler) -> web.StreamResponse:
        origin = request.headers.get("origin")
        preflight = (request.method == "OPTIONS"
                     and "access-control-request-method" in request.headers)
        if origin is None or (_same_origin(request, origin) and not preflight):
            return await handler(request)
        allowed = policy.allows(origin) or _same_origin(request, origin)
        if preflight:
            if not allowed:
                body = {"code": "permission_denied",
                        "message": f"origin {origin[:200]} is not allowed: add it to "
                                   "RECSVC_HTTP_CORS_ORIGINS"}
                return web.Response(status=403, body=json.dumps(body).encode(),
                                    content_type="application/json", headers={"vary": "origin"})
            return web.Response(status=204, headers={
                "access-control-allow-origin": origin,
                "access-control-allow-methods": METHODS,
                "access-control-allow-headers": policy.headers,
                "access-control-max-age": MAX_AGE,
                "vary": "origin"})
        response = await handler(request)
        if allowed:
            response.headers["access-control-allow-origin"] = origin
            response.headers["access-control-expose-headers"] = "x-request-id"
            response.headers["vary"] = "origin"
        return response
    return cors


