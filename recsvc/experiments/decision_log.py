"""One decision-log entry: what attribution and off-policy evaluation need to know about one
answer. Pure: the flat stream fields of ``{p}:decisions:{shard}`` (docs/DESIGN.md section 6),
encoded and decoded here; the store appends them, the report reads them.

Numbers per offer travel as little-endian float32 blobs and offer ids joined by the ASCII unit
separator, so appending an entry costs the hot path a few bytes operations, not a JSON encoder.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from recsvc.core.schema import FLOAT32_LE

SEPARATOR = "\x1f"
Text = str | bytes  # a field's text, or its UTF-8 bytes
_EMPTY = np.empty(0, dtype=np.float32)


@dataclass(frozen=True)
class Decision:
    decision_id: str
    ts: float  # epoch seconds
    customer_id: str
    segment: str
    version: str
    arm: str
    strategy: str
    channel: str
    offers: tuple[str, ...]  # shown, best first
    scores: npt.NDArray[np.float32] = field(default_factory=lambda: _EMPTY)
    # Probability with which the policy showed each offer (1.0 when it decided deterministically).
    propensities: npt.NDArray[np.float32] = field(default_factory=lambda: _EMPTY)
    p_accept: npt.NDArray[np.float32] = field(default_factory=lambda: _EMPTY)
    values: npt.NDArray[np.float32] = field(default_factory=lambda: _EMPTY)
    costs: npt.NDArray[np.float32] = field(default_factory=lambda: _EMPTY)
    # A challenger in shadow: the offers it would have shown (off-policy evaluation).
    candidate_version: str = ""
    candidate: tuple[str, ...] = ()
    # Whether the answer explored (offers drawn uniformly among the eligible, epsilon-greedy):
    # training reports its held-out metrics on this slice separately (no bias but uniform).
    explored: bool = False

    def fields(self) -> list[bytes | str]:
        """Flat field/value pairs for XADD."""
        def blob(values: npt.NDArray[np.float32]) -> bytes:
            return np.asarray(values, dtype=FLOAT32_LE).tobytes()

        return entry_fields(self.decision_id, str(int(self.ts * 1000)), self.customer_id,
                            self.segment, self.version, self.arm, self.strategy, self.channel,
                            SEPARATOR.join(self.offers), blob(self.scores),
                            blob(self.propensities), blob(self.p_accept), blob(self.values),
                            blob(self.costs), self.candidate_version,
                            SEPARATOR.join(self.candidate), self.explored)

    @classmethod
    def from_fields(cls, raw: Mapping[bytes, bytes]) -> Decision:
        """Inverse of ``fields``; raises ValueError naming the field when one is malformed."""
        def text(key: str) -> str:
            return raw.get(key.encode(), b"").decode()

        def floats(key: str, n: int) -> npt.NDArray[np.float32]:
            value = raw.get(key.encode(), b"")
            if len(value) != 4 * n:
                raise ValueError(f"decision {text('id')!r}: field {key!r} holds "
                                 f"{len(value)} bytes for {n} offers")
            return np.frombuffer(value, dtype=FLOAT32_LE).astype(np.float32)

        offers = _split(text("o"))
        try:
            ts = int(text("t")) / 1000.0
        except ValueError as exc:
            raise ValueError(f"decision {text('id')!r}: field 't' is not a time") from exc
        return cls(text("id"), ts, text("c"), text("s"), text("v"), text("a"), text("g"),
                   text("ch"), offers, floats("sc", len(offers)), floats("p", len(offers)),
                   floats("pa", len(offers)), floats("val", len(offers)),
                   floats("cost", len(offers)), text("cv"), _split(text("co")),
                   text("x") == "1")


def entry_fields(decision_id: Text, ts_ms: Text, customer_id: Text, segment: Text,
                 version: Text, arm: Text, strategy: Text, channel: Text, offers: Text,
                 scores: bytes, propensities: bytes, p_accept: bytes, values: bytes,
                 costs: bytes, candidate_version: Text, candidate: Text,
                 explored: bool) -> list[bytes | str]:
    """The stream fields of one entry from its parts already encoded (offer ids joined by
    ``SEPARATOR``, numbers as float32 LE blobs): what ``Decision.fields`` returns, for writers
    that encode many entries at once (``recsvc campaign``, which gives the texts as bytes)."""
    return ["id", decision_id, "t", ts_ms, "c", customer_id, "s", segment, "v", version,
            "a", arm, "g", strategy, "ch", channel, "o", offers, "sc", scores,
            "p", propensities, "pa", p_accept, "val", values, "cost", costs,
            "cv", candidate_version, "co", candidate, "x", "1" if explored else "0"]


def _split(joined: str) -> tuple[str, ...]:
    return tuple(joined.split(SEPARATOR)) if joined else ()


def as_columns(decisions: Sequence[Decision]) -> dict[str, list[object]]:
    """Column lists (one row per decision) for a table or a Parquet export."""
    return {
        "decision_id": [d.decision_id for d in decisions], "ts": [d.ts for d in decisions],
        "customer_id": [d.customer_id for d in decisions],
        "segment": [d.segment for d in decisions], "version": [d.version for d in decisions],
        "arm": [d.arm for d in decisions], "strategy": [d.strategy for d in decisions],
        "channel": [d.channel for d in decisions],
        "offers": [list(d.offers) for d in decisions],
        "propensities": [d.propensities.tolist() for d in decisions],
        "values": [d.values.tolist() for d in decisions],
        "costs": [d.costs.tolist() for d in decisions],
        "candidate_version": [d.candidate_version for d in decisions],
        "candidate": [list(d.candidate) for d in decisions],
        "explored": [d.explored for d in decisions],
    }
