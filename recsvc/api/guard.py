"""Around every recsvc RPC: the concurrency cap, and the one place domain errors become statuses.

A decorator on the servicer's methods rather than a server interceptor: grpc.aio builds a new
handler per call for every interceptor, and health checks and reflection, which are not
decorated, are never counted or rejected (grpcio's own ``maximum_concurrent_rpcs`` would reject
them under load). Everything runs on the event loop, so the counter needs no lock.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

import grpc
import grpc.aio

from recsvc.core.errors import (
    DeadlineExceededError,
    InvalidRequestError,
    ModelNotPublishedError,
    OverloadedError,
    StoreError,
)

log = logging.getLogger(__name__)

STATUS_OF: dict[type[Exception], grpc.StatusCode] = {
    InvalidRequestError: grpc.StatusCode.INVALID_ARGUMENT,
    ModelNotPublishedError: grpc.StatusCode.FAILED_PRECONDITION,
    DeadlineExceededError: grpc.StatusCode.DEADLINE_EXCEEDED,
    OverloadedError: grpc.StatusCode.RESOURCE_EXHAUSTED,
    StoreError: grpc.StatusCode.UNAVAILABLE,
}   # anything else: INTERNAL with a generic message; the traceback goes to the log only


def status_for(exc: Exception) -> tuple[grpc.StatusCode, str]:
    for kind, code in STATUS_OF.items():
        if isinstance(exc, kind):
            return code, str(exc)
    return grpc.StatusCode.INTERNAL, "internal error (see the server log)"


class CallLimiter:
    """At most ``limit`` recsvc calls in flight per process; beyond: RESOURCE_EXHAUSTED."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_flight = 0


class Limited(Protocol):
    limiter: CallLimiter


S = TypeVar("S", bound=Limited)
Method = Callable[[S, Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]


def guarded(method: Method[S]) -> Method[S]:
    @functools.wraps(method)
    async def call(self: S, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        limiter = self.limiter
        if limiter.in_flight >= limiter.limit:
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                f"server busy: {limiter.limit} calls already in flight; retry "
                                "with backoff or add instances")
        limiter.in_flight += 1
        try:
            return await method(self, request, context)
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            code, message = status_for(exc)
            if code == grpc.StatusCode.INTERNAL:
                log.exception("unexpected error in %s", method.__name__)
            await context.abort(code, message)
        finally:
            limiter.in_flight -= 1

    return call
