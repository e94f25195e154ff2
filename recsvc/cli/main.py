"""The ``recsvc`` console script: serve, recommend, health, models; more commands (train,
datagen) come from the ``recsvc.commands`` entry-point group, so recsvc never imports them.

An entry point names a function ``add(subparsers)`` that adds its sub-command and sets
``run=handler`` as a default, where ``handler(args, settings) -> exit code``.

Exit codes (each failure is one line on stderr, naming the setting or cause):
  0  success
  1  a runtime failure (Redis unreachable, publish failed, ...)
  2  a bad flag, setting or argument: the line names it and what is allowed
  3  recsvc train: the quality gate kept the active version (training/job.py)
  4  recsvc serve: cannot listen on host:port (in use, or not an address of this machine)
  5  recsvc serve --workers N: a worker kept dying; the parent stopped the others and gave up
  130 interrupted (Ctrl-C)
"""

from __future__ import annotations

import argparse
import importlib.metadata
import logging
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from recsvc import __version__
from recsvc.cli.campaign import add_command as add_campaign_command
from recsvc.cli.decisions import add_command as add_decisions_command
from recsvc.cli.experiments import add_command as add_experiments_command
from recsvc.cli.offers import add_commands as add_offer_commands
from recsvc.cli.report import add_command as add_report_command
from recsvc.core.config import LOG_LEVELS, Settings, ignored_variables, problems
from recsvc.core.errors import ListenError, RecsvcError, SettingError

EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_CANNOT_LISTEN = 4
EXIT_INTERRUPTED = 130
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


class _Parser(argparse.ArgumentParser):
    """argparse with its errors on one line (not a usage block) and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (see {self.prog} --help)\n")


def positive_seconds(text: str) -> float:
    """An argparse type: a number of seconds greater than 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not allowed (allowed: seconds > 0)")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="recsvc", description="Retention offers: train, serve, ask, operate.")
    parser.add_argument("--version", action="version", version=f"recsvc {__version__}")
    parser.add_argument("--redis-url", help="overrides RECSVC_REDIS_URL")
    parser.add_argument("--log-level", type=str.upper, help="overrides RECSVC_LOG_LEVEL ("
                        + ", ".join(LOG_LEVELS) + ")")
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
    rec.add_argument("--timeout", type=positive_seconds, default=5.0, help="seconds")
    add_connection_flags(rec)

    health = sub.add_parser("health", help="exit 0 when a server's gRPC health is SERVING")
    health.add_argument("--target", help="HOST:PORT (default: RECSVC_HOST:RECSVC_PORT)")
    health.add_argument("--service", default="", help="health service name ('' = overall)")
    health.add_argument("--timeout", type=positive_seconds, default=2.0)
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

    feedback = sub.add_parser("feedback", help="the feedback loop's background work")
    fsub = feedback.add_subparsers(dest="feedback_command", required=True)
    consume = fsub.add_parser(
        "consume", help="fold recorded events into customers' vectors (run more to scale)")
    consume.add_argument("--name", help="consumer name (default: host-pid)")
    consume.add_argument("--batch", type=int, default=500, help="entries per read")
    consume.add_argument("--claim-idle-seconds", type=float, default=30.0,
                         help="take over another consumer's entries pending this long")
    consume.add_argument("--metrics-port", type=int,
                         help="Prometheus /metrics on this port (overrides "
                         "RECSVC_FOLDIN_METRICS_PORT; 0 = off)")

    add_offer_commands(sub)
    add_report_command(sub)
    add_decisions_command(sub)
    add_experiments_command(sub)
    add_campaign_command(sub)

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
            log_level=args.log_level,
            foldin_metrics_port=getattr(args, "metrics_port", None),
        )
    except SettingError as exc:
        print(f"recsvc: {exc}", file=sys.stderr)
        return EXIT_USAGE
    bad = problems(settings)
    for line in bad:
        print(f"recsvc: {line}", file=sys.stderr)
    if bad:
        return EXIT_USAGE
    from recsvc.ops import logs

    logs.configure(settings.log_level, settings.log_format, settings.log_salt)
    for message in ignored_variables():
        logging.getLogger("recsvc").warning("%s", message)
    try:
        if args.command == "serve":
            from recsvc.api.server import serve
            from recsvc.api.workers import pin_worker_cpu, worker_started

            pin_worker_cpu()
            worker_started()
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
        if args.command == "feedback":
            from recsvc.cli.feedback import consume_command

            return consume_command(args, settings)
        run: Callable[[argparse.Namespace, Settings], int] = args.run
        return run(args, settings)
    except SettingError as exc:
        print(f"recsvc: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ListenError as exc:
        print(f"recsvc: {exc}", file=sys.stderr)
        return EXIT_CANNOT_LISTEN
    except RecsvcError as exc:
        print(f"recsvc: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
