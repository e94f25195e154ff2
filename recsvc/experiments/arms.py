"""Which arm answers a customer: a salted hash, so every replica and every restart agrees and
nothing needs storing.

A customer's unit draw ``u(salt, id)`` in [0, 1) comes from BLAKE2b of ``salt:id``; an arm owns
an interval of [0, 1). Changing the salt reshuffles everyone (a new experiment); changing one
share moves only the customers at the boundary.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

TREATMENT = "treatment"
CONTROL = "control"
CHALLENGER = "challenger"
_SCALE = float(1 << 64)


def unit_draw(salt: str, customer_id: str) -> float:
    """A stable pseudo-random number in [0, 1) for (salt, customer)."""
    digest = hashlib.blake2b(f"{salt}:{customer_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / _SCALE


@dataclass(frozen=True)
class Split:
    """Arms and their shares of traffic, in order; shares sum to at most 1 (the rest: default)."""

    arms: tuple[tuple[str, float], ...]
    default: str = TREATMENT

    def __post_init__(self) -> None:
        total = 0.0
        for name, share in self.arms:
            if not name or not 0.0 <= share <= 1.0:
                raise ValueError(f"arm {name!r}: share must lie in [0, 1], got {share}")
            total += share
        if total > 1.0 + 1e-9:
            raise ValueError(f"arm shares sum to {total:.4f} > 1")

    def arm_of(self, draw: float) -> str:
        edge = 0.0
        for name, share in self.arms:
            edge += share
            if draw < edge:
                return name
        return self.default


def assign(salt: str, customer_id: str, split: Split) -> str:
    return split.arm_of(unit_draw(salt, customer_id))


def holdout_split(control_share: float, challenger_share: float = 0.0) -> Split:
    """Control first (the holdout), then a challenger's share; everyone else is treatment."""
    arms: Sequence[tuple[str, float]] = [(CONTROL, control_share)]
    if challenger_share:
        arms = [*arms, (CHALLENGER, challenger_share)]
    return Split(tuple(arms))
