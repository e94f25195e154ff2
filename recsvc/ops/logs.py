"""Structured logs: one JSON object per line on stderr, with the request id of the call.

The code logs through the standard ``logging`` module (``log.warning("...", extra={...})``);
structlog's ``ProcessorFormatter`` renders every record, ours and the libraries', as JSON with
``timestamp``, ``level``, ``logger``, ``event``, the ``extra`` fields and ``request_id`` when
the line was written during an RPC. ``RECSVC_LOG_FORMAT=text`` gives the same fields as
readable key=value lines for a terminal.

Personal data: a customer id is never logged in clear. ``customer_ref(id)`` gives a keyed hash
(BLAKE2b with ``RECSVC_LOG_SALT``) that is stable within a deployment, so one customer's lines
can be found again (``recsvc`` prints the reference of an id for an operator who has it)
without the log revealing who it is. Without a salt, a random one per process is used:
references then only join lines of one process.
"""

from __future__ import annotations

import contextvars
import hashlib
import logging
import os
import secrets
import sys
from typing import Any

import structlog
from structlog.types import EventDict, WrappedLogger

REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("recsvc_request_id",
                                                                        default=None)
_salt: list[bytes] = [secrets.token_bytes(16)]


def configure(level: str = "INFO", fmt: str = "json", salt: str = "") -> None:
    """Route every ``logging`` record to stderr as JSON (or key=value text) lines."""
    if salt:
        _salt[0] = salt.encode()
    renderer: Any = (structlog.dev.ConsoleRenderer(colors=False) if fmt == "text"
                     else structlog.processors.JSONRenderer())
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            structlog.stdlib.ExtraAdder(),
            _add_request_id,
            _add_pid,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
        ],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    ))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())


def customer_ref(customer_id: str) -> str:
    """A stable, salted, one-way reference to a customer id, safe to log."""
    digest = hashlib.blake2b(customer_id.encode(), key=_salt[0][:64], digest_size=8)
    return "c-" + digest.hexdigest()


def new_request_id() -> str:
    return secrets.token_hex(8)


def bind_request(request_id: str | None) -> contextvars.Token[str | None]:
    """Lines logged from here on in this task/thread carry ``request_id``."""
    return REQUEST_ID.set(request_id)


def unbind_request(token: contextvars.Token[str | None]) -> None:
    REQUEST_ID.reset(token)


def _add_request_id(logger: WrappedLogger, name: str, event: EventDict) -> EventDict:
    request_id = REQUEST_ID.get()
    if request_id is not None:
        event["request_id"] = request_id
    return event


def _add_pid(logger: WrappedLogger, name: str, event: EventDict) -> EventDict:
    event["pid"] = os.getpid()
    return event
