"""Live offer control (``recsvc offers ...``, ``recsvc contacts dnc ...``): validated writes.

Every change is checked against the active version (the offer exists, or is added as new; a
rule compiles against the version's customer attributes; numbers are in range) before anything
is written; the override and the revision bump are one MULTI, so nothing is half-applied and
every replica reloads within one poll.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import redis

from recsvc.core import schema
from recsvc.core.errors import RecsvcError
from recsvc.decisioning import budgets as budget_spec
from recsvc.decisioning.live import validate_override
from recsvc.decisioning.rules import AttributeSchema, RuleError, compile_rule
from recsvc.store.control import budgets as budget_store
from recsvc.store.control.live import dnc_rev_key, text_of


class OfferAdminError(RecsvcError):
    """A live change that cannot be applied; the message names the offer and the field."""


@dataclass(frozen=True)
class Active:
    version: str
    offers: list[dict[str, Any]]
    attributes: AttributeSchema

    @property
    def offer_ids(self) -> set[str]:
        return {str(o["offer_id"]) for o in self.offers}


class OfferAdmin:
    def __init__(self, client: redis.Redis, keys: schema.Keys) -> None:
        self.client = client
        self.keys = keys

    def active(self) -> Active:
        version = self.client.get(self.keys.active)
        if version is None:
            raise OfferAdminError("no model version is active yet: run `recsvc train` first")
        ver = text_of(version)
        meta_raw, offers_raw = self.client.mget(self.keys.meta(ver), self.keys.offers(ver))
        if meta_raw is None or offers_raw is None:
            raise OfferAdminError(f"active version {ver} is incomplete")
        meta = json.loads(meta_raw)
        return Active(ver, json.loads(offers_raw),
                      AttributeSchema.from_meta(meta.get("attributes") or [],
                                                meta.get("attribute_values") or {}))

    def overrides(self) -> dict[str, dict[str, Any]]:
        raw = self.client.hgetall(self.keys.offers_live)
        return {text_of(k): json.loads(v) for k, v in raw.items()}

    def change(self, offer_id: str, fields: dict[str, Any], new: bool = False) -> dict[str, Any]:
        """Merge ``fields`` into the offer's override (or add a new offer); returns it."""
        active = self.active()
        current = self.overrides().get(offer_id, {})
        known = offer_id in active.offer_ids
        if new and known:
            raise OfferAdminError(f"offer {offer_id!r} is already in the active version "
                                  f"{active.version}: use `recsvc offers set`")
        if new and current.get("new"):
            raise OfferAdminError(f"offer {offer_id!r} was already added: use "
                                  "`recsvc offers set`")
        if not new and not known and not current.get("new"):
            raise OfferAdminError(f"unknown offer {offer_id!r}: not in the active version "
                                  f"{active.version} nor added live (`recsvc offers add`)")
        merged = {**current, **fields, **({"new": True} if new else {})}
        if known:
            merged.pop("new", None)
        try:
            clean = validate_override(offer_id, merged, known)
        except ValueError as exc:
            raise OfferAdminError(str(exc)) from None
        if clean.get("rule"):
            try:
                compile_rule(clean["rule"], active.attributes)
            except RuleError as exc:
                raise OfferAdminError(f"offer {offer_id!r}: rule {clean['rule']!r}: {exc}") \
                    from None
        self._write(offer_id, clean)
        return clean

    def remove(self, offer_id: str) -> None:
        """Drop every live change of an offer (a new offer disappears)."""
        if offer_id not in self.overrides():
            raise OfferAdminError(f"offer {offer_id!r} has no live changes")
        pipe = self.client.pipeline(transaction=True)
        pipe.hdel(self.keys.offers_live, offer_id)
        pipe.incr(self.keys.offers_rev)
        pipe.execute()

    def _write(self, offer_id: str, override: dict[str, Any]) -> None:
        pipe = self.client.pipeline(transaction=True)
        pipe.hset(self.keys.offers_live, offer_id, json.dumps(override, sort_keys=True))
        pipe.incr(self.keys.offers_rev)
        pipe.execute()

    def listing(self) -> list[dict[str, Any]]:
        """The active catalogue with live changes and budgets, one row per offer."""
        active = self.active()
        overrides = self.overrides()
        budgets = budget_store.budgets_of(self.client, self.keys)
        rows = []
        for offer in active.offers:
            offer_id = str(offer["offer_id"])
            rows.append({**offer, **overrides.get(offer_id, {}),
                         "budget": budgets.get(offer_id), "used": budgets.get(f"{offer_id}:used")})
        for offer_id, override in sorted(overrides.items()):
            if override.get("new") and offer_id not in active.offer_ids:
                rows.append({"offer_id": offer_id, **override, "budget": budgets.get(offer_id),
                             "used": budgets.get(f"{offer_id}:used")})
        return rows

    def set_budget(self, offer_id: str, spec: dict[str, Any]) -> budget_spec.BudgetSpec:
        self._require_offer(offer_id)
        try:
            return budget_store.set_budget(self.client, self.keys, offer_id, spec)
        except ValueError as exc:
            raise OfferAdminError(str(exc)) from None

    def clear_budget(self, offer_id: str, reset: bool) -> None:
        if self.client.hget(self.keys.budgets, offer_id) is None:
            raise OfferAdminError(f"offer {offer_id!r} has no budget")
        budget_store.clear_budget(self.client, self.keys, offer_id, reset)

    def _require_offer(self, offer_id: str) -> None:
        active = self.active()
        if offer_id not in active.offer_ids and not self.overrides().get(offer_id, {}).get("new"):
            raise OfferAdminError(f"unknown offer {offer_id!r}: not in the active version "
                                  f"{active.version} nor added live")

    def dnc(self, add: list[str], remove: list[str]) -> int:
        """Change the do-not-contact list; returns its size."""
        if any(not c for c in add + remove):
            raise OfferAdminError("customer ids must not be empty")
        pipe = self.client.pipeline(transaction=True)
        if add:
            pipe.sadd(self.keys.do_not_contact, *add)
        if remove:
            pipe.srem(self.keys.do_not_contact, *remove)
        pipe.incr(dnc_rev_key(self.keys))
        pipe.scard(self.keys.do_not_contact)
        return int(pipe.execute()[-1])
