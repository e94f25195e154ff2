"""The Redis layout shared by the training job (writer) and the service (reader).

Pure: key names, the binary codecs and the version id. docs/DESIGN.md describes the layout;
tests check the key names byte for byte, so a change here is a change of the stored format.

Every model key lives under one version: ``{prefix}:v:{version}:...``. Two pointer keys say which
versions are live; a reader that holds a version id reads only keys of that version, so no answer
mixes two models.
"""

from __future__ import annotations

import secrets
import struct
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
import numpy.typing as npt

from recsvc.core.config import Settings

FLOAT32_LE = np.dtype("<f4")
UINT32_LE = np.dtype("<u4")

RECORD_FORMAT_1 = 1  # header, vector, accepted offers (versions published before format 2)
RECORD_FORMAT = 2  # + the training confidence row (exact fold-in) and customer attributes
# format 1: format (u8), flags (u8, reserved), segment index (u16), factors (u16), accepted (u16)
_RECORD_HEADER_1 = struct.Struct("<BBHHH")
# format 2: the same, then history cells (u16) and attributes (u16)
_RECORD_HEADER = struct.Struct("<BBHHHHH")
MAX_RECORD_ITEMS = 0xFFFF
MISSING_CODE = 0xFFFFFFFF  # a categorical attribute without a value

# Live state is keyed by the customer's shard, a literal hash tag: every key about one customer
# lands in one Redis Cluster slot (docs/DESIGN.md section 6). Part of the stored format.
SHARDS = 64


def keys_for(settings: Settings) -> Keys:
    """The key names of a deployment: its prefix, named for a cluster or a single Redis."""
    return Keys(settings.key_prefix, cluster=settings.redis_cluster)


def shard_of(customer_id: str) -> int:
    """The customer's shard, 0..SHARDS-1: CRC-32 of the UTF-8 id modulo SHARDS."""
    return zlib.crc32(customer_id.encode()) % SHARDS

# Field names of a segment hash and of the global-popularity hash.
FIELD_OFFERS = "offers"  # u32 LE indices into the version's offer catalogue
FIELD_FACTORS = "factors"  # f32 LE, row-major (offers x factors); absent for popularity-only
FIELD_POPULARITY = "popularity"  # f32 LE, one score per offer, same order as FIELD_OFFERS


