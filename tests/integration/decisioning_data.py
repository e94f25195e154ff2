"""A small data set for decisioning tests: planted tastes, customer attributes, offer rules."""

from __future__ import annotations

from pathlib import Path

from tests.integration.helpers import FAST_CONFIG

# a5 is what a-test (accepted a1..a4) should get first; it needs churn_risk >= 0.6.
# b5 needs the premium plan; a4 exists only for callers saying context.intent == 'cancel';
# t1 is transactional (exempt from caps and do-not-contact).
RULES = {"a5": "churn_risk >= 0.6", "b5": "plan == 'premium'", "b4": "context.intent == 'cancel'"}
DECISIONING = """
[decisioning]
objective = "relevance"
[decisioning.contacts]
count_on = "{count_on}"
max_per_window = 2
window_days = 7
[decisioning.suppression]
declines = 1
days = 30
"""


def write(tmp: Path, rules: dict[str, str] | None = None, count_on: str = "impression",
          extra_offer: str = "") -> Path:
    rules = RULES if rules is None else rules
    customers = ["customer_id,segment,clv,churn_risk,plan"]
    interactions = ["customer_id,offer_id,event,ts"]
    t = 1_700_000_000
    for group, count in (("a", 40), ("b", 80)):
        for i in range(count):
            cid = f"{group}{i}"
            plan = "premium" if i % 2 else "basic"
            customers.append(f"{cid},main,{100 + i},{(i % 10) / 10},{plan}")
            for j in range(1, 6):
                t += 1
                interactions.append(f"{cid},{group}{j},accept,{t}")
    for cid, churn, plan in (("a-test", 0.8, "premium"), ("a-calm", 0.2, "basic"),
                             ("a-nochurn", "", "")):
        customers.append(f"{cid},main,500,{churn},{plan}")
        for j in range(1, 5):
            t += 1
            interactions.append(f"{cid},a{j},accept,{t}")
    offers = ["offer_id,segments,title,value,cost,rule,type"]
    for g in "ab":
        for j in range(1, 6):
            oid = f"{g}{j}"
            offers.append(f'{oid},*,Offer {oid},{10 * j},{j},"{rules.get(oid, "")}",')
    offers.append("t1,*,Bill reminder,0,0,,transactional")
    if extra_offer:
        offers.append(extra_offer)
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "customers.csv").write_text("\n".join(customers) + "\n")
    (tmp / "offers.csv").write_text("\n".join(offers) + "\n")
    (tmp / "interactions.csv").write_text("\n".join(interactions) + "\n")
    (tmp / "config.toml").write_text(FAST_CONFIG + DECISIONING.format(count_on=count_on))
    return tmp
