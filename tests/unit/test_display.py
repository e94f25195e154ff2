"""Offer display fields: one set of checks for the offers table and live changes; what the
catalogue serves; versions published before the fields exist read as having none."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recsvc.core.display import DISPLAY_FIELDS, display_of, problem
from recsvc.core.model import Catalogue
from recsvc.decisioning.live import merged_offers, validate_override
from training.inputs import data


@pytest.mark.parametrize("url", [
    "https://cdn.example.com/offers/a.png", "http://img.example.com:8080/x.jpg?s=64",
    "HTTPS://EXAMPLE.COM/A.PNG", "https://[2001:db8::1]/a.png", ""])
def test_http_and_https_image_urls_with_a_host_are_accepted(url: str) -> None:
    assert problem("image_url", url) is None


@pytest.mark.parametrize("url", [
    "ftp://example.com/a.png", "javascript:alert(1)", "data:image/png;base64,AAAA",
    "/static/a.png", "example.com/a.png", "https:///a.png", "https://exa mple.com/a.png",
    "https://example.com:99999/a.png", "https://example.com/" + "a" * 2100])
def test_other_image_urls_are_refused_with_a_reason(url: str) -> None:
    reason = problem("image_url", url)
    assert reason is not None and ("http" in reason or "at most" in reason), reason


def test_labels_are_one_short_line_and_descriptions_may_span_lines() -> None:
    assert problem("accept_label", "Apply the discount") is None
    assert problem("accept_label", "x" * 41) == "must be at most 40 characters, got 41"
    assert problem("decline_label", "No\nthanks") == \
        "must be one line without control characters"
    assert problem("description", "Two months free.\nThen 10% off for a year.") is None
    assert problem("description", "bell\x07") == "must not hold control characters"
    assert problem("description", "x" * 1001) == "must be at most 1000 characters, got 1001"
    assert problem("accept_label", 42) == "must be text"
    with pytest.raises(KeyError):
        problem("colour", "red")


def test_the_catalogue_serves_only_valid_non_empty_display_fields() -> None:
    offers = [
        {"offer_id": "o1", "description": "Two months free", "image_url": "https://x.test/a.png",
         "accept_label": "Apply", "decline_label": "Not for me"},
        {"offer_id": "o2", "description": "", "image_url": "javascript:alert(1)",
         "accept_label": "Yes"},
        {"offer_id": "o3", "title": "Published before display fields existed"},
    ]
    catalogue = Catalogue.from_json(offers)
    assert catalogue.display == [
        {"description": "Two months free", "image_url": "https://x.test/a.png",
         "accept_label": "Apply", "decline_label": "Not for me"},
        {"accept_label": "Yes"},
        {},
    ]
    assert display_of({"offer_id": "o4", "accept_label": None}) == {}


def test_a_live_change_sets_display_fields_of_a_published_offer() -> None:
    clean = validate_override("o1", {"description": "Now 3 months", "accept_label": ""}, True)
    assert clean == {"description": "Now 3 months", "accept_label": ""}
    base = [{"offer_id": "o1", "description": "Two months", "accept_label": "Apply",
             "decline_label": "No"}]
    offers, _ = merged_offers(base, {"o1": clean})
    assert Catalogue.from_json(offers).display == [
        {"description": "Now 3 months", "decline_label": "No"}]  # "" removes the label


@pytest.mark.parametrize(("field", "value", "message"), [
    ("image_url", "ftp://x.test/a.png", "offer 'o1': image_url 'ftp://x.test/a.png' must be"),
    ("accept_label", "y" * 50, "offer 'o1': accept_label 'yyyy"),
    ("decline_label", 7, "offer 'o1': decline_label 7 must be text"),
])
def test_a_bad_live_display_value_is_refused_naming_the_offer_and_field(
        field: str, value: object, message: str) -> None:
    with pytest.raises(ValueError, match="^" + message.replace("?", r"\?")):
        validate_override("o1", {field: value}, True)


def test_a_new_live_offer_may_carry_display_fields() -> None:
    clean = validate_override("n1", {"new": True, "title": "New", "image_url":
                                     "https://x.test/n.png"}, False)
    offers, is_new = merged_offers([], {"n1": clean})
    assert is_new == [True]
    assert Catalogue.from_json(offers).display == [{"image_url": "https://x.test/n.png"}]


OFFERS = """offer_id,segments,title,description,image_url,accept_label,decline_label
o1,*,One,Two months free,https://cdn.example.com/o1.png,Apply the discount,Not interested
o2,*,Two,,ftp://cdn.example.com/o2.png,Yes,
o3,*,Three,"Line one
line two",https://cdn.example.com/o3.png,OK,This label is much too long for a button really
o4,*,Four,,,,
"""


def test_display_columns_flow_from_the_offers_table_and_bad_values_are_located(
        tmp_path: Path) -> None:
    """An invalid value is read as missing, counted under bad_<column> with its row, its CSV line
    and a reason; the offer stays."""
    (tmp_path / "c.csv").write_text("customer_id,segment\nc1,main\n")
    (tmp_path / "o.csv").write_text(OFFERS)
    (tmp_path / "i.csv").write_text("customer_id,offer_id,event,ts\nc1,o1,accept,1700000000\n")
    ds = data.load(str(tmp_path / "c.csv"), str(tmp_path / "o.csv"), str(tmp_path / "i.csv"),
                   weight_cap=100)
    assert ds.offer_ids == ["o1", "o2", "o3", "o4"]
    o1, o2, o3, o4 = ds.offers
    assert {k: o1[k] for k in DISPLAY_FIELDS} == {
        "description": "Two months free", "image_url": "https://cdn.example.com/o1.png",
        "accept_label": "Apply the discount", "decline_label": "Not interested"}
    assert not any(k in o2 for k in ("image_url", "description", "decline_label"))
    assert o2["accept_label"] == "Yes"
    assert o3["description"] == "Line one\nline two" and "decline_label" not in o3
    assert not any(k in o4 for k in DISPLAY_FIELDS)
    by_kind = {e["kind"]: e for e in ds.invalid_values.as_list()}
    assert set(by_kind) == {"bad_image_url", "bad_decline_label"}
    assert by_kind["bad_image_url"]["rows"] == [2] and by_kind["bad_image_url"]["lines"] == [3]
    assert by_kind["bad_image_url"]["seen"] == [
        "row 2, line 3: image_url 'ftp://cdn.example.com/o2.png' must be an http:// or "
        "https:// URL with a host (e.g. https://cdn.example.com/a.png)"]
    assert by_kind["bad_decline_label"]["rows"] == [3]
    assert by_kind["bad_decline_label"]["seen"][0].endswith(
        "must be at most 40 characters, got 47")
    assert ds.bad.total == 0


def test_a_parquet_offers_table_reports_rows_without_lines(tmp_path: Path) -> None:
    pq.write_table(pa.table({"offer_id": ["o1", "o2"], "segments": ["*", "*"],
                             "image_url": ["https://x.test/1.png", "file:///etc/passwd"]}),
                   tmp_path / "o.parquet")
    (tmp_path / "c.csv").write_text("customer_id,segment\nc1,main\n")
    (tmp_path / "i.csv").write_text("customer_id,offer_id,event,ts\nc1,o1,accept,1700000000\n")
    ds = data.load(str(tmp_path / "c.csv"), str(tmp_path / "o.parquet"),
                   str(tmp_path / "i.csv"), weight_cap=100)
    assert [o.get("image_url") for o in ds.offers] == ["https://x.test/1.png", None]
    (entry,) = ds.invalid_values.as_list()
    assert entry["rows"] == [2] and "lines" not in entry
    assert entry["seen"][0].startswith("row 2: image_url 'file:///etc/passwd' must be")
