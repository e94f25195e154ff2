"""The holdout's ``random`` baseline: uniformly random offers among the eligible ones. Pure.

A control customer under ``RECSVC_HOLDOUT_BASELINE=random`` is decided exactly as treatment
(eligibility, customer rules, policy, budgets), with every eligible offer kept; this module
then draws ``k = min(limit, n)`` of the ``n`` eligible offers uniformly without replacement, in
random order. Uplift over this control measures what the model adds over chance, not over
showing nothing.

Propensity logged per shown offer: ``k / n``, the probability that this offer is in the
answer (``1 / n`` for a one-offer answer), the same per-offer convention as exploration's
``epsilon k / eligible`` in ``decide.py``, so IPS treats both alike. With on-serve budgets the
reserve script may skip a drawn offer without units and the next drawn one takes its slot;
the logged ``k / n`` then ignores that (such answers are rare and only in budgeted segments).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from recsvc.decisioning.decide import Decision

RANDOM_REASON = "random_control"  # shown as the holdout's random baseline
_RNG = np.random.default_rng()


def random_eligible(every: Decision, limit: int,
                    rng: np.random.Generator = _RNG) -> Decision:
    """``every``: a decision holding every eligible offer (decided with a limit of at least
    the catalogue). Returns ``min(limit, n)`` of them drawn uniformly, with propensity k / n;
    a pending decision (on-serve budgets) keeps all n, shuffled, for the reserve script."""
    n = len(every.offers)
    k = min(limit, n)
    order = rng.permutation(n)
    if not every.pending:
        order = order[:k]
    picks = order.tolist()
    return replace(
        every, offers=[every.offers[i] for i in picks],
        p_accept=[every.p_accept[i] for i in picks],
        objective=[every.objective[i] for i in picks],
        reasons=[(*every.reasons[i], RANDOM_REASON) for i in picks],
        limit=limit, propensities=[k / n] * len(picks) if n else [], explored=False)
