"""The holdout: which customers are kept as a control group, and what they get instead.

Configured by settings (the same on every replica, so every replica assigns the same arm):
``RECSVC_HOLDOUT_SHARE`` (default share of each segment held out), ``RECSVC_HOLDOUT_SEGMENTS``
(per-segment shares, ``at_risk=0.2,loyal=0.05``), ``RECSVC_HOLDOUT_SALT`` (change it to draw a
new control group) and ``RECSVC_HOLDOUT_BASELINE``: what control customers get, ``none`` (no
offer: measures what the offers achieve at all), ``popular`` (the segment's popular offers:
measures what personalisation and decisioning add over a simple campaign) or ``random``
(uniformly random offers among those eligible after rules and policy: measures what the model
adds over chance; ``recsvc/decisioning/baseline.py``, propensity k / eligible logged).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from recsvc.experiments.arms import CONTROL, TREATMENT, unit_draw

BASELINES = ("none", "popular", "random")


@dataclass(frozen=True)
class Holdout:
    share: float = 0.0
    per_segment: dict[str, float] = field(default_factory=dict)
    salt: str = "holdout-1"
    baseline: str = "none"

    def __post_init__(self) -> None:
        if self.baseline not in BASELINES:
            raise ValueError(f"holdout baseline must be one of {BASELINES}, not "
                             f"{self.baseline!r}")
        for name, share in {"": self.share, **self.per_segment}.items():
            if not 0.0 <= share <= 1.0:
                where = f"segment {name!r}" if name else "default"
                raise ValueError(f"holdout share ({where}) must lie in [0, 1], got {share}")

    @classmethod
    def parse(cls, share: float, segments: str, salt: str, baseline: str) -> Holdout:
        """From the settings' text; ValueError names what is wrong."""
        per_segment: dict[str, float] = {}
        for item in filter(None, (s.strip() for s in segments.split(","))):
            name, sep, value = item.partition("=")
            try:
                per_segment[name.strip()] = float(value)
            except ValueError:
                raise ValueError(f"holdout segments: {item!r} is not segment=share") from None
            if not sep or not name.strip():
                raise ValueError(f"holdout segments: {item!r} is not segment=share")
        return cls(share, per_segment, salt, baseline.strip().lower())

    @property
    def active(self) -> bool:
        return self.share > 0 or any(v > 0 for v in self.per_segment.values())

    def arm(self, customer_id: str, segment: str) -> str:
        """``control`` for the held-out share of the customer's segment, else ``treatment``."""
        share = self.per_segment.get(segment, self.share)
        if share <= 0:
            return TREATMENT
        return CONTROL if unit_draw(self.salt, customer_id) < share else TREATMENT
