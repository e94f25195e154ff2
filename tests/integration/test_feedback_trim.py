"""The streams are trimmed only below what every kept version trained on and what the fold-in
consumers have delivered and acknowledged."""

from __future__ import annotations

import json

import pytest
import redis

from recsvc.core import schema
from recsvc.feedback.events import Event
from recsvc.store.feedback.events import Bounds, record_sync
from recsvc.store.feedback.streams import FOLDIN_GROUP, safe_points, trim_safe

pytestmark = [pytest.mark.cluster]
T = 1_800_000_000.0


def test_pending_fold_in_entries_and_missing_cutoffs_hold_the_trim(client: redis.Redis,
                                                                   keys: schema.Keys) -> None:
    bounds = Bounds(86400, 1000, 1000, 86400, 4)
    outcomes = record_sync(client, keys, bounds,
                           [Event(f"e{i}", "c1", "o1", "click", T + i) for i in range(6)])
    ids = [o.stream_id for o in outcomes]
    shard = schema.shard_of("c1")
    stream = keys.events(shard)
    assert safe_points(client, keys) == {}  # no active version: nothing is safe
    for version, cutoff in (("V1", ids[4]), ("V2", ids[5])):
        client.set(keys.meta(version), json.dumps({"feedback_cutoff": {str(shard): cutoff}}))
    client.set(keys.active, "V2")
    client.set(keys.previous, "V1")
    assert safe_points(client, keys)[shard] == ids[4]  # the previous version's cutoff
    client.xgroup_create(stream, FOLDIN_GROUP, id="0")
    client.xreadgroup(FOLDIN_GROUP, "slow", {stream: ">"}, count=3)  # e0..e2 pending
    client.xack(stream, FOLDIN_GROUP, ids[0])
    assert safe_points(client, keys)[shard] == ids[1]  # the oldest pending entry
    assert trim_safe(client, keys) == 1
    assert [e[1][b"id"] for e in client.xrange(stream)] == [b"e1", b"e2", b"e3", b"e4", b"e5"]
