"""The HTTP/JSON face: aiohttp on the gRPC server's own event loop, calling the same servicer.

``POST /recsvc.v1.RetentionOfferService/<Method>`` with a JSON body is the Connect protocol's
unary shape; the body is transcoded (``transcode.parse``) and handed to the very servicer
method gRPC calls, through a small context object, so the guard's cap, token check, request id,
metrics and logs, and every validation behind it, are the ones gRPC has. RecommendBatch answers
one JSON array of RecommendResponse, in the order of the ids. ``GET /healthz`` (readiness: a
model is in memory) and ``GET /livez`` (liveness: this process answers) are open.

Refused before the servicer (each a JSON ``{"code", "message"}``, never a traceback): an unknown
path (404), a token missing or without the scope (401/403, the same ``authorize``), a body that
is not ``application/json`` (415) or larger than ``RECSVC_HTTP_MAX_BODY_BYTES`` (413), JSON that
is not the request message (400, naming the field). CORS: ``cors.py``.
"""

from __future__ import annotations

import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from aiohttp import web
from google.protobuf import message_factory
from google.protobuf.message import Message

from recsvc.api.guard import CallLimiter, authorize, log_unexpected, request_id_of, status_for
from recsvc.api.handlers import SERVICE, SERVICE_NAME
from recsvc.api.http import cors, openapi, transcode
from recsvc.core.config import Settings
from recsvc.core.errors import InvalidRequestError, ListenError, RecsvcError
from recsvc.ops import metrics

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
JSON = "application/json"
# Headers a browser client may send (CORS) and the guard reads as metadata.
METADATA_HEADERS = ("authorization", "x-request-id")
MAX_TIMEOUT_MS = 10**10  # Connect: at most 10 digits


@dataclass(frozen=True)
class Route:
    name: str
    request: type[Message]
    streaming: bool


ROUTES = {m.name: Route(m.name, message_factory.GetMessageClass(m.input_type),
                        m.server_streaming) for m in SERVICE.methods}


