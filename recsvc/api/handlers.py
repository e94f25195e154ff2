"""Registers a RetentionOfferService servicer with a grpcio server, requests as raw bytes.

grpcio runs a method's request deserializer before any handler code, so malformed bytes never
reached us: grpcio answered INTERNAL ("Exception deserializing request!") and logged a traceback
per call. Registered here without a deserializer, each method receives the bytes and parses them
itself (``guard.parse``: INVALID_ARGUMENT, one rate-limited log line). Responses are still
serialized by grpcio.

The table is built from the proto's service descriptor, so every method of
``recsvc.v1.RetentionOfferService`` is registered by name with its response serializer and its
streaming kind. It works for both server models: a ``grpc.aio`` servicer (coroutines, async
generators) and a synchronous ``grpc.server`` servicer (plain functions) register the same way,
``add_servicer(server, servicer)``; each method takes ``(request_bytes, context)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf import message_factory

from recsvc.v1 import offers_pb2 as pb

SERVICE = pb.DESCRIPTOR.services_by_name["RetentionOfferService"]
SERVICE_NAME = SERVICE.full_name

# (client streaming, server streaming) -> grpcio's handler constructor.
_KIND: dict[tuple[bool, bool], Callable[..., grpc.RpcMethodHandler[Any, Any]]] = {
    (False, False): grpc.unary_unary_rpc_method_handler,
    (False, True): grpc.unary_stream_rpc_method_handler,
    (True, False): grpc.stream_unary_rpc_method_handler,
    (True, True): grpc.stream_stream_rpc_method_handler,
}


def method_handlers(servicer: Any) -> dict[str, grpc.RpcMethodHandler[Any, Any]]:
    """One raw-bytes handler per method of the service, bound to ``servicer``'s method."""
    handlers = {}
    for method in SERVICE.methods:
        behaviour = getattr(servicer, method.name, None)
        if behaviour is None:
            raise TypeError(f"{type(servicer).__name__} lacks {SERVICE_NAME}/{method.name}")
        response = message_factory.GetMessageClass(method.output_type)
        make = _KIND[(method.client_streaming, method.server_streaming)]
        handlers[method.name] = make(behaviour, request_deserializer=None,
                                     response_serializer=response.SerializeToString)
    return handlers


def add_servicer(server: grpc.Server | grpc.aio.Server, servicer: Any) -> None:
    """Register ``servicer`` for every method of RetentionOfferService on ``server``."""
    handlers = method_handlers(servicer)
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
    # grpcio >= 1.63 also keeps a table of registered methods (its generated code fills both);
    # its type stubs do not declare it yet.
    register = getattr(server, "add_registered_method_handlers", None)
    if register is not None:
        register(SERVICE_NAME, handlers)
