"""Around every recsvc RPC: the concurrency cap, and the one place domain errors become statuses.

A decorator on the servicer's methods rather than a server interceptor: grpc.aio builds a new
handler per call for every interceptor, and health checks and reflection, which are not
decorated, are never counted, rejected or asked for a token (grpcio's own
``maximum_concurrent_rpcs`` would reject them under load). Everything runs on the event loop, so
the counter needs no lock. Per call it also binds the request id (``x-request-id`` metadata, or a
new one) to the call's log lines, checks the token when auth is on, and records the call's
latency and status in the metrics.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

import grpc
import grpc.aio

from recsvc.api.auth import Authenticator
from recsvc.core.errors import (
    AuthenticationError,
    DeadlineExceededError,
    InvalidRequestError,
    ModelNotPublishedError,
    OverloadedError,
    PermissionDeniedError,
    StoreError,
)
from recsvc.ops import logs, metrics

log = logging.getLogger(__name__)

STATUS_OF: dict[type[Exception], grpc.StatusCode] = {
    InvalidRequestError: grpc.StatusCode.INVALID_ARGUMENT,
    ModelNotPublishedError: grpc.StatusCode.FAILED_PRECONDITION,
    DeadlineExceededError: grpc.StatusCode.DEADLINE_EXCEEDED,
    OverloadedError: grpc.StatusCode.RESOURCE_EXHAUSTED,
    AuthenticationError: grpc.StatusCode.UNAUTHENTICATED,
    PermissionDeniedError: grpc.StatusCode.PERMISSION_DENIED,
    StoreError: grpc.StatusCode.UNAVAILABLE,
}   # anything else: INTERNAL with a generic message; the traceback goes to the log only


def status_for(exc: Exception) -> tuple[grpc.StatusCode, str]:
    for kind, code in STATUS_OF.items():
        if isinstance(exc, kind):
            return code, str(exc)
    return grpc.StatusCode.INTERNAL, "internal error (see the server log)"


class CallLimiter:
    """At most ``limit`` recsvc calls in flight per process; beyond: RESOURCE_EXHAUSTED."""

    def __init__(self, limit: int, auth: Authenticator | None = None) -> None:
        self.limit = limit
        self.in_flight = 0
        self.auth = auth  # None: no token needed


def request_id_of(metadata: dict[str, Any]) -> str:
    """The caller's ``x-request-id`` when it is a sane one (<= 64 printable ASCII), else new."""
    given = metadata.get("x-request-id")
    if isinstance(given, str) and 0 < len(given) <= 64 and given.isascii() \
            and given.isprintable():
        return given
    return logs.new_request_id()


def authorize(limiter: CallLimiter, metadata: dict[str, Any], method: str) -> None:
    """Raises AuthenticationError/PermissionDeniedError unless the call may run ``method``."""
    if limiter.auth is not None:
        try:
            limiter.auth.check(metadata.get("authorization"), method)
        except (AuthenticationError, PermissionDeniedError) as exc:
            log.info("call refused", extra={"method": method, "cause": str(exc)})
            raise


class Limited(Protocol):
    limiter: CallLimiter


S = TypeVar("S", bound=Limited)
Method = Callable[[S, Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]


def guarded(method: Method[S]) -> Method[S]:
    name = method.__name__

    @functools.wraps(method)
    async def call(self: S, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        started = time.perf_counter()
        limiter = self.limiter
        metadata = dict(context.invocation_metadata() or ())
        bound = logs.bind_request(request_id_of(metadata))
        code = grpc.StatusCode.OK
        try:
            if limiter.in_flight >= limiter.limit:
                raise OverloadedError(f"server busy: {limiter.limit} calls already in flight; "
                                      "retry with backoff or add instances")
            authorize(limiter, metadata, name)
            limiter.in_flight += 1
            try:
                return await method(self, request, context)
            finally:
                limiter.in_flight -= 1
        except grpc.aio.AbortError:
            code = context.code() or grpc.StatusCode.UNKNOWN
            raise
        except asyncio.CancelledError:
            code = grpc.StatusCode.CANCELLED
            raise
        except Exception as exc:
            code, message = status_for(exc)
            if code == grpc.StatusCode.INTERNAL:
                log.exception("unexpected error in %s", name)
            await context.abort(code, message)
        finally:
            metrics.rpc(name, code.name, time.perf_counter() - started)
            logs.unbind_request(bound)

    return call
