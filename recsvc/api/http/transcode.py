"""JSON <-> protobuf by the proto's own JSON mapping (``json_format``), and gRPC codes -> HTTP.

No second schema: request bodies are parsed straight into the generated message classes and
answers written with ``MessageToDict``, so field names are the proto JSON names (lowerCamelCase
out; either spelling accepted in), enums are their names, int64 are strings, Timestamps RFC 3339.
Unknown fields are refused (400 naming the field): a typo such as ``"limt"`` or
``"exclude_offer_id"`` silently ignored would change the answer without a word.
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message

from recsvc.core.errors import InvalidRequestError

# The Connect protocol's table (connectrpc.com/docs/protocol, "Error Codes").
HTTP_STATUS_OF: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
    grpc.StatusCode.UNAUTHENTICATED: 401,
}

M = TypeVar("M", bound=Message)


def code_name(code: grpc.StatusCode) -> str:
    """Connect's spelling of a code: ``invalid_argument``."""
    return code.name.lower()


def error_body(code: grpc.StatusCode, message: str) -> bytes:
    return json.dumps({"code": code_name(code), "message": message}).encode()


def parse(message_type: type[M], body: bytes) -> M:
    """The request message from a JSON body; InvalidRequestError saying what is wrong."""
    name = message_type.DESCRIPTOR.name
    try:
        text = body.decode("utf-8") if body.strip() else "{}"  # Connect: empty body = {}
        value = json.loads(text)
    except (UnicodeDecodeError, ValueError) as exc:
        raise InvalidRequestError(f"request body is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise InvalidRequestError(f"request body must be a JSON object (a {name}), "
                                  f"got {type(value).__name__}")
    message = message_type()
    try:
        json_format.ParseDict(value, message, ignore_unknown_fields=False)
    except json_format.ParseError as exc:
        raise InvalidRequestError(" ".join(str(exc).split())) from None  # one line
    return message


def to_dict(message: Message) -> dict[str, Any]:
    """The proto JSON of ``message``, every field present (zeros too: simpler clients)."""
    return json_format.MessageToDict(message, always_print_fields_with_no_presence=True)


def to_json(message: Message) -> bytes:
    return json.dumps(to_dict(message), separators=(",", ":")).encode()


def to_json_array(messages: list[Message]) -> bytes:
    return json.dumps([to_dict(m) for m in messages], separators=(",", ":")).encode()
