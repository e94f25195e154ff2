"""Command-line clients: ``recsvc recommend`` (through the real gRPC API) and ``recsvc models``."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import grpc
import redis

from recsvc.core import schema
from recsvc.core.config import Settings
from recsvc.core.errors import RecsvcError
from recsvc.store.control.registry import Registry, eviction_risk, redis_problem
from recsvc.store.reads.reader import connect
from recsvc.v1 import offers_pb2 as pb
from recsvc.v1 import offers_pb2_grpc as pb_grpc


def format_ranking(response: pb.RecommendResponse) -> str:
    """A readable table of one response."""
    strategy = pb.Strategy.Name(response.strategy).removeprefix("STRATEGY_").lower()
    lines = [
        f"customer {response.customer_id}  segment {response.segment or '-'}  "
        f"strategy {strategy}  model {response.model_version}",
    ]
    if response.reason:
        lines.append(f"  ({response.reason})")
    if not response.offers:
        lines.append("  no eligible offers")
        return "\n".join(lines)
    id_width = max(8, *(len(o.offer_id) for o in response.offers))
    lines.append(f"  {'rank':>4}  {'offer':<{id_width}}  {'score':>9}  title")
    for offer in response.offers:
        lines.append(f"  {offer.rank:>4}  {offer.offer_id:<{id_width}}  {offer.score:>9.4f}  "
                     f"{offer.title}")
    return "\n".join(lines)


def _target(args: argparse.Namespace, settings: Settings) -> str:
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "[::]") else settings.host
    return str(args.target or f"{host}:{settings.port}")


def open_channel(args: argparse.Namespace, target: str, settings: Settings) -> grpc.Channel:
    """A channel with the TLS, client certificate and token the flags ask for."""
    if bool(args.cert) != bool(args.key):
        raise RecsvcError("--cert and --key go together (the client's certificate and key)")
    token = args.token or settings.token
    secure = args.tls or args.ca or args.cert
    if not secure:
        if token:  # grpc refuses call credentials on a plaintext channel: send metadata
            return grpc.intercept_channel(grpc.insecure_channel(target),
                                          _BearerInterceptor(token))
        return grpc.insecure_channel(target)
    credentials = grpc.ssl_channel_credentials(
        _read(args.ca), _read(args.key), _read(args.cert))
    if token:
        credentials = grpc.composite_channel_credentials(
            credentials, grpc.access_token_call_credentials(token))
    return grpc.secure_channel(target, credentials)


def _read(path: str | None) -> bytes | None:
    if not path:
        return None
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except OSError as exc:
        raise RecsvcError(f"{path}: {exc.strerror}") from None


class _BearerInterceptor(grpc.UnaryUnaryClientInterceptor):  # type: ignore[type-arg]
    def __init__(self, token: str) -> None:
        self.metadata = (("authorization", f"Bearer {token}"),)

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        details = details._replace(metadata=(*(details.metadata or ()), *self.metadata))
        return continuation(details, request)


def token_command(args: argparse.Namespace) -> int:
    from recsvc.api.auth import new_token_line

    token, line = new_token_line(args.scopes.split(","), args.name)
    print(f"token (give it to the client; it is not stored anywhere): {token}")
    print(f"line for RECSVC_TOKENS_FILE: {line}")
    return 0


def health_command(args: argparse.Namespace, settings: Settings) -> int:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    target = _target(args, settings)
    serving = health_pb2.HealthCheckResponse.SERVING
    give_up = time.monotonic() + args.wait
    with open_channel(args, target, settings) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            try:
                status = stub.Check(health_pb2.HealthCheckRequest(service=args.service),
                                    timeout=args.timeout).status
                problem = None
            except grpc.RpcError as exc:
                status, problem = None, f"{target}: {exc.code().name}: {exc.details()}"
            if status == serving or time.monotonic() >= give_up:
                break
            time.sleep(0.2)
    if problem is not None:
        raise RecsvcError(problem)
    print(health_pb2.HealthCheckResponse.ServingStatus.Name(status))
    return 0 if status == serving else 1


def print_recommendation(args: argparse.Namespace, settings: Settings) -> int:
    target = _target(args, settings)
    with open_channel(args, target, settings) as channel:
        stub = pb_grpc.RetentionOfferServiceStub(channel)  # type: ignore[no-untyped-call]
        try:
            response = stub.Recommend(
                pb.RecommendRequest(customer_id=args.customer_id, limit=args.limit,
                                    channel=args.channel, segment=args.segment),
                timeout=args.timeout)
        except grpc.RpcError as exc:
            raise RecsvcError(f"{target}: {exc.code().name}: {exc.details()}") from None
    print(format_ranking(response))
    return 0


def models_command(args: argparse.Namespace, settings: Settings) -> int:
    """list, activate, rollback; a Redis failure is one line (RecsvcError), never a traceback."""
    try:
        return _models(args, settings)
    except redis.RedisError as exc:
        raise RecsvcError(redis_problem(exc, settings.redis_url)) from None


def _models(args: argparse.Namespace, settings: Settings) -> int:
    client = connect(settings, timeout_ms=5000)
    registry = Registry(client, schema.keys_for(settings))
    if args.models_command == "list":
        infos = registry.all()
        if not infos:
            print("no model versions published yet")
        for info in infos:
            print(f"{info.version}  {info.state:<8}  segments {info.segment_count:<3}  "
                  f"created {info.created_at}  {info.role}")
        return 0
    risk = eviction_risk(client)
    if risk:
        print(f"warning: {risk}", file=sys.stderr)
    if args.models_command == "activate":
        active, _ = registry.pointers()
        checked = registry.check(args.version)
        registry.activate(args.version, active)
        print(f"active version: {args.version} (previous: {active or '-'}; checked: {checked})")
        return 0
    version = registry.rollback()
    print(f"rolled back: active version is now {version}")
    return 0
