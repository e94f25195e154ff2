"""The ``recsvc`` console script: serve, recommend, health, models; more commands (train,
datagen) come from the ``recsvc.commands`` entry-point group, so recsvc never imports them.

An entry point names a function ``add(subparsers)`` that adds its sub-command and sets
``run=handler`` as a default, where ``handler(args, settings) -> exit code``.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import logging
import sys
from collections.abc import Callable, Sequence

from recsvc import __version__
from recsvc.core.config import Settings, ignored_variables
from recsvc.core.errors import RecsvcError

EXIT_FAILURE = 1
EXIT_USAGE = 2
COMMAND_GROUP = "recsvc.commands"


def command_plugins() -> list[importlib.metadata.EntryPoint]:
    """Sub-commands other packages add (the training job adds train and datagen)."""
    return sorted(importlib.metadata.entry_points(group=COMMAND_GROUP), key=lambda e: e.name)


def add_connection_flags(parser: argparse.ArgumentParser) -> None:
    """How a client command reaches a server secured with TLS, mutual TLS and tokens."""
    parser.add_argument("--tls", action="store_true", help="connect with TLS")
    parser.add_argument("--ca", help="CA certificate (PEM) to verify the server; implies --tls")
    parser.add_argument("--cert", help="client certificate (PEM) for mutual TLS; implies --tls")
    parser.add_argument("--key", help="client private key (PEM) for mutual TLS")
    parser.add_argument("--token", help="API token (default: RECSVC_TOKEN)")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="recsvc", description="Retention offers: train, serve, ask, operate.")
    parser.add_argument("--version", action="version", version=f"recsvc {__version__}")
    parser.add_argument("--redis-url", help="overrides RECSVC_REDIS_URL")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the gRPC service")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument("--workers", type=int, help="server processes sharing the port")

    rec = sub.add_parser("recommend", help="ask a running server for one customer's offers")
    rec.add_argument("customer_id")
    rec.add_argument("--limit", type=int, default=10)
    rec.add_argument("--channel", default="")
    rec.add_argument("--segment", default="", help="used when the model does not know the customer")
    rec.add_argument("--target", help="HOST:PORT (default: RECSVC_HOST:RECSVC_PORT)")
    rec.add_argument("--timeout", type=float, default=5.0, help="seconds")
    add_connection_flags(rec)

    health = sub.add_parser("health", help="exit 0 when a server's gRPC health is SERVING")
    health.add_argument("--target", help="HOST:PORT (default: RECSVC_HOST:RECSVC_PORT)")
    health.add_argument("--service", default="", help="health service name ('' = overall)")
    health.add_argument("--timeout", type=float, default=2.0)
    health.add_argument("--wait", type=float, default=0.0,
                        help="keep asking for up to this many seconds until SERVING")
    add_connection_flags(health)

    token = sub.add_parser("token", help="make an API token and its RECSVC_TOKENS_FILE line")
    token.add_argument("--scopes", default="recommend",
                       help="comma-separated: recommend, feedback, admin")
    token.add_argument("--name", default="", help="a name for the logs (e.g. the client app)")

    models = sub.add_parser("models", help="list, activate or roll back model versions")
    msub = models.add_subparsers(dest="models_command", required=True)
    msub.add_parser("list", help="the versions in Redis, active and previous marked")
    act = msub.add_parser("activate", help="make a kept version active")
    act.add_argument("version")
    msub.add_parser("rollback", help="swap the active and the previous version")

    for command in command_plugins():
        command.load()(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = Settings.from_env(
            redis_url=args.redis_url,
            host=getattr(args, "host", None),
            port=getattr(args, "port", None),
            workers=getattr(args, "workers", None),
        )
    except RecsvcError as exc:
        print(f"recsvc: {exc}", file=sys.stderr)
        return EXIT_USAGE
    from recsvc.ops import logs

    logs.configure(settings.log_level, settings.log_format, settings.log_salt)
    for message in ignored_variables():
        logging.getLogger("recsvc").warning("%s", message)
    try:
        if args.command == "serve":
            from recsvc.api.server import pin_worker_cpu, serve

            pin_worker_cpu()
            return serve(settings)
        if args.command == "recommend":
            from recsvc.cli.client import print_recommendation

            return print_recommendation(args, settings)
        if args.command == "health":
            from recsvc.cli.client import health_command

            return health_command(args, settings)
        if args.command == "token":
            from recsvc.cli.client import token_command

            return token_command(args)
        if args.command == "models":
            from recsvc.cli.client import models_command

            return models_command(args, settings)
        run: Callable[[argparse.Namespace, Settings], int] = args.run
        return run(args, settings)
    except RecsvcError as exc:
        print(f"recsvc: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return 130
