"""The OpenAPI 3.1 document of the HTTP face, generated from the proto's descriptors.

Nothing here is written by hand per message: paths come from the service's methods, schemas
from the message and enum descriptors, names from the proto JSON mapping (``json_name``), the
way ``transcode`` reads and writes them. ``python -m recsvc.api.http.openapi > docs/openapi.json``
regenerates the checked-in copy (``make openapi``); a test fails when the two differ.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor

from recsvc.api.handlers import SERVICE, SERVICE_NAME
from recsvc.api.http.transcode import HTTP_STATUS_OF

FD = FieldDescriptor
_SCALARS: dict[int, dict[str, Any]] = {
    FD.TYPE_STRING: {"type": "string"},
    FD.TYPE_BOOL: {"type": "boolean"},
    FD.TYPE_BYTES: {"type": "string", "contentEncoding": "base64"},
    FD.TYPE_DOUBLE: {"type": "number", "format": "double"},
    FD.TYPE_FLOAT: {"type": "number", "format": "float"},
    FD.TYPE_INT32: {"type": "integer", "format": "int32"},
    FD.TYPE_SINT32: {"type": "integer", "format": "int32"},
    FD.TYPE_SFIXED32: {"type": "integer", "format": "int32"},
    FD.TYPE_UINT32: {"type": "integer", "format": "int32", "minimum": 0},
    FD.TYPE_FIXED32: {"type": "integer", "format": "int32", "minimum": 0},
    # proto JSON writes 64-bit integers as strings (JavaScript numbers lose precision)
    FD.TYPE_INT64: {"type": "string", "format": "int64"},
    FD.TYPE_SINT64: {"type": "string", "format": "int64"},
    FD.TYPE_SFIXED64: {"type": "string", "format": "int64"},
    FD.TYPE_UINT64: {"type": "string", "format": "int64"},
    FD.TYPE_FIXED64: {"type": "string", "format": "int64"},
}
# Well-known types have a JSON form of their own.
_WELL_KNOWN = {
    "google.protobuf.Timestamp": {"type": "string", "format": "date-time",
                                  "description": "RFC 3339, e.g. 2026-01-31T09:30:00Z"},
}
_ERRORS = {"400": "invalid_argument or failed_precondition", "401": "unauthenticated",
           "403": "permission_denied", "413": "request body too large",
           "415": "content-type is not application/json", "429": "resource_exhausted",
           "503": "unavailable", "504": "deadline_exceeded"}


def _name(full_name: str) -> str:
    return full_name.removeprefix("recsvc.v1.")


def _ref(full_name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{_name(full_name)}"}


def _field(field: FieldDescriptor, schemas: dict[str, Any]) -> dict[str, Any]:
    message, enum = field.message_type, field.enum_type
    is_map = message is not None and message.GetOptions().map_entry
    if message is not None and is_map:
        return {"type": "object",
                "additionalProperties": _field(message.fields_by_name["value"], schemas)}
    if message is not None:
        if message.full_name in _WELL_KNOWN:
            one = dict(_WELL_KNOWN[message.full_name])
        else:
            _message(message, schemas)
            one = _ref(message.full_name)
    elif enum is not None:
        _enum(enum, schemas)
        one = _ref(enum.full_name)
    else:
        one = dict(_SCALARS[field.type])
    return {"type": "array", "items": one} if field.is_repeated else one


def _message(message: Descriptor, schemas: dict[str, Any]) -> None:
    name = _name(message.full_name)
    if name in schemas:
        return
    schemas[name] = {}  # placeholder: recursion stops here
    schemas[name] = {"type": "object",
                     "properties": {f.json_name: _field(f, schemas) for f in message.fields}}


def _enum(enum: EnumDescriptor, schemas: dict[str, Any]) -> None:
    schemas.setdefault(_name(enum.full_name),
                       {"type": "string", "enum": [v.name for v in enum.values]})


def _errors() -> dict[str, Any]:
    ref = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    return {status: {"description": what, **ref} for status, what in _ERRORS.items()}


def document(version: str = "1") -> dict[str, Any]:
    schemas: dict[str, Any] = {}
    paths: dict[str, Any] = {}
    for method in SERVICE.methods:
        _message(method.input_type, schemas)
        _message(method.output_type, schemas)
        answer = _ref(method.output_type.full_name)
        if method.server_streaming:
            answer = {"type": "array", "items": answer}
        paths[f"/{SERVICE_NAME}/{method.name}"] = {"post": {
            "operationId": method.name,
            "summary": f"{SERVICE_NAME}.{method.name}"
                       + (" (all answers as one JSON array, in order)"
                          if method.server_streaming else ""),
            "security": [{"bearer": []}],
            "requestBody": {"required": True, "content": {"application/json": {
                "schema": _ref(method.input_type.full_name)}}},
            "responses": {"200": {"description": "the answer",
                                  "content": {"application/json": {"schema": answer}}},
                          **_errors()},
        }}
    paths["/healthz"] = {"get": {
        "operationId": "Healthz", "summary": "Can this instance answer? (no token needed)",
        "security": [],
        "responses": {status: {"description": status_text, "content": {"application/json": {
            "schema": {"$ref": "#/components/schemas/Health"}}}}
            for status, status_text in (("200", "serving"), ("503", "not serving"))}}}
    paths["/livez"] = {"get": {
        "operationId": "Livez",
        "summary": "Is this process alive? 200 with or without a model (no token needed)",
        "security": [],
        "responses": {"200": {"description": "alive", "content": {"application/json": {
            "schema": {"$ref": "#/components/schemas/Liveness"}}}}}}}
    schemas["Liveness"] = {"type": "object", "required": ["status"], "properties": {
        "status": {"type": "string", "enum": ["ALIVE"]}}}
    schemas["Health"] = {"type": "object", "required": ["status"], "properties": {
        "status": {"type": "string", "enum": ["SERVING", "NOT_SERVING"]}}}
    codes = sorted({code.name.lower() for code in HTTP_STATUS_OF})
    schemas["Error"] = {"type": "object", "required": ["code", "message"], "properties": {
        "code": {"type": "string", "enum": codes},
        "message": {"type": "string", "description": "what is wrong, naming the field"}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "recsvc", "version": version,
                 "description": "The HTTP/JSON face of recsvc.v1.RetentionOfferService: the "
                                "Connect protocol's unary JSON, generated from proto/. Unknown "
                                "fields are refused with 400 naming the field."},
        "paths": paths,
        "components": {"schemas": dict(sorted(schemas.items())),
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "security": [{"bearer": []}],
    }


def render() -> bytes:
    return (json.dumps(document(), indent=2) + "\n").encode()


if __name__ == "__main__":
    sys.stdout.buffer.write(render())
