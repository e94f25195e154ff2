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
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import numpy.typing as npt

FLOAT32_LE = np.dtype("<f4")
UINT32_LE = np.dtype("<u4")

RECORD_FORMAT = 1
# format (u8), flags (u8, reserved), segment index (u16), factors (u16), accepted offers (u16)
_RECORD_HEADER = struct.Struct("<BBHHH")
MAX_RECORD_ITEMS = 0xFFFF

# Live state is sharded by customer: every key of one customer carries the hash tag of its shard
# (docs/DESIGN.md section 6). The number is part of the stored format.
SHARDS = 64


def shard_of(customer_id: str) -> int:
    """The customer's shard: ``crc32(utf-8 id) % 64`` (the hash tag of all their live keys)."""
    return zlib.crc32(customer_id.encode()) % SHARDS


# Field names of a segment hash and of the global-popularity hash.
FIELD_OFFERS = "offers"  # u32 LE indices into the version's offer catalogue
FIELD_FACTORS = "factors"  # f32 LE, row-major (offers x factors); absent for popularity-only
FIELD_POPULARITY = "popularity"  # f32 LE, one score per offer, same order as FIELD_OFFERS


@dataclass(frozen=True)
class Keys:
    """Key names under one prefix (``RECSVC_KEY_PREFIX``, default ``recsvc``)."""

    prefix: str = "recsvc"

    @property
    def active(self) -> str:
        """String: the active version id."""
        return f"{self.prefix}:active"

    @property
    def previous(self) -> str:
        """String: the version that was active before; the rollback target."""
        return f"{self.prefix}:previous"

    @property
    def versions(self) -> str:
        """Hash: version id -> JSON manifest (state, segment count, created_at)."""
        return f"{self.prefix}:versions"

    @property
    def train_lock(self) -> str:
        """String with a TTL: held by the one training run allowed to publish."""
        return f"{self.prefix}:lock:train"

    def meta(self, version: str) -> str:
        """String: JSON run metadata (segments, parameters, metrics, fingerprint)."""
        return f"{self.prefix}:v:{version}:meta"

    def offers(self, version: str) -> str:
        """String: JSON offer catalogue, in index order."""
        return f"{self.prefix}:v:{version}:offers"

    def segment(self, version: str, index: int) -> str:
        """Hash: FIELD_OFFERS, FIELD_POPULARITY and (with a model) FIELD_FACTORS."""
        return f"{self.prefix}:v:{version}:seg:{index}"

    def global_popularity(self, version: str) -> str:
        """Hash: FIELD_OFFERS, FIELD_POPULARITY for offers open to every segment."""
        return f"{self.prefix}:v:{version}:global"

    def customers(self, version: str) -> str:
        """Hash: customer id -> customer record (see encode_customer_record)."""
        return f"{self.prefix}:v:{version}:customers"

    def live(self, customer_id: str) -> str:
        """Hash: the customer's live state (accepts, declines, contacts, folded-in records)."""
        return f"{self.prefix}:live:{{{shard_of(customer_id)}}}:{customer_id}"

    def events(self, shard: int) -> str:
        """Stream: the durable feedback log of one shard (one entry per recorded event)."""
        return f"{self.prefix}:events:{{{shard}}}"

    def dedup(self, shard: int) -> str:
        """Sorted set: event ids of one shard seen recently -> epoch seconds (idempotency)."""
        return f"{self.prefix}:dedup:{{{shard}}}"

    @property
    def foldin_replayed(self) -> str:
        """Hash: version -> "done" once the fold-in consumers replayed the stream into it."""
        return f"{self.prefix}:foldin:replayed"

    def foldin_replay_lock(self, version: str) -> str:
        """String with a TTL: held by the one consumer replaying the stream into ``version``."""
        return f"{self.prefix}:foldin:lock:{version}"

    def version_keys(self, version: str, segment_count: int) -> list[str]:
        """Every key a version owns, for deletion."""
        return [
            self.meta(version),
            self.offers(version),
            self.global_popularity(version),
            self.customers(version),
            *(self.segment(version, i) for i in range(segment_count)),
        ]


def new_version_id(now: datetime | None = None) -> str:
    """A sortable, unique version id such as ``20261124T101500Z-3f9a1c``."""
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    return f"{moment:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


@dataclass(frozen=True)
class CustomerRecord:
    """What the service needs of one customer, decoded from one Redis hash field."""

    segment_index: int
    vector: npt.NDArray[np.float32]  # empty when the segment has no model
    accepted: npt.NDArray[np.uint32]  # catalogue indices of offers accepted or redeemed


def encode_customer_record(
    segment_index: int,
    vector: npt.NDArray[np.float32],
    accepted: npt.NDArray[np.uint32] | list[int],
) -> bytes:
    """Header, then the factor vector as raw little-endian float32, then u32 offer indices."""
    accepted_arr = np.asarray(accepted, dtype=UINT32_LE)
    if len(vector) > MAX_RECORD_ITEMS or len(accepted_arr) > MAX_RECORD_ITEMS:
        raise ValueError("customer record too large")
    return (pack_record_header(segment_index, len(vector), len(accepted_arr))
            + np.asarray(vector, dtype=FLOAT32_LE).tobytes() + accepted_arr.tobytes())


def pack_record_header(segment_index: int, factors: int, accepted: int) -> bytes:
    """The 8-byte header of a customer record (the job builds records from it in bulk)."""
    return _RECORD_HEADER.pack(RECORD_FORMAT, 0, segment_index, factors, accepted)


def decode_customer_record(raw: bytes) -> CustomerRecord:
    """Inverse of encode_customer_record; raises ValueError on anything malformed."""
    if len(raw) < _RECORD_HEADER.size:
        raise ValueError("customer record shorter than its header")
    fmt, _flags, segment_index, dim, n_accepted = _RECORD_HEADER.unpack_from(raw)
    if fmt != RECORD_FORMAT:
        raise ValueError(f"unknown customer record format {fmt}")
    expected = _RECORD_HEADER.size + 4 * dim + 4 * n_accepted
    if len(raw) != expected:
        raise ValueError(f"customer record is {len(raw)} bytes, header says {expected}")
    vector = np.frombuffer(raw, dtype=FLOAT32_LE, count=dim, offset=_RECORD_HEADER.size)
    accepted = np.frombuffer(
        raw, dtype=UINT32_LE, count=n_accepted, offset=_RECORD_HEADER.size + 4 * dim
    )
    return CustomerRecord(segment_index, vector.astype(np.float32, copy=False), accepted)


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
