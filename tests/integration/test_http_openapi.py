"""Every path of the served OpenAPI document, called exactly as documented: each answer fits
the documented schema."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from openapi_schema_validator import OAS31Validator

from recsvc.core.config import Settings
from tests.integration.helpers import FAST_CONFIG, planted
from tests.integration.http_face import http_server, request
from tests.integration.serving import train

pytestmark = pytest.mark.integration

# One documented request body per operation (the names are the document's).
EXAMPLES: dict[str, dict[str, Any]] = {
    "Recommend": {"customerId": "a-test", "limit": 3, "channel": "", "context": {"tier": "gold"},
                  "explain": True, "excludeOfferIds": ["a1"]},
    "RecommendBatch": {"customerIds": ["a-test", "b2"], "limit": 2},
    "GetModelInfo": {},
    "RecordFeedback": {"events": [{"eventId": "oa-1", "customerId": "a-test", "offerId": "a5",
                                   "event": "click", "time": "2026-01-31T09:30:00Z"}]},
}


def fits(document: dict[str, Any], schema: dict[str, Any], value: Any) -> None:
    OAS31Validator({**schema, "components": document["components"]}).validate(value)


def test_every_documented_path_answers_as_documented(tmp_path: Path,
                                                     settings: Settings) -> None:
    train(planted(tmp_path), settings.redis_url, settings.key_prefix, FAST_CONFIG)
    with http_server(settings) as running:
        assert running.http is not None
        port = running.http.port
        document = request(port, "/openapi.json").json()
        called = set()
        for path, item in document["paths"].items():
            for verb, operation in item.items():
                name = operation["operationId"]
                if verb == "post":
                    body = EXAMPLES[name]
                    fits(document, operation["requestBody"]["content"]["application/json"]
                         ["schema"], body)
                    reply = request(port, path, body)
                else:
                    reply = request(port, path, method=verb.upper())
                assert str(reply.status) in operation["responses"], (name, reply.body)
                for _ in range(50):  # the watcher loads the model within a few polls
                    if reply.status == 200:
                        break
                    reply = request(port, path, EXAMPLES.get(name), method=verb.upper())
                assert reply.status == 200, (name, reply.body)
                schema = operation["responses"]["200"]["content"]["application/json"]["schema"]
                fits(document, schema, reply.json())
                called.add(name)
        assert called == set(EXAMPLES) | {"Healthz", "Livez"}
