"""Champion / challenger and shadow: the experiment record and which customers it routes.

One experiment at a time, in the hash ``{p}:experiments`` (docs/DESIGN.md section 6): the
challenger version, the mode (``split``: the challenger answers its share of customers;
``shadow``: for its share the challenger's decision is computed and logged beside the
champion's answer, never served), the share in (0, 1], the salt of the customer hash and when it
started. A customer's draw is ``arms.unit_draw(salt, id)``, as for the holdout, so every replica
and restart routes a customer the same way; a new experiment draws a new salt.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from recsvc.experiments.arms import unit_draw

SPLIT = "split"
SHADOW = "shadow"
MODES = (SPLIT, SHADOW)


def parse_share(text: str) -> float:
    """The challenger's share of customers; ValueError naming the field and what is allowed."""
    try:
        share = float(text)
    except ValueError:
        raise ValueError(f"share: {text!r} is not a number (allowed: 0 < share <= 1)") from None
    if not (math.isfinite(share) and 0.0 < share <= 1.0):
        raise ValueError(f"share: {text} is outside (0, 1] (allowed: 0 < share <= 1)")
    return share


@dataclass(frozen=True)
class Experiment:
    challenger: str
    mode: str
    share: float
    salt: str
    started_at: float  # epoch seconds

    def __post_init__(self) -> None:
        if not self.challenger:
            raise ValueError("challenger: a model version is required")
        if self.mode not in MODES:
            raise ValueError(f"mode: {self.mode!r} is not one of {', '.join(MODES)}")
        parse_share(repr(self.share))
        if not self.salt:
            raise ValueError("salt: must not be empty")

    def fields(self) -> dict[str, str]:
        """The hash fields of ``{p}:experiments``."""
        return {"challenger": self.challenger, "mode": self.mode, "share": repr(self.share),
                "salt": self.salt, "started_at": f"{self.started_at:.3f}"}

    @classmethod
    def from_fields(cls, fields: Mapping[str, str]) -> Experiment | None:
        """The running experiment, or None when the hash is empty; ValueError naming the field
        when one is malformed (the record is written only by ``recsvc experiments start``)."""
        if not fields:
            return None
        missing = [f for f in ("challenger", "mode", "share", "salt") if f not in fields]
        if missing:
            raise ValueError(f"experiment record lacks {', '.join(missing)}")
        try:
            started = float(fields.get("started_at", "0"))
        except ValueError:
            raise ValueError(f"started_at: {fields['started_at']!r} is not a time") from None
        return cls(fields["challenger"], fields["mode"], parse_share(fields["share"]),
                   fields["salt"], started)

    def routes(self, customer_id: str) -> bool:
        """Whether the customer is in the challenger's share (served or shadowed)."""
        return unit_draw(self.salt, customer_id) < self.share

    def serves(self, customer_id: str) -> bool:
        """Split mode: the challenger version answers this customer."""
        return self.mode == SPLIT and self.routes(customer_id)

    def shadows(self, customer_id: str) -> bool:
        """Shadow mode: the challenger decides too, logged beside the champion's answer."""
        return self.mode == SHADOW and self.routes(customer_id)
