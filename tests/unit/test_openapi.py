"""The OpenAPI document is generated from the proto, valid OpenAPI 3.1, and checked in."""

from __future__ import annotations

import json
from pathlib import Path

from openapi_spec_validator import validate

from recsvc.api.handlers import SERVICE
from recsvc.api.http import openapi

ROOT = Path(__file__).resolve().parents[2]


def test_the_document_is_valid_openapi() -> None:
    validate(openapi.document())  # raises on any violation


def test_the_checked_in_copy_is_what_the_generator_writes() -> None:
    """Regenerate with `make openapi` after changing proto/."""
    assert (ROOT / "docs" / "openapi.json").read_bytes() == openapi.render()


def test_every_rpc_has_a_path_and_every_field_its_json_name() -> None:
    document = openapi.document()
    assert set(document["paths"]) == {f"/recsvc.v1.RetentionOfferService/{m.name}"
                                      for m in SERVICE.methods} | {"/healthz", "/livez"}
    request = document["components"]["schemas"]["RecommendRequest"]["properties"]
    assert set(request) == {"customerId", "limit", "channel", "segment", "excludeOfferIds",
                            "context", "explain"}
    assert request["context"] == {"type": "object", "additionalProperties": {"type": "string"}}
    batch = document["paths"]["/recsvc.v1.RetentionOfferService/RecommendBatch"]["post"]
    answer = batch["responses"]["200"]["content"]["application/json"]["schema"]
    assert answer == {"type": "array",
                      "items": {"$ref": "#/components/schemas/RecommendResponse"}}
    event = document["components"]["schemas"]["FeedbackEvent"]["properties"]
    assert event["time"]["format"] == "date-time"
    segment = document["components"]["schemas"]["SegmentInfo"]["properties"]
    assert segment["customers"] == {"type": "string", "format": "int64"}  # proto JSON int64
    json.dumps(document)  # plain JSON all the way down