@dataclass(frozen=True)
class Keys:
    """Key names under one prefix (``RECSVC_KEY_PREFIX``, default ``recsvc``).

    ``cluster`` (``RECSVC_REDIS_CLUSTER``) names keys for Redis Cluster (docs/DESIGN.md section
    6, "Redis Cluster"): the keys that are not about one customer (pointers, manifests, version
    metadata, budgets, live offers, experiments) carry the prefix as their hash tag, ``{p}``, so
    the scripts and transactions over them stay on one slot; a version's customer records are
    spread over one hash per shard, on the slot of the customer's live keys. A single Redis
    keeps the names it always had (``cluster`` False).
    """

    prefix: str = "recsvc"
    cluster: bool = False

    @property
    def _c(self) -> str:
        """The prefix of the keys that are not about one customer: one slot on a cluster."""
        return f"{{{self.prefix}}}" if self.cluster else self.prefix

    @property
    def active(self) -> str:
        """String: the active version id."""
        return f"{self._c}:active"

    @property
    def previous(self) -> str:
        """String: the version that was active before; the rollback target."""
        return f"{self._c}:previous"

    @property
    def versions(self) -> str:
        """Hash: version id -> JSON manifest (state, segment count, created_at)."""
        return f"{self._c}:versions"

    @property
    def train_lock(self) -> str:
        """String with a TTL: held by the one training run allowed to publish."""
        return f"{self._c}:lock:train"

    def meta(self, version: str) -> str:
        """String: JSON run metadata (segments, parameters, metrics, fingerprint)."""
        return f"{self._c}:v:{version}:meta"

    def offers(self, version: str) -> str:
        """String: JSON offer catalogue, in index order."""
        return f"{self._c}:v:{version}:offers"

    def segment(self, version: str, index: int) -> str:
        """Hash: FIELD_OFFERS, FIELD_POPULARITY and (with a model) FIELD_FACTORS."""
        return f"{self._c}:v:{version}:seg:{index}"

    def global_popularity(self, version: str) -> str:
        """Hash: FIELD_OFFERS, FIELD_POPULARITY for offers open to every segment."""
        return f"{self._c}:v:{version}:global"

    def customers(self, version: str) -> str:
        """Hash: customer id -> customer record (see encode_customer_record), on a single
        Redis; on a cluster the records are spread over ``customer_hash`` per shard."""
        return f"{self.prefix}:v:{version}:customers"

    def customer_hash(self, version: str, shard: int) -> str:
        """The hash holding the records of the customers of ``shard``: ``customers`` on a
        single Redis, ``customers:{shard}`` (the live keys' slot) on a cluster."""
        if not self.cluster:
            return self.customers(version)
        return f"{self.prefix}:v:{version}:customers:{{{shard}}}"

    def customer_hash_of(self, version: str, customer_id: str) -> str:
        return self.customer_hash(version, shard_of(customer_id))

    def customer_hashes(self, version: str) -> list[str]:
        """Every hash of a version's customer records (one, or one per shard)."""
        if not self.cluster:
            return [self.customers(version)]
        return [self.customer_hash(version, s) for s in range(SHARDS)]

    def live(self, customer_id: str) -> str:
        """Hash: the customer's live state (accepts, declines, contacts, fold-in records)."""
        return self.live_in(shard_of(customer_id), customer_id)

    def live_in(self, shard: int, customer_id: str) -> str:
        """``live`` when the caller already knows the customer's shard."""
        return f"{self.prefix}:live:{{{shard}}}:{customer_id}"

    def events(self, shard: int) -> str:
        """Stream: the durable log of recorded feedback events of one shard."""
        return f"{self.prefix}:events:{{{shard}}}"

    def dedup(self, shard: int) -> str:
        """Sorted set: event ids recorded within the dedup window (score: epoch seconds)."""
        return f"{self.prefix}:dedup:{{{shard}}}"

    def decisions(self, shard: int) -> str:
        """Stream: the decision log of one shard (one entry per answer)."""
        return f"{self.prefix}:decisions:{{{shard}}}"

    def budget_use(self, shard: int) -> str:
        """Hash, on a cluster only: on-accept budget counters (``<offer>:used...``) counted by the
        feedback script of ``shard``, summed with ``budgets``' own (one slot per event script)."""
        return f"{self.prefix}:budgetuse:{{{shard}}}"

    @property
    def budgets(self) -> str:
        """Hash: budget specs and counters of every budgeted offer (one slot: atomic reserve)."""
        return f"{self._c}:budgets"

    @property
    def offers_live(self) -> str:
        """Hash: offer id -> JSON overrides or a new offer, set without retraining."""
        return f"{self._c}:offers:live"

    @property
    def offers_rev(self) -> str:
        """String counter: bumped on every change of ``offers_live`` (replicas reload on move)."""
        return f"{self._c}:offers:rev"

    @property
    def do_not_contact(self) -> str:
        """Set: customer ids that must never get an offer."""
        return f"{self._c}:dnc"

    @property
    def experiments(self) -> str:
        """Hash: experiment definitions (arms, split, salt, shadow)."""
        return f"{self._c}:experiments"

    @property
    def foldin_replayed(self) -> str:
        """Hash: version -> epoch s when the fold-in consumers last replayed the streams into it
        (only the active version's entry is kept: a switch back must replay again)."""
        return f"{self._c}:foldin:replayed"

    def version_keys(self, version: str, segment_count: int) -> list[str]:
        """Every key a version owns, for deletion."""
        return [
            self.meta(version),
            self.offers(version),
            self.global_popularity(version),
            *self.customer_hashes(version),
            *(self.segment(version, i) for i in range(segment_count)),
        ]


def new_version_id(now: datetime | None = None) -> str:
    """A sortable, unique version id such as ``20261124T101500Z-3f9a1c``."""
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    return f"{moment:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


_NO_U32 = np.empty(0, dtype=np.uint32)
_NO_F32 = np.empty(0, dtype=np.float32)


@dataclass(frozen=True)
class CustomerRecord:
    """What the service needs of one customer, decoded from one Redis hash field."""

    segment_index: int
    vector: npt.NDArray[np.float32]  # empty when the segment has no model
    accepted: npt.NDArray[np.uint32]  # catalogue indices of offers accepted or redeemed
    # The confidence row the customer was trained on (catalogue indices, raw confidence before
    # alpha): what an exact fold-in solves on, together with new events.
    cell_offers: npt.NDArray[np.uint32] = field(default_factory=lambda: _NO_U32)
    cell_confidence: npt.NDArray[np.float32] = field(default_factory=lambda: _NO_F32)
    # One u32 per attribute of the version meta's `attributes`: f32 bits for a number (NaN when
    # missing), a code into the version's value table for a category (MISSING_CODE when missing).
    attributes: npt.NDArray[np.uint32] = field(default_factory=lambda: _NO_U32)


def encode_customer_record(
    segment_index: int,
    vector: npt.NDArray[np.float32],
    accepted: npt.NDArray[np.uint32] | list[int],
    cell_offers: npt.ArrayLike = (),
    cell_confidence: npt.ArrayLike = (),
    attributes: npt.ArrayLike = (),
) -> bytes:
    """Header, vector (f32 LE), accepted (u32), cell offers (u32), cell confidences (f32),
    attributes (u32): the format-2 record of docs/DESIGN.md section 6."""
    accepted_arr = np.asarray(accepted, dtype=UINT32_LE)
    cells = np.asarray(cell_offers, dtype=UINT32_LE)
    confidence = np.asarray(cell_confidence, dtype=FLOAT32_LE)
    attrs = np.asarray(attributes, dtype=UINT32_LE)
    if len(cells) != len(confidence):
        raise ValueError("customer record: one confidence per history cell is needed")
    if max(len(vector), len(accepted_arr), len(cells), len(attrs)) > MAX_RECORD_ITEMS:
        raise ValueError("customer record too large")
    return (pack_record_header(segment_index, len(vector), len(accepted_arr), len(cells),
                               len(attrs))
            + np.asarray(vector, dtype=FLOAT32_LE).tobytes() + accepted_arr.tobytes()
            + cells.tobytes() + confidence.tobytes() + attrs.tobytes())


