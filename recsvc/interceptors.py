"""The one place where domain errors become gRPC statuses, and the concurrency cap.

Server interceptors run in grpcio's polling thread before a call is queued for a worker thread,
so the cap counts queued calls too, and it can leave health checks and reflection alone (grpcio's
own ``maximum_concurrent_rpcs`` would reject them under load).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import grpc

from recsvc.errors import (
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

CAPPED_SERVICE_PREFIX = "/recsvc.v1."


def status_for(exc: Exception) -> tuple[grpc.StatusCode, str]:
    for kind, code in STATUS_OF.items():
        if isinstance(exc, kind):
            return code, str(exc)
    return grpc.StatusCode.INTERNAL, "internal error (see the server log)"


def _abort(context: grpc.ServicerContext, exc: Exception) -> None:
    code, message = status_for(exc)
    if code == grpc.StatusCode.INTERNAL:
        log.exception("unexpected error")
    context.abort(code, message)


if TYPE_CHECKING:  # generic in grpc-stubs only
    Handler = grpc.RpcMethodHandler[Any, Any]
    Interceptor = grpc.ServerInterceptor[Any, Any]
else:
    Handler = grpc.RpcMethodHandler
    Interceptor = grpc.ServerInterceptor


def _wrap(handler: Handler,
          around: Callable[[Callable[..., Any]], Callable[..., Any]]) -> Handler:
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(
            around(handler.unary_unary), handler.request_deserializer, handler.response_serializer)
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(
            around(handler.unary_stream), handler.request_deserializer,
            handler.response_serializer)
    return handler  # this service has no client-streaming methods


class ErrorInterceptor(Interceptor):
    """Maps RecsvcError subclasses to statuses; anything else is INTERNAL and logged."""

    def intercept_service(self, continuation: Callable[[Any], Any], details: Any) -> Any:
        handler = continuation(details)
        if handler is None or not details.method.startswith(CAPPED_SERVICE_PREFIX):
            return handler
        return _wrap(handler, _guard_errors)


def _guard_errors(behavior: Callable[..., Any]) -> Callable[..., Any]:
    def unary(request: Any, context: grpc.ServicerContext) -> Any:
        try:
            result = behavior(request, context)
        except Exception as exc:
            _abort(context, exc)
            raise  # unreachable: abort raises
        if isinstance(result, Iterator):
            return _guard_stream(result, context)
        return result

    return unary


def _guard_stream(stream: Iterator[Any], context: grpc.ServicerContext) -> Iterator[Any]:
    try:
        yield from stream
    except Exception as exc:
        _abort(context, exc)


class ConcurrencyLimitInterceptor(Interceptor):
    """At most ``limit`` recsvc calls in flight (queued or running); beyond: RESOURCE_EXHAUSTED.

    Health checks and reflection are never counted. A slot whose call never ran (grpcio can drop a
    call cancelled while queued without running its handler) is reclaimed after ``stale_after``.
    """

    def __init__(self, limit: int, stale_after: float = 60.0) -> None:
        self.limit = limit
        self.stale_after = stale_after
        self._slots: dict[int, float] = {}
        self._next = 0
        self._lock = threading.Lock()

    @property
    def in_flight(self) -> int:
        return len(self._slots)

    def _take(self) -> int | None:
        now = time.monotonic()
        with self._lock:
            if len(self._slots) >= self.limit:
                for slot, since in list(self._slots.items()):
                    if now - since > self.stale_after:
                        del self._slots[slot]
                if len(self._slots) >= self.limit:
                    return None
            self._next += 1
            self._slots[self._next] = now
            return self._next

    def _give(self, slot: int) -> None:
        with self._lock:
            self._slots.pop(slot, None)

    def intercept_service(self, continuation: Callable[[Any], Any], details: Any) -> Any:
        handler = continuation(details)
        if handler is None or not details.method.startswith(CAPPED_SERVICE_PREFIX):
            return handler
        slot = self._take()
        if slot is None:
            limit = self.limit

            def reject(behavior: Callable[..., Any]) -> Callable[..., Any]:
                def refuse(request: Any, context: grpc.ServicerContext) -> Any:
                    context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                  f"server busy: {limit} calls already in flight; retry with "
                                  "backoff or add instances")
                return refuse

            return _wrap(handler, reject)

        def release_after(behavior: Callable[..., Any]) -> Callable[..., Any]:
            def call(request: Any, context: grpc.ServicerContext) -> Any:
                try:
                    result = behavior(request, context)
                except BaseException:
                    self._give(slot)
                    raise
                if isinstance(result, Iterator):
                    return self._release_stream(result, slot)
                self._give(slot)
                return result
            return call

        return _wrap(handler, release_after)

    def _release_stream(self, stream: Iterator[Any], slot: int) -> Iterator[Any]:
        try:
            yield from stream
        finally:
            self._give(slot)
