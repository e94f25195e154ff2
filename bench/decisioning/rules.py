"""Per-call cost of offer rules: our compiled closures, and two CEL implementations for scale.

    .venv/bin/python -m bench.decisioning.rules                 # ours only (recsvc needs no CEL)
    PYTHONPATH=. OTHER_VENV/bin/python -m bench.decisioning.rules   # with cel-python and/or
                                                        # common-expression-language installed

Each rule kind is evaluated on one customer's attributes, as serving does once per distinct rule
per Recommend; the CEL programs are compiled once too, and get the activation dict a CEL caller
would have to build per call (its cost is included: serving would pay it).
"""

from __future__ import annotations

import math
import timeit
from typing import Any

from recsvc.decisioning.rules import AttributeSchema, compile_rule

SCHEMA = AttributeSchema(("clv", "churn_risk", "plan", "region"),
                         ("number", "number", "category", "category"),
                         {"plan": ["basic", "premium"], "region": ["east", "north", "west"]})
NUMBERS = [1200.0, 0.7, math.nan, math.nan]
CODES = [0, 0, 1, 1]
CONTEXT = {"intent": "cancel", "tenure": "14"}
ACTIVATION = {"clv": 1200.0, "churn_risk": 0.7, "plan": "premium", "region": "north",
              "context": CONTEXT}

# (kind, our rule, the same in CEL)
RULES = [
    ("number compare", "churn_risk >= 0.6", "churn_risk >= 0.6"),
    ("category equality", "plan == 'premium'", "plan == 'premium'"),
    ("category in list", "region in ['north', 'east']", "region in ['north', 'east']"),
    ("context text", "context.intent == 'cancel'", "context.intent == 'cancel'"),
    ("context number", "context.tenure >= 12", "double(context.tenure) >= 12.0"),
    ("and of two", "churn_risk >= 0.6 and plan == 'premium'",
     "churn_risk >= 0.6 && plan == 'premium'"),
    ("four terms", "(churn_risk >= 0.6 and plan == 'premium') or (clv > 1000 and "
     "not (region == 'west'))",
     "(churn_risk >= 0.6 && plan == 'premium') || (clv > 1000.0 && !(region == 'west'))"),
]


def per_call_us(fn: Any, number: int) -> float:
    return min(timeit.repeat(fn, number=number, repeat=5)) / number * 1e6


def main() -> None:
    print(f"{'rule kind':<20} {'ours µs':>8} {'cel-python µs':>14} {'cel (Rust) µs':>14}")
    for kind, ours, cel_text in RULES:
        rule = compile_rule(ours, SCHEMA)
        mine = per_call_us(lambda r=rule: r(NUMBERS, CODES, CONTEXT), 200_000)
        celpy_us = rust_us = math.nan
        try:
            import celpy  # type: ignore[import-not-found]

            env = celpy.Environment()
            program = env.program(env.compile(cel_text))
            assert program.evaluate(celpy.json_to_cel(ACTIVATION))
            celpy_us = per_call_us(
                lambda p=program: p.evaluate(celpy.json_to_cel(ACTIVATION)), 2_000)
        except ImportError:
            pass
        try:
            import cel  # type: ignore[import-not-found]

            compiled = cel.compile(cel_text)
            assert compiled.execute(dict(ACTIVATION))
            rust_us = per_call_us(lambda c=compiled: c.execute(dict(ACTIVATION)), 50_000)
        except ImportError:
            pass
        print(f"{kind:<20} {mine:>8.2f} {celpy_us:>14.1f} {rust_us:>14.2f}")


if __name__ == "__main__":
    main()
