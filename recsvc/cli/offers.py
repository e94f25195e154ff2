"""``recsvc offers ...`` and ``recsvc contacts dnc ...``: live offer control without retraining.

    recsvc offers list [--json]
    recsvc offers pause OFFER | resume OFFER | remove OFFER
    recsvc offers set OFFER [--value V] [--cost C] [--lever L] [--valid-from T] [--valid-to T]
                      [--description D] [--image-url URL] [--accept-label L] [--decline-label L]
    recsvc offers add OFFER --title T [--segments a|b] [--channels email|app] [--type T]
                      [--rule EXPR] [--value V] [--cost C] [--lever L] [--valid-from T] ...
    recsvc offers budget OFFER (--total N | --per-day N | --per-segment SEG=N ...)
                      [--count serve|accept] | --clear [--reset]
    recsvc contacts dnc add|remove CUSTOMER ... | list

Every replica applies a change within one model poll (500 ms); the published version is never
rewritten. Times are ISO-8601 (UTC when no zone) or Unix seconds; ``none`` clears a bound.
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from recsvc.core import schema
from recsvc.core.config import Settings
from recsvc.core.display import DISPLAY_FIELDS
from recsvc.core.errors import RecsvcError

if TYPE_CHECKING:  # the Redis side is imported only when a command runs (fast start-up)
    from recsvc.store.control.offers_admin import OfferAdmin


class OfferAdminError(RecsvcError):
    """A bad argument: the message names the flag."""


def add_commands(sub: Any) -> None:
    offers = sub.add_parser("offers", help="pause, resume, change, add or budget offers live")
    osub = offers.add_subparsers(dest="offers_command", required=True)
    listing = osub.add_parser("list", help="the active catalogue with live changes and budgets")
    listing.add_argument("--json", action="store_true")
    for name, text in (("pause", "stop serving an offer"), ("resume", "serve it again"),
                       ("remove", "drop every live change of an offer")):
        osub.add_parser(name, help=text).add_argument("offer_id")
    for name in ("set", "add"):
        cmd = osub.add_parser(name, help="change an offer" if name == "set"
                              else "add a new offer (served by the prior until retrained)")
        cmd.add_argument("offer_id")
        cmd.add_argument("--value", type=float)
        cmd.add_argument("--cost", type=float)
        cmd.add_argument("--lever", type=float, help="multiplies the objective (> 0)")
        cmd.add_argument("--valid-from", help="ISO-8601 or Unix seconds; 'none' = open")
        cmd.add_argument("--valid-to", help="ISO-8601 or Unix seconds; 'none' = open")
        # Display fields for agent screens (core/display.py); "" removes the value shown.
        cmd.add_argument("--description", help="a sentence or two (at most 1,000 characters)")
        cmd.add_argument("--image-url", help="an absolute http:// or https:// URL")
        cmd.add_argument("--accept-label", help="the accept button's text (at most 40)")
        cmd.add_argument("--decline-label", help="the decline button's text (at most 40)")
        if name == "add":
            cmd.add_argument("--title", default="")
            cmd.add_argument("--segments", default="*", help="'*' or a|b|c")
            cmd.add_argument("--channels", default="", help="email|app (empty = all)")
            cmd.add_argument("--type", default="", help="e.g. transactional (exempt from caps)")
            cmd.add_argument("--rule", default="", help="e.g. \"churn_risk >= 0.6\"")
    budget = osub.add_parser("budget", help="set or clear an offer's budget")
    budget.add_argument("offer_id")
    budget.add_argument("--count", choices=("serve", "accept"), default="serve",
                        help="a unit is an answer that shows it, or an accept (voucher)")
    budget.add_argument("--total", type=int)
    budget.add_argument("--per-day", type=int)
    budget.add_argument("--per-segment", action="append", default=[], metavar="SEG=N")
    budget.add_argument("--clear", action="store_true")
    budget.add_argument("--reset", action="store_true", help="with --clear: zero the counters")
    offers.set_defaults(run=run)
    contacts = sub.add_parser("contacts", help="the global do-not-contact list")
    contacts.set_defaults(run=run)
    csub = contacts.add_subparsers(dest="contacts_command", required=True)
    dnc = csub.add_parser("dnc", help="add, remove or list do-not-contact customers")
    dnc.add_argument("action", choices=("add", "remove", "list"))
    dnc.add_argument("customer_ids", nargs="*")


def _time(raw: str | None, flag: str) -> tuple[bool, float | None]:
    if raw is None:
        return False, None
    if raw.lower() == "none":
        return True, None
    try:
        return True, float(raw)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise OfferAdminError(f"{flag}: {raw!r} is neither ISO-8601 nor Unix seconds") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return True, moment.timestamp()


def _fields(args: argparse.Namespace) -> dict[str, Any]:
    fields: dict[str, Any] = {k: getattr(args, k) for k in ("value", "cost", "lever",
                                                             *DISPLAY_FIELDS)
                              if getattr(args, k) is not None}
    for key, flag in (("valid_from", "--valid-from"), ("valid_to", "--valid-to")):
        given, value = _time(getattr(args, key), flag)
        if given:
            fields[key] = value
    if args.offers_command == "add":
        fields["title"] = args.title
        fields["segments"] = [s.strip() for s in args.segments.split("|") if s.strip()] or ["*"]
        fields["channels"] = [c.strip() for c in args.channels.split("|") if c.strip()]
        fields["type"] = args.type
        if args.rule:
            fields["rule"] = args.rule
    return fields


def _budget_spec(args: argparse.Namespace) -> dict[str, Any]:
    spec: dict[str, Any] = {"count": args.count}
    if args.total is not None:
        spec["total"] = args.total
    if args.per_day is not None:
        spec["per_day"] = args.per_day
    per_segment: dict[str, int] = {}
    for item in args.per_segment:
        name, _, count = item.partition("=")
        try:
            per_segment[name.strip()] = int(count)
        except ValueError:
            raise OfferAdminError(f"--per-segment {item!r}: expected SEGMENT=N") from None
    if per_segment:
        spec["per_segment"] = per_segment
    return spec


def _admin(settings: Settings) -> OfferAdmin:
    from recsvc.store.control.offers_admin import OfferAdmin
    from recsvc.store.reads.reader import connect

    return OfferAdmin(connect(settings, timeout_ms=5000), schema.keys_for(settings))


def offers_command(args: argparse.Namespace, settings: Settings) -> int:
    admin = _admin(settings)
    command = args.offers_command
    if command == "list":
        rows = admin.listing()
        if args.json:
            print(json.dumps(rows, indent=2, sort_keys=True))
            return 0
        print(f"{'offer':<16} {'state':<8} {'value':>8} {'cost':>8} {'lever':>6}  budget")
        for row in rows:
            state = "paused" if row.get("paused") else ("new" if row.get("new") else "live")
            budget = f"{row['budget']} used={row.get('used') or 0}" if row.get("budget") else ""
            print(f"{row['offer_id']:<16} {state:<8} {row.get('value') or 0:>8g} "
                  f"{row.get('cost') or 0:>8g} {row.get('lever') or 1:>6g}  {budget}")
        return 0
    if command in ("pause", "resume"):
        admin.change(args.offer_id, {"paused": command == "pause"})
    elif command == "remove":
        admin.remove(args.offer_id)
    elif command in ("set", "add"):
        fields = _fields(args)
        if command == "set" and not fields:
            raise OfferAdminError("offers set: give at least one of --value, --cost, --lever, "
                                  "--valid-from, --valid-to, --description, --image-url, "
                                  "--accept-label, --decline-label")
        admin.change(args.offer_id, fields, new=command == "add")
    elif command == "budget":
        if args.clear:
            admin.clear_budget(args.offer_id, args.reset)
        else:
            spec = admin.set_budget(args.offer_id, _budget_spec(args))
            print(f"{args.offer_id}: budget {spec.as_json()}")
            return 0
    print(f"{args.offer_id}: {command} applied (replicas follow within a poll)")
    return 0


def contacts_command(args: argparse.Namespace, settings: Settings) -> int:
    admin = _admin(settings)
    if args.action == "list":
        for member in sorted(admin.client.smembers(admin.keys.do_not_contact)):
            print(member.decode() if isinstance(member, bytes) else member)
        return 0
    if not args.customer_ids:
        raise OfferAdminError(f"contacts dnc {args.action}: give at least one customer id")
    size = admin.dnc(args.customer_ids if args.action == "add" else [],
                     args.customer_ids if args.action == "remove" else [])
    print(f"do-not-contact list: {size} customer(s)")
    return 0


def run(args: argparse.Namespace, settings: Settings) -> int:
    import redis

    try:
        if args.command == "offers":
            return offers_command(args, settings)
        return contacts_command(args, settings)
    except redis.RedisError as exc:
        raise OfferAdminError(f"Redis at {settings.redis_url}: {exc}") from None
