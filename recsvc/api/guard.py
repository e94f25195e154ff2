"""Around every recsvc RPC: parsing the request, the concurrency cap, and the one place domain
errors become statuses.

A decorator on the servicer's methods rather than a server interceptor: grpc.aio builds a new
handler per call for every interceptor, and health checks and reflection, which are not
decorated, are never counted, rejected or asked for a token (grpcio's own
``maximum_concurrent_rpcs`` would reject them under load). ``guarded`` runs on the event loop, so
its counter needs no lock; ``guarded_sync``, the same for the thread-pool server model, counts
under the limiter's lock. Per call both bind the request id (``x-request-id`` metadata, or a new
one) to the call's log lines, check the cap and then the token when auth is on (``authorize``),
and record the call's latency and status in the metrics.

Requests arrive as bytes (``handlers.add_servicer`` registers no deserializer) and ``parse``
decodes them here: bytes that are not a valid message (wire format, bad UTF-8 in a string) are
INVALID_ARGUMENT, where grpcio's own deserializer answered INTERNAL and logged a traceback per
call. Failures are logged through ``RateLimitedLog``: one line per kind and interval with the
count of the others, so a fuzzer cannot fill the disk.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, Protocol, TypeVar

import grpc
import grpc.aio
from google.protobuf.message import DecodeError, Message

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
from recsvc.core.ratelog import RateLimitedLog
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


failures = RateLimitedLog(log)

M = TypeVar("M", bound=Message)


def parse(message_type: type[M], raw: bytes | M) -> M:
    """Decode request bytes; InvalidRequestError (INVALID_ARGUMENT) when they are no message."""
    if isinstance(raw, message_type):  # a caller that registered a deserializer after all
        return raw
    try:
        return message_type.FromString(raw)  # type: ignore[arg-type]
    except DecodeError as exc:
        name = message_type.DESCRIPTOR.name
        failures.log(logging.WARNING, "undecodable_request",
                     f"undecodable {name} ({len(raw)} bytes): {exc}")  # type: ignore[arg-type]
        raise InvalidRequestError(f"request is not a valid {name}: {_reason(exc)}") from None


def _reason(exc: DecodeError) -> str:
    # upb says "Error parsing message with type 'x': String field had bad UTF-8".
    return str(exc).rsplit(": ", 1)[-1] or "malformed bytes"


def status_for(exc: Exception) -> tuple[grpc.StatusCode, str]:
    for kind, code in STATUS_OF.items():
        if isinstance(exc, kind):
            return code, str(exc)
    return grpc.StatusCode.INTERNAL, "internal error (see the server log)"


class CallLimiter:
    """At most ``limit`` recsvc calls in flight per process; beyond: RESOURCE_EXHAUSTED.

    The grpc.aio path counts on the event loop without a lock; a synchronous server's threads
    use ``enter``/``leave``, and with ``working`` set at most that many of the calls in flight
    work at once (the others wait in ``enter``, counted in flight).
    """

    def __init__(self, limit: int, auth: Authenticator | None = None,
                 working: int | None = None) -> None:
        self.limit = limit
        self.in_flight = 0
        self.auth = auth  # None: no token needed
        self._lock = threading.Lock()
        self._turns = None if working is None else threading.Semaphore(working)

    def enter(self) -> bool:
        with self._lock:
            if self.in_flight >= self.limit:
                return False
            self.in_flight += 1
        if self._turns is not None:
            self._turns.acquire()
        return True

    def leave(self) -> None:
        if self._turns is not None:
            self._turns.release()
        with self._lock:
            self.in_flight -= 1

    def busy_message(self) -> str:
        return (f"server busy: {self.limit} calls already in flight; retry with backoff or add "
                "instances")


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
            failures.log(logging.INFO, f"refused:{method}", f"call to {method} refused: {exc}")
            raise


class Limited(Protocol):
    limiter: CallLimiter


S = TypeVar("S", bound=Limited)
Method = Callable[[S, Any, grpc.aio.ServicerContext[Any, Any]], Awaitable[Any]]


def log_unexpected(method_name: str, exc: BaseException | bool = True) -> None:
    """Log ``exc`` (default: the one being handled): its traceback at most once per interval
    per method."""
    failures.log(logging.ERROR, f"internal:{method_name}", f"unexpected error in {method_name}",
                 exc_info=exc)


def guarded(request_type: type[Message]) -> Callable[[Method[S]], Method[S]]:
    """Parse the request bytes as ``request_type``, apply the cap, map errors to statuses."""
    def wrap(method: Method[S]) -> Method[S]:
        name = method.__name__

        @functools.wraps(method)
        async def call(self: S, raw: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            started = time.perf_counter()
            limiter = self.limiter
            metadata = dict(context.invocation_metadata() or ())
            bound = logs.bind_request(request_id_of(metadata))
            code = grpc.StatusCode.OK
            try:
                if limiter.in_flight >= limiter.limit:
                    raise OverloadedError(limiter.busy_message())
                authorize(limiter, metadata, name)
                limiter.in_flight += 1
                try:
                    return await method(self, parse(request_type, raw), context)
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
                    log_unexpected(name)
                await context.abort(code, message)
            finally:
                metrics.rpc(name, code.name, time.perf_counter() - started)
                logs.unbind_request(bound)

        return call
    return wrap


SyncMethod = Callable[[S, Any, grpc.ServicerContext], Any]


def guarded_sync(request_type: type[Message]) -> Callable[[SyncMethod[S]], SyncMethod[S]]:
    """``guarded`` for a synchronous ``grpc.server`` servicer (the thread-pool server model):
    plain methods for unary answers, generator methods for streams; the same parsing, cap,
    token check, request id, metrics and status table. Register the servicer with
    ``handlers.add_servicer``."""
    def wrap(method: SyncMethod[S]) -> SyncMethod[S]:
        name = method.__name__
        if inspect.isgeneratorfunction(method):
            @functools.wraps(method)
            def stream(self: S, raw: Any, context: grpc.ServicerContext) -> Iterator[Any]:
                call = _SyncCall(self.limiter, context, name)
                if call.failure is None:
                    try:
                        yield from method(self, parse(request_type, raw), context)
                    except Exception as exc:
                        call.failure = exc
                    except BaseException:  # GeneratorExit: the caller went away
                        call.end(grpc.StatusCode.CANCELLED)
                        raise
                call.finish()
            return stream

        @functools.wraps(method)
        def unary(self: S, raw: Any, context: grpc.ServicerContext) -> Any:
            call = _SyncCall(self.limiter, context, name)
            if call.failure is None:
                try:
                    answer = method(self, parse(request_type, raw), context)
                except Exception as exc:
                    call.failure = exc
                else:
                    call.finish()
                    return answer
            call.finish()
        return unary
    return wrap


class _SyncCall:
    """One call on a server thread: entered (token, cap) at creation, ended by ``finish``."""

    def __init__(self, limiter: CallLimiter, context: grpc.ServicerContext, name: str) -> None:
        self.started = time.perf_counter()
        self.limiter, self.context, self.name = limiter, context, name
        metadata = dict(context.invocation_metadata() or ())
        self.bound = logs.bind_request(request_id_of(metadata))
        self.entered = False
        self.failure: Exception | None = None
        try:
            if limiter.in_flight >= limiter.limit:  # the cap before the token, as ``guarded``
                raise OverloadedError(limiter.busy_message())
            authorize(limiter, metadata, name)
            if not limiter.enter():
                raise OverloadedError(limiter.busy_message())
            self.entered = True
        except Exception as exc:
            self.failure = exc

    def end(self, code: grpc.StatusCode) -> None:
        if self.entered:
            self.limiter.leave()
            self.entered = False
        metrics.rpc(self.name, code.name, time.perf_counter() - self.started)
        logs.unbind_request(self.bound)

    def finish(self) -> None:
        """OK, or the failure's status (``context.abort`` raises)."""
        if self.failure is None:
            self.end(grpc.StatusCode.OK)
            return
        code, message = status_for(self.failure)
        if code == grpc.StatusCode.INTERNAL:
            log_unexpected(self.name, self.failure)
        self.end(code)
        self.context.abort(code, message)