def pack_record_header(segment_index: int, factors: int, accepted: int, cells: int = 0,
                       attributes: int = 0) -> bytes:
    """The 12-byte header of a format-2 record (the job builds records from it in bulk)."""
    return _RECORD_HEADER.pack(RECORD_FORMAT, 0, segment_index, factors, accepted, cells,
                               attributes)


def decode_customer_record(raw: bytes) -> CustomerRecord:
    """Inverse of encode_customer_record (formats 1 and 2); ValueError on anything malformed."""
    if len(raw) < _RECORD_HEADER_1.size:
        raise ValueError("customer record shorter than its header")
    fmt = raw[0]
    if fmt == RECORD_FORMAT_1:
        _, _flags, segment_index, dim, n_accepted = _RECORD_HEADER_1.unpack_from(raw)
        n_cells = n_attrs = 0
        offset = _RECORD_HEADER_1.size
    elif fmt == RECORD_FORMAT:
        if len(raw) < _RECORD_HEADER.size:
            raise ValueError("customer record shorter than its header")
        _, _flags, segment_index, dim, n_accepted, n_cells, n_attrs = \
            _RECORD_HEADER.unpack_from(raw)
        offset = _RECORD_HEADER.size
    else:
        raise ValueError(f"unknown customer record format {fmt}")
    expected = offset + 4 * (dim + n_accepted + 2 * n_cells + n_attrs)
    if len(raw) != expected:
        raise ValueError(f"customer record is {len(raw)} bytes, header says {expected}")
    vector = np.frombuffer(raw, dtype=FLOAT32_LE, count=dim, offset=offset)
    offset += 4 * dim
    accepted = np.frombuffer(raw, dtype=UINT32_LE, count=n_accepted, offset=offset)
    if not n_cells and not n_attrs:  # the common case on the hot path: two views, no more
        return CustomerRecord(segment_index, vector.astype(np.float32, copy=False), accepted)
    offset += 4 * n_accepted
    cells = np.frombuffer(raw, dtype=UINT32_LE, count=n_cells, offset=offset)
    offset += 4 * n_cells
    confidence = np.frombuffer(raw, dtype=FLOAT32_LE, count=n_cells, offset=offset)
    offset += 4 * n_cells
    attrs = np.frombuffer(raw, dtype=UINT32_LE, count=n_attrs, offset=offset)
    return CustomerRecord(segment_index, vector.astype(np.float32, copy=False), accepted,
                          cells, confidence.astype(np.float32, copy=False), attrs)


def encode_f32(values: npt.ArrayLike) -> bytes:
    return np.ascontiguousarray(values, dtype=FLOAT32_LE).tobytes()


def decode_f32(raw: bytes) -> npt.NDArray[np.float32]:
    if len(raw) % 4:
        raise ValueError("float32 blob length is not a multiple of 4")
    return np.frombuffer(raw, dtype=FLOAT32_LE).astype(np.float32)


def encode_u32(values: npt.ArrayLike) -> bytes:
    return np.ascontiguousarray(values, dtype=UINT32_LE).tobytes()


def decode_u32(raw: bytes) -> npt.NDArray[np.uint32]:
    if len(raw) % 4:
        raise ValueError("uint32 blob length is not a multiple of 4")
    return np.frombuffer(raw, dtype=UINT32_LE).astype(np.uint32)


# Fields of the customer live hash ``Keys.live`` (docs/DESIGN.md section 6).
LIVE_SEGMENT = "seg"  # segment name from a feedback event (customers the model does not know)
LIVE_ACCEPTED = "a:"  # + offer id -> epoch s of the accept/redeem
LIVE_DECLINED = "d:"  # + offer id -> "<count> <last epoch s>"
LIVE_IGNORED = "n:"  # + offer id -> "<count> <last epoch s>" of impressions without engagement
LIVE_CONTACTS = "c:"  # + channel -> space-separated epoch s, newest last
LIVE_RECORD = "r:"  # + version -> customer record folded in for that version
LIVE_FOLDED = "f:"  # + version -> space-separated stream ids already folded into r:<version>


def live_record_field(version: str) -> str:
    return f"{LIVE_RECORD}{version}"


def live_folded_field(version: str) -> str:
    return f"{LIVE_FOLDED}{version}"
