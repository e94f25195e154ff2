"""Why offers were removed (``explain``): every catalogue offer not answered, and the first rule
that removed it, listed in the order of the rules (then catalogue order).

Computed only when asked, from the same inputs as the decision; reason codes of answered offers
are cheaper and come with every decision (decide.py, decider.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from recsvc.decisioning.policy import LiveView, contact_capped

if TYPE_CHECKING:
    from recsvc.decisioning.decide import Ask
    from recsvc.decisioning.decider import Decider, SegmentTables

RULES = ("segment", "validity", "channel", "paused", "customer_rule", "budget", "contact_cap",
         "do_not_contact", "suppressed", "already_accepted", "excluded_by_caller")


def removed_offers(d: Decider, tables: SegmentTables, mask: npt.NDArray[np.bool_],
                   numbers: list[float], codes: list[int], live: LiveView,
                   accepted: npt.NDArray[np.uint32] | None, ask: Ask) -> list[tuple[str, str, str]]:
    """(offer id, rule, detail) for every offer of the catalogue the decision could not use."""
    catalogue = d.explain_catalogue
    segment = tables.model
    local_of = segment.local_of
    name = segment.name or "every segment (global list)"
    capped = contact_capped(live, ask.channel, d.policy)
    in_dnc = ask.customer_id in d.dnc
    taken = set(live.accepted)
    if accepted is not None:
        ids = d.base.catalogue.offer_ids
        taken.update(ids[i] for i in accepted.tolist() if i < len(ids))
    excluded = set(ask.excluded)
    exhausted_here = d.budgets.exhausted_in.get(segment.name, frozenset())
    found: dict[str, list[tuple[str, str, str]]] = {rule: [] for rule in RULES}
    channel_ok = catalogue.channel_mask(ask.channel)
    for i, offer_id in enumerate(catalogue.offer_ids):
        local = int(local_of[i]) if i < len(local_of) else -1

        def out(rule: str, detail: str, offer: str = offer_id) -> None:
            found[rule].append((offer, rule, detail))

        if local < 0:
            out("segment", f"not open to {name}")
        elif not catalogue.valid_from[i] <= ask.now < catalogue.valid_to[i]:
            out("validity", "outside its validity window")
        elif not channel_ok[i]:
            out("channel", f"not offered on channel {ask.channel!r}")
        elif i in d.paused:
            out("paused", "paused by `recsvc offers pause`")
        elif tables.broken[local] or (tables.rule_of[local] and not tables.rules[
                tables.rule_of[local] - 1](numbers, codes, ask.context)):
            rule_text = str(d.offers[i].get("rule") or "")
            out("customer_rule", f"{rule_text} is false" if not tables.broken[local]
                else f"{rule_text} does not compile")
        elif offer_id in d.budgets.exhausted or offer_id in exhausted_here:
            out("budget", "budget exhausted")
        elif capped and not tables.exempt[local]:
            out("contact_cap", f"{live.contacts_in_window} contacts on {ask.channel!r} within "
                               f"{d.policy.contacts.window_days:g} days "
                               f"(cap {d.policy.contacts.max_per_window})")
        elif in_dnc and not tables.exempt[local]:
            out("do_not_contact", "customer is on the do-not-contact list")
        elif offer_id in live.suppressed:
            out("suppressed", live.suppressed[offer_id])
        elif offer_id in taken:
            out("already_accepted", "the customer already accepted or redeemed it")
        elif offer_id in excluded:
            out("excluded_by_caller", "in exclude_offer_ids")
    return [entry for rule in RULES for entry in found[rule]]
