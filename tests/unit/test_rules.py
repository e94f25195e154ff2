"""Customer rules: parsing, compile-time checks and evaluation against known answers."""

from __future__ import annotations

import math

import pytest

from recsvc.decisioning.rules import (
    MISSING_CODE,
    AttributeSchema,
    RuleError,
    check_rule,
    compile_rule,
    names,
    parse,
)

SCHEMA = AttributeSchema(("clv", "churn_risk", "plan"), ("number", "number", "category"),
                         {"plan": ["basic", "premium"]})
PREMIUM, BASIC = 1, 0


def run(rule: str, clv: float = 100.0, churn: float = 0.7, plan: int = PREMIUM,
        context: dict[str, str] | None = None) -> bool:
    codes = [0, 0, plan]
    return compile_rule(rule, SCHEMA)([clv, churn, math.nan], codes, context or {})


@pytest.mark.parametrize(("rule", "expected"), [
    ("churn_risk >= 0.6 and plan == 'premium'", True),
    ("churn_risk >= 0.8 and plan == 'premium'", False),
    ("churn_risk >= 0.8 or plan == \"premium\"", True),
    ("not (clv > 50)", False),
    ("!(clv > 500) && plan != 'basic'", True),
    ("plan in ['basic', 'gold']", False),
    ("plan not in ['basic', 'gold']", True),
    ("clv in [100, 200]", True),
    ("0.6 <= churn_risk", True),
    ("plan == 'unknown_value'", False),
    ("(clv > 10 and churn_risk < 0.5) or clv == 100", True),
    ("-5 < clv", True),
])
def test_rules_evaluate_to_their_known_answers(rule: str, expected: bool) -> None:
    assert run(rule) is expected


def test_a_missing_number_makes_every_comparison_false_and_not_inverts_it() -> None:
    for rule in ("churn_risk >= 0.6", "churn_risk < 0.6", "churn_risk == 0.5",
                 "churn_risk != 0.5", "churn_risk in [0.5]", "churn_risk not in [0.5]"):
        assert run(rule, churn=math.nan) is False, rule
    assert run("not (churn_risk >= 0.6)", churn=math.nan) is True


def test_a_missing_category_matches_neither_equal_nor_unequal() -> None:
    assert run("plan == 'premium'", plan=MISSING_CODE) is False
    assert run("plan != 'premium'", plan=MISSING_CODE) is False


def test_context_keys_are_text_and_read_as_numbers_against_numbers() -> None:
    assert run("context.intent == 'cancel'", context={"intent": "cancel"}) is True
    assert run("context.intent == 'cancel'", context={}) is False
    assert run("context.intent != 'cancel'", context={}) is False
    assert run("context.tenure >= 12", context={"tenure": "13"}) is True
    assert run("context.tenure >= 12", context={"tenure": "many"}) is False
    assert run("context.tenure in [1, 2]", context={"tenure": "2"}) is True


@pytest.mark.parametrize(("rule", "message"), [
    ("plann == 'premium'", "unknown attribute 'plann'"),
    ("churn_risk >=", "unexpected end of rule"),
    ("churn_risk >= 0.6 and", "unexpected end of rule"),
    ("churn_risk 0.6", "expected a comparison"),
    ("churn_risk >= 'high'", "is a number"),
    ("plan > 'basic'", "only ==, != and in apply"),
    ("plan == 3", "is a category"),
    ("clv > churn_risk", "one attribute and one literal"),
    ("clv > 1 )", "unexpected ')'"),
    ("", "empty rule"),
    ("clv $ 3", "unexpected character '$'"),
    ("customer.clv > 3", "unknown namespace"),
    ("context.intent > 'a'", "only ==, != and in apply"),
])
def test_bad_rules_get_clear_errors(rule: str, message: str) -> None:
    with pytest.raises(RuleError, match=message.replace("(", r"\(").replace(")", r"\)")
                       .replace("$", r"\$")):
        compile_rule(rule, SCHEMA)


def test_names_lists_attributes_and_context_keys_separately() -> None:
    assert names(parse("clv > 1 and (context.intent == 'x' or plan == 'basic')")) == (
        {"clv", "plan"}, {"intent"})


def test_check_rule_validates_against_kinds_before_value_tables_exist() -> None:
    assert check_rule("plan == 'gold' and clv > 3", {"clv": "number", "plan": "category"}) == {
        "plan", "clv"}
    with pytest.raises(RuleError, match="unknown attribute 'region'"):
        check_rule("region == 'north'", {"clv": "number"})
