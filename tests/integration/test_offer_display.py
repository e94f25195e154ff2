"""Offer display fields end to end: optional columns of the offers table -> the published
catalogue -> RankedOffer over gRPC and HTTP/JSON; `recsvc offers set` changes them live; a bad
value is refused naming the offer and the field, and changes nothing."""

from __future__ import annotations

import time
from pathlib import Path

import grpc
import pytest
import redis

from recsvc.core import schema
from recsvc.core.config import Settings
from recsvc.v1 import offers_pb2 as pb
from recsvc.v1 import offers_pb2_grpc as pb_grpc
from tests.integration.helpers import FAST_CONFIG, cli, planted, with_display_columns
from tests.integration.http_face import call, http_server
from tests.integration.serving import train, wait_for_version
from training import localredis

pytestmark = [pytest.mark.integration, pytest.mark.both_models]

A5 = {"description": "Three months at half price.\nNo commitment.",
      "imageUrl": "https://cdn.example.com/offers/a5.png",
      "acceptLabel": "Apply half price", "declineLabel": "Not interested"}
NONE = {"description": "", "imageUrl": "", "acceptLabel": "", "declineLabel": ""}


def display(offer: dict[str, object]) -> dict[str, object]:
    return {k: offer[k] for k in NONE}


def test_display_fields_flow_from_the_offers_table_to_grpc_and_json_and_change_live(
        tmp_path: Path, redis_server: localredis.LocalRedis, server_model: str) -> None:
    settings = Settings(redis_url=redis_server.url, key_prefix=f"display-{server_model}",
                        host="127.0.0.1", port=0, redis_timeout_ms=50, model_poll_ms=100,
                        default_deadline_ms=1000, server_model=server_model)
    version = train(with_display_columns(planted(tmp_path)), settings.redis_url,
                    settings.key_prefix, FAST_CONFIG)
    with http_server(settings) as running, \
            grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        assert running.http is not None
        stub = pb_grpc.RetentionOfferServiceStub(channel)
        wait_for_version(stub, version)
        answer = call(running.http.port, "Recommend", {"customerId": "a-test", "limit": 10})
        assert answer.status == 200, answer.body
        offers = {o["offerId"]: o for o in answer.json()["offers"]}
        assert display(offers["a5"]) == A5
        assert display(offers["b2"]) == NONE  # its javascript: URL was never published
        assert display(offers["b1"]) == NONE
        ranked = {o.offer_id: o for o in stub.Recommend(
            pb.RecommendRequest(customer_id="a-test", limit=10), timeout=5).offers}
        assert (ranked["a5"].description, ranked["a5"].image_url, ranked["a5"].accept_label,
                ranked["a5"].decline_label) == tuple(A5.values())

        # Live: a new label and no image for a5, a description for b1; every replica follows.
        done = cli(["offers", "set", "a5", "--accept-label", "Yes, half price", "--image-url",
                    ""], settings.redis_url, settings.key_prefix)
        assert done.returncode == 0, done.stderr
        done = cli(["offers", "set", "b1", "--description", "A free month."],
                   settings.redis_url, settings.key_prefix)
        assert done.returncode == 0, done.stderr
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            offers = {o["offerId"]: o for o in call(running.http.port, "Recommend", {
                "customerId": "a-test", "limit": 10}).json()["offers"]}
            if offers["b1"]["description"]:  # the later of the two changes
                break
            time.sleep(0.05)
        assert display(offers["a5"]) == {**A5, "acceptLabel": "Yes, half price", "imageUrl": ""}
        assert offers["b1"]["description"] == "A free month."


@pytest.mark.parametrize(("args", "message"), [
    (["--image-url", "ftp://cdn.example.com/a.png"],
     "offer 'a1': image_url 'ftp://cdn.example.com/a.png' must be an http:// or https:// URL"),
    (["--decline-label", "x" * 41], "decline_label 'xxxx"),
])
def test_a_bad_live_display_value_is_refused_and_changes_nothing(
        tmp_path: Path, redis_server: localredis.LocalRedis, args: list[str],
        message: str) -> None:
    prefix = f"display-bad-{len(args[1])}"
    keys = schema.Keys(prefix)
    client = redis.Redis.from_url(redis_server.url)
    # A bare active version is enough for the admin's checks (no training needed).
    client.set(keys.active, "v1")
    client.set(keys.meta("v1"), '{"version": "v1", "trained_at": "t", "segments": []}')
    client.set(keys.offers("v1"), '[{"offer_id": "a1"}]')
    result = cli(["offers", "set", "a1", *args], redis_server.url, prefix)
    assert result.returncode != 0 and message in result.stderr, result.stderr
    assert client.hgetall(keys.offers_live) == {} and client.get(keys.offers_rev) is None
    client.close()
