"""Fold-in on a segment served by the exposure model, on a real Redis: training publishes every
shown cell with the accepts, and a customer's new events give the exposure model's own exact
customer solve on the published offer side (computed here independently)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import redis

from recsvc.core import schema
from recsvc.core.config import Settings
from recsvc.feedback.events import Event
from recsvc.foldin.consumer import FoldInConsumer
from recsvc.store.feedback.events import Bounds, record_sync
from tests.integration.helpers import FAST_CONFIG
from tests.integration.serving import train
from tests.integration.test_foldin import folded

pytestmark = pytest.mark.integration
T = 1_800_000_000.0
REGULARIZATION = 10.0
# An impression weighs 1 here, so an impression-only cell sums to 0 with the negative-impression
# weight (-1): implicit's matrix leaves such cells out, the exposure model must not.
CONFIG = FAST_CONFIG.replace("blend_weights = [0.0, 0.5, 1.0]", "blend_weights = [1.0]") + f"""
[events]
impression = 1.0
[exposure]
model = "exposure"
factors = [4]
regularization = [{REGULARIZATION}]
"""


def shown_world(out: Path) -> tuple[Path, dict[str, set[str]], dict[str, set[str]]]:
    """One segment, two tastes: every customer is shown 8 of 12 offers (an impression each) and
    accepts those of their taste among them, sometimes one more. Returns the data directory and
    per customer the offers shown and accepted."""
    rng = random.Random(11)
    offers = [f"{g}{j}" for g in "ab" for j in range(1, 7)]
    customers, interactions = ["customer_id,segment"], ["customer_id,offer_id,event,ts"]
    shown: dict[str, set[str]] = {}
    accepted: dict[str, set[str]] = {}
    t = 1_700_000_000
    for i in range(160):
        cid, taste = f"u{i}", "ab"[i % 2]
        customers.append(f"{cid},main")
        seen = rng.sample(offers, 8)
        taken = {o for o in seen if o[0] == taste} | ({rng.choice(seen)} if i % 5 == 0 else set())
        shown[cid], accepted[cid] = set(seen), taken
        for offer in seen:
            t += 1
            interactions.append(f"{cid},{offer},impression,{t}")
            if offer in taken:
                t += 1
                interactions.append(f"{cid},{offer},accept,{t}")
    customers.append("watcher,main")  # shown three offers, accepted none
    shown["watcher"], accepted["watcher"] = {"a1", "b2", "a3"}, set()
    for offer in sorted(shown["watcher"]):
        t += 1
        interactions.append(f"watcher,{offer},impression,{t}")
    out.mkdir(parents=True, exist_ok=True)
    (out / "customers.csv").write_text("\n".join(customers) + "\n")
    (out / "offers.csv").write_text(
        "offer_id,segments,title\n" + "".join(f"{o},*,Offer {o}\n" for o in offers))
    (out / "interactions.csv").write_text("\n".join(interactions) + "\n")
    return out, shown, accepted


def exposure_solve(items: np.ndarray, offers: list[int], shown: set[int],
                   accepted: set[int]) -> np.ndarray:
    """``(sum y y^T + reg I) x = sum (t - b) y`` over the shown offers; ``[x, 1]``."""
    rows = [offers.index(o) for o in sorted(shown)]
    y, bias = items[rows, :-1].astype(np.float64), items[rows, -1].astype(np.float64)
    target = np.array([1.0 if o in accepted else 0.0 for o in sorted(shown)])
    x = np.linalg.solve(y.T @ y + REGULARIZATION * np.eye(y.shape[1]), y.T @ (target - bias))
    return np.append(x, 1.0)


def test_an_exposure_segment_folds_new_events_into_its_own_exact_solve(
        tmp_path: Path, settings: Settings, client: redis.Redis) -> None:
    data, shown, accepted = shown_world(tmp_path / "world")
    version = train(data, settings.redis_url, settings.key_prefix, CONFIG)
    keys = schema.keys_for(settings)
    meta = json.loads(client.get(keys.meta(version)))
    assert meta["segments"][0]["params"]["model"] == "exposure"
    catalogue = [o["offer_id"] for o in json.loads(client.get(keys.offers(version)))]
    blob = client.hgetall(keys.segment(version, 0))
    offers = schema.decode_u32(blob[b"offers"]).tolist()
    items = schema.decode_f32(blob[b"factors"]).reshape(len(offers), -1)

    # Impression-only cells (confidence 1 - 1 = 0) are published too, and a customer who was
    # only shown offers gets the exposure model's vector, not segment popularity.
    watcher = schema.decode_customer_record(
        client.hget(keys.customer_hash_of(version, "watcher"), "watcher"))
    assert {catalogue[o] for o in watcher.cell_offers.tolist()} == shown["watcher"]
    assert set(watcher.cell_confidence.tolist()) == {0.0} and not len(watcher.accepted)
    np.testing.assert_allclose(watcher.vector, exposure_solve(
        items, offers, {catalogue.index(o) for o in shown["watcher"]}, set()), atol=1e-4)

    customer = "u1"  # taste b
    record = schema.decode_customer_record(
        client.hget(keys.customer_hash_of(version, customer), customer))
    # Every shown cell is published (impression-only ones too), with the accepts beside them.
    assert {catalogue[o] for o in record.cell_offers.tolist()} == shown[customer]
    assert {catalogue[o] for o in record.accepted.tolist()} == accepted[customer]
    index = {o: catalogue.index(o) for o in catalogue}
    np.testing.assert_allclose(
        record.vector, exposure_solve(items, offers, {index[o] for o in shown[customer]},
                                      {index[o] for o in accepted[customer]}), atol=1e-4)

    declined = sorted(shown[customer] - accepted[customer])[0]
    unseen = sorted(set(catalogue) - shown[customer])[0]
    record_sync(client, keys, Bounds.from_settings(settings), [
        Event("1", customer, declined, "accept", T),
        Event("2", customer, unseen, "impression", T + 1)])
    consumer = FoldInConsumer(client, settings, "c1", block_ms=10)
    consumer.ensure_groups()
    consumer.sync_version(start=True)
    after = folded(client, keys, version, customer)
    now_shown = {index[o] for o in shown[customer] | {unseen}}
    now_accepted = {index[o] for o in accepted[customer] | {declined}}
    assert set(after.cell_offers.tolist()) == now_shown
    assert set(after.accepted.tolist()) == now_accepted
    np.testing.assert_allclose(after.vector,
                               exposure_solve(items, offers, now_shown, now_accepted), atol=1e-4)
    row = offers.index(index[declined])
    assert items[row] @ after.vector > items[row] @ record.vector  # the accept raised it
