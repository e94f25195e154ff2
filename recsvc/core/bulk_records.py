"""Many customer records decoded at once: numpy over one joined buffer, no Python per record.

The campaign reads records by the thousand; ``schema.decode_customer_record`` costs a few
microseconds each in Python. This reads the same formats (1 and 2, docs/DESIGN.md sections 1
and 6) with gathers over the concatenated bytes. A record this cannot vouch for (wrong length,
unknown format, a vector of another size than its segment's, non-finite factors, an accepted
index beyond the catalogue) is marked not ``ok``: the caller decodes it the ordinary way, which
names the defect exactly as serving does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from recsvc.core.schema import MISSING_CODE, RECORD_FORMAT, RECORD_FORMAT_1

I64 = npt.NDArray[np.int64]


@dataclass(frozen=True)
class Records:
    """Records of n customers (rows), as arrays; rows without a record have ``present`` False."""

    present: npt.NDArray[np.bool_]
    ok: npt.NDArray[np.bool_]  # present and decodable here (else: decode it one by one)
    segment: I64  # segment index (-1 when not ok)
    factors: I64  # F of the record (0: no vector)
    buffer: npt.NDArray[np.uint8]  # every present record, joined
    start: I64  # byte offset of each row's record in ``buffer`` (-1 when absent)
    header: I64  # header size of each row's format
    accepted_count: I64

    def vectors(self, rows: npt.NDArray[np.intp], factor_count: int) -> npt.NDArray[np.float32]:
        """The factor vectors of ``rows`` (each holding ``factor_count`` factors), n x F."""
        width = 4 * factor_count
        at = (self.start[rows] + self.header[rows])[:, np.newaxis] + np.arange(width)
        vectors: npt.NDArray[np.float32] = self.buffer[at].view("<f4").reshape(
            len(rows), factor_count).astype(np.float32, copy=False)
        return vectors

    def accepted(self, rows: npt.NDArray[np.intp]) -> tuple[I64, I64]:
        """(position in ``rows``, catalogue index) of every accepted offer of ``rows``."""
        counts = self.accepted_count[rows]
        total = int(counts.sum())
        if not total:
            return np.empty(0, np.int64), np.empty(0, np.int64)
        owner = np.repeat(np.arange(len(rows)), counts)
        first = self.start[rows] + self.header[rows] + 4 * self.factors[rows]
        within = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)
        at = (np.repeat(first, counts) + 4 * within)[:, np.newaxis] + np.arange(4)
        return owner, self.buffer[at].view("<u4").reshape(total).astype(np.int64)

    def attributes(self, rows: npt.NDArray[np.intp], size: int) -> npt.NDArray[np.uint32]:
        """n x ``size`` attribute words; a record holding another number of attributes (a
        format-1 record, an older layout) reads as all missing, as ``decide`` reads it."""
        out = np.full((len(rows), size), MISSING_CODE, dtype=np.uint32)
        if not size or not len(rows):
            return out
        start, header = self.start[rows], self.header[rows]
        fmt2 = header == 12
        has = np.zeros(len(rows), dtype=bool)
        cells = np.zeros(len(rows), dtype=np.int64)
        if fmt2.any():
            k = self._u16(start + 10)
            cells = np.where(fmt2, self._u16(start + 8), 0)
            has = fmt2 & (k == size)
        if not has.any():
            return out
        first = start + header + 4 * (self.factors[rows] + self.accepted_count[rows] + 2 * cells)
        picked = np.flatnonzero(has)
        at = first[picked][:, np.newaxis] + np.arange(4 * size)
        out[picked] = self.buffer[at].view("<u4").reshape(len(picked), size)
        return out

    def _u16(self, at: I64) -> I64:
        if not len(self.buffer):
            return np.zeros(len(at), dtype=np.int64)
        safe = np.clip(at, 0, len(self.buffer) - 2)
        return self.buffer[safe].astype(np.int64) | (self.buffer[safe + 1].astype(np.int64) << 8)


def decode_many(raws: Sequence[bytes | None], segment_factors: Sequence[int],
                catalogue_size: int) -> Records:
    """``raws``: one record or None per customer; ``segment_factors``: F of each segment of the
    version (0 for a segment served by popularity)."""
    n = len(raws)
    if None in raws:
        raws = [b"" if r is None else r for r in raws]
    # A record is never empty, so an empty one is a missing one (C loops, no Python per row).
    lengths = np.fromiter(map(len, raws), dtype=np.int64, count=n)  # type: ignore[arg-type]
    present = lengths > 0
    buffer = np.frombuffer(b"".join(raws), dtype=np.uint8)  # type: ignore[arg-type]
    start = np.where(present, np.cumsum(lengths) - lengths, -1)
    out = Records(present, np.zeros(n, bool), np.full(n, -1, np.int64), np.zeros(n, np.int64),
                  buffer, start, np.zeros(n, np.int64), np.zeros(n, np.int64))
    long_enough = present & (lengths >= 8)
    if not long_enough.any():
        return out
    at = np.where(long_enough, start, 0)
    fmt = np.where(long_enough, buffer[at], 0)

    def u16(offset: int) -> I64:
        return out._u16(at + offset)

    fmt1, fmt2 = long_enough & (fmt == RECORD_FORMAT_1), \
        long_enough & (fmt == RECORD_FORMAT) & (lengths >= 12)
    header = np.where(fmt2, 12, 8)
    segment, factors, accepted = u16(2), u16(4), u16(6)
    cells = np.where(fmt2, u16(8), 0)
    attrs = np.where(fmt2, u16(10), 0)
    ok = (fmt1 | fmt2) & (lengths == header + 4 * (factors + accepted + 2 * cells + attrs))
    sizes = np.asarray([*segment_factors, -1], dtype=np.int64)
    seg = np.where(ok & (segment < len(segment_factors)), segment, len(segment_factors))
    ok &= seg < len(segment_factors)
    ok &= (factors == 0) | (factors == sizes[seg])
    out = Records(present, ok, np.where(ok, segment, -1), np.where(ok, factors, 0), buffer,
                  start, header, np.where(ok, accepted, 0))
    # Vectors finite, accepted indices within the catalogue: checked per segment's width.
    for width in {int(f) for f in np.unique(out.factors[ok]) if f}:
        rows = np.flatnonzero(ok & (out.factors == width))
        bad = ~np.isfinite(out.vectors(rows, width)).all(axis=1)
        ok[rows[bad]] = False
    owner, index = out.accepted(np.flatnonzero(ok))
    if len(index):
        rows = np.flatnonzero(ok)
        ok[rows[np.unique(owner[index >= catalogue_size])]] = False
    return Records(present, ok, np.where(ok, segment, -1), np.where(ok, factors, 0), buffer,
                   start, header, np.where(ok, accepted, 0))