class Aborted(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


class HttpCall:
    """What the guard and the servicer use of a grpc.aio context, from an HTTP request."""

    def __init__(self, metadata: tuple[tuple[str, str], ...], timeout_s: float | None) -> None:
        self._metadata = metadata
        self._deadline = None if timeout_s is None else time.monotonic() + timeout_s
        self.written: list[Message] = []
        self._code: grpc.StatusCode | None = None

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata

    def time_remaining(self) -> float | None:
        return None if self._deadline is None else max(0.0, self._deadline - time.monotonic())

    async def write(self, message: Message) -> None:
        self.written.append(message)

    async def abort(self, code: grpc.StatusCode, details: str = "") -> None:
        self._code = code
        raise Aborted(code, details)

    def code(self) -> grpc.StatusCode | None:
        return self._code


def error(code: grpc.StatusCode, message: str, status: int | None = None,
          headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status or transcode.HTTP_STATUS_OF[code],
                        body=transcode.error_body(code, message), content_type=JSON,
                        headers=headers)


def _timeout(request: web.Request) -> float | None:
    raw = request.headers.get("connect-timeout-ms")
    if raw is None:
        return None
    if not raw.isdigit() or not 0 < int(raw) < MAX_TIMEOUT_MS:
        raise InvalidRequestError("header connect-timeout-ms: a positive whole number of "
                                  f"milliseconds (at most 10 digits), got {raw[:20]!r}")
    return int(raw) / 1000.0


def _is_json(content_type: str) -> bool:
    return content_type.split(";", 1)[0].strip().lower() == JSON


class Face:
    """The request handlers, bound to the servicer and its limiter."""

    def __init__(self, servicer: Any, limiter: CallLimiter, max_body: int,
                 ready: Callable[[], bool]) -> None:
        self.servicer, self.limiter, self.max_body, self.ready = servicer, limiter, max_body, ready

    async def call(self, request: web.Request) -> web.Response:
        route = ROUTES.get(request.match_info["method"])
        if route is None:
            return error(grpc.StatusCode.NOT_FOUND,
                         f"no method {request.match_info['method']!r} in {SERVICE_NAME}; "
                         f"methods: {', '.join(ROUTES)}")
        metadata = tuple((name, request.headers[name]) for name in METADATA_HEADERS
                         if name in request.headers)
        request_id = request_id_of(dict(metadata))
        metadata = tuple(m for m in metadata if m[0] != "x-request-id")
        metadata += (("x-request-id", request_id),)
        headers = {"x-request-id": request_id}
        started = time.perf_counter()
        try:
            authorize(self.limiter, dict(metadata), route.name)
            message = await self._read(request, route)
            timeout = _timeout(request)
        except RecsvcError as exc:  # refused before the servicer: counted here
            code, text = status_for(exc)
            metrics.rpc(route.name, code.name, time.perf_counter() - started)
            return error(code, text, headers=headers)
        except web.HTTPRequestEntityTooLarge:
            metrics.rpc(route.name, "RESOURCE_EXHAUSTED", time.perf_counter() - started)
            return error(grpc.StatusCode.RESOURCE_EXHAUSTED,
                         f"request body over {self.max_body} bytes "
                         "(RECSVC_HTTP_MAX_BODY_BYTES)", status=413, headers=headers)
        if message is None:
            return error(grpc.StatusCode.INVALID_ARGUMENT,
                         f"content-type must be {JSON} (the Connect protocol's unary JSON)",
                         status=415, headers=headers)
        call = HttpCall(metadata, timeout)
        method: Callable[[Any, Any], Awaitable[Message | None]] = getattr(self.servicer,
                                                                          route.name)
        try:
            answer = await method(message, call)  # the guard: cap, auth, metrics, logs
        except Aborted as exc:
            return error(exc.code, exc.message, headers=headers)
        body = (transcode.to_json_array(call.written) if route.streaming
                else transcode.to_json(answer))  # type: ignore[arg-type]
        return web.Response(body=body, content_type=JSON, headers=headers)

    async def _read(self, request: web.Request, route: Route) -> Message | None:
        if not _is_json(request.headers.get("content-type", "")):
            return None
        if request.content_length is not None and request.content_length > self.max_body:
            raise web.HTTPRequestEntityTooLarge(max_size=self.max_body,
                                                actual_size=request.content_length)
        body = await request.read()  # aiohttp stops reading at client_max_size (413)
        return transcode.parse(route.request, body)

    async def healthz(self, request: web.Request) -> web.Response:
        """200 SERVING when this instance can answer (a model in memory), else 503."""
        serving = self.ready()
        return web.json_response({"status": "SERVING" if serving else "NOT_SERVING"},
                                 status=200 if serving else 503)

    async def livez(self, request: web.Request) -> web.Response:
        """200 while the process's event loop answers, model or not: a liveness probe must not
        restart a server that merely waits for its first model (that is /healthz's 503)."""
        return web.json_response({"status": "ALIVE"})


@web.middleware
async def json_errors(request: web.Request,
                      handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                      ) -> web.StreamResponse:
    """aiohttp's own refusals (404, 405, 413) and any bug as JSON, never a traceback."""
    try:
        return await handler(request)
    except web.HTTPRequestEntityTooLarge as exc:
        return error(grpc.StatusCode.RESOURCE_EXHAUSTED, exc.text or "request body too large",
                     status=413)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = {404: grpc.StatusCode.NOT_FOUND, 405: grpc.StatusCode.UNIMPLEMENTED}.get(
            exc.status, grpc.StatusCode.INVALID_ARGUMENT)
        return error(code, f"{request.method} {request.path}: {exc.reason}", status=exc.status)
    except Exception:
        log_unexpected(f"http:{request.path}")
        return error(grpc.StatusCode.INTERNAL, "internal error (see the server log)")


def build_app(servicer: Any, limiter: CallLimiter, max_body: int, origins: str,
              ready: Callable[[], bool], openapi: bytes) -> web.Application:
    face = Face(servicer, limiter, max_body, ready)
    policy = cors.Policy.parse(origins, (*METADATA_HEADERS, "content-type",
                                         "connect-protocol-version", "connect-timeout-ms"))
    app = web.Application(client_max_size=max_body,
                          middlewares=[cors.middleware(policy), json_errors])
    app.router.add_post(f"/{SERVICE_NAME}/{{method}}", face.call)
    app.router.add_get("/healthz", face.healthz)
    app.router.add_get("/livez", face.livez)

    async def openapi_json(request: web.Request) -> web.Response:
        return web.Response(body=openapi, content_type=JSON)

    app.router.add_get("/openapi.json", openapi_json)
    async def demo(request: web.Request) -> web.FileResponse:
        return web.FileResponse(STATIC / "demo.html")

    app.router.add_get("/demo", demo)  # the demo agent console around the panel
    app.router.add_static("/static/", STATIC, show_index=False)  # recsvc-offers.js
    return app


@dataclass
class HttpFace:
    runner: web.AppRunner
    port: int

    async def stop(self) -> None:
        await self.runner.cleanup()


def ssl_context_of(settings: Settings) -> ssl.SSLContext | None:
    """HTTPS with the gRPC port's certificate (and client CA) when TLS is configured.

    Read once at start: unlike the gRPC port, a renewed certificate needs a restart here.
    """
    if not settings.tls_cert_file:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(settings.tls_cert_file, settings.tls_key_file)
    if settings.tls_client_ca_file:
        context.load_verify_locations(settings.tls_client_ca_file)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


async def start(servicer: Any, limiter: CallLimiter, settings: Settings,
                ready: Callable[[], bool], reuse_port: bool = False) -> HttpFace:
    """Bind and start the HTTP face on the running loop; ListenError when the port is taken."""
    app = build_app(servicer, limiter, settings.http_max_body_bytes, settings.http_cors_origins,
                    ready, openapi.render())
    # no access log: the guard logs and counts each call, as for gRPC
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=settings.grace_seconds)
    await runner.setup()
    host = settings.http_host or settings.host
    site = web.TCPSite(runner, host, settings.http_port, reuse_port=reuse_port or None,
                       ssl_context=ssl_context_of(settings))
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise ListenError(f"RECSVC_HTTP_PORT: cannot listen on {host}:{settings.http_port} "
                          f"({exc.strerror})") from None
    port = int(runner.addresses[0][1])
    log.info("HTTP/JSON face on %s:%d", host, port)
    return HttpFace(runner, port)
