"""The next answer changes: through the real API, an accepted offer leaves the answers at once,
and after the fold-in a customer the model did not know is served personally."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis

from recsvc.core.config import Settings
from recsvc.foldin.consumer import FoldInConsumer
from recsvc.v1 import offers_pb2 as pb
from tests.integration.helpers import planted
from tests.integration.serving import PERSONAL_CONFIG, running, train, wait_for_version

pytestmark = [pytest.mark.integration, pytest.mark.both_models]


def test_feedback_changes_the_next_answer(tmp_path: Path, settings: Settings,
                                          client: redis.Redis) -> None:
    version = train(planted(tmp_path), settings.redis_url, settings.key_prefix, PERSONAL_CONFIG)
    with running(settings) as (_, stub, _channel):
        wait_for_version(stub, version)
        ask = pb.RecommendRequest(customer_id="newbie", segment="main", limit=10)
        before = stub.Recommend(ask, timeout=5)
        assert before.strategy == pb.STRATEGY_SEGMENT_POPULAR
        events = [pb.FeedbackEvent(event_id=f"n{j}", customer_id="newbie", offer_id=f"a{j}",
                                   event="accept", segment="main") for j in range(1, 4)]
        reply = stub.RecordFeedback(pb.RecordFeedbackRequest(events=events), timeout=5)
        assert {r.status for r in reply.results} == {pb.FEEDBACK_STATUS_RECORDED}
        after = stub.Recommend(ask, timeout=5)  # live state: no accepted offer comes back
        assert not {"a1", "a2", "a3"} & {o.offer_id for o in after.offers}
        consumer = FoldInConsumer(client, settings, "c1", block_ms=10)
        consumer.ensure_groups()
        consumer.sync_version(start=True)  # folds the three accepts (start-up replay)
        personal = stub.Recommend(ask, timeout=5)
        assert personal.strategy in (pb.STRATEGY_PERSONALIZED, pb.STRATEGY_BLENDED)
        assert {o.offer_id for o in personal.offers[:2]} == {"a4", "a5"}
        assert not {"a1", "a2", "a3"} & {o.offer_id for o in personal.offers}
