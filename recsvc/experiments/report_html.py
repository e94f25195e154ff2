"""The scorecard as a self-contained HTML page a marketing lead would rather look at than read:
the headline per arm, uplift over control with 95% intervals, segments, offers, model versions,
off-policy estimates, and how every number was made. Plots are inline SVG drawn by matplotlib:
no script, no network, one file to mail around.
"""

from __future__ import annotations

import html
import io
import math
from typing import Any

METRICS = (("acceptance_rate", "Acceptance (of offers shown)", True),
           ("retention_rate", "Retention (renewed / with an outcome)", True),
           ("nps", "NPS", False),
           ("net_value_per_customer", "Value net of offer cost, per customer", False))
UPLIFTS = (("retention_rate", "Retention, points", True),
           ("customers_accepting", "Customers accepting, points", True),
           ("net_value_per_customer", "Net value per customer", False),
           ("nps", "NPS points", False))

_STYLE = """
:root { --ink: #1d2733; --muted: #5b6775; --line: #d8dee6; --accent: #2364aa; }
body { font: 15px/1.45 system-ui, sans-serif; color: var(--ink); margin: 2rem auto;
       max-width: 1100px; padding: 0 1rem; }
h1 { font-size: 1.6rem; margin-bottom: .2rem; } h2 { margin-top: 2.2rem; }
.sub { color: var(--muted); } .cards { display: flex; flex-wrap: wrap; gap: 1rem; }
.card { border: 1px solid var(--line); border-radius: 8px; padding: .8rem 1rem; min-width: 12rem; }
.card b { display: block; font-size: 1.5rem; } .good { color: #1a7f37; } .bad { color: #b42318; }
table { border-collapse: collapse; width: 100%; margin: .6rem 0; font-size: 14px; }
th, td { border-bottom: 1px solid var(--line); padding: .35rem .5rem; text-align: right; }
th:first-child, td:first-child { text-align: left; } figure { margin: 1rem 0; }
figure svg { max-width: 100%; height: auto; } .note { color: var(--muted); font-size: 13px; }
"""


def _fmt(estimate: dict[str, Any] | None, percent: bool) -> str:
    if not estimate or estimate.get("value") is None or _nan(estimate["value"]):
        return "–"
    scale, unit = (100.0, "%") if percent else (1.0, "")
    value = estimate["value"] * scale
    low, high = estimate.get("low"), estimate.get("high")
    if low is None or high is None or _nan(low):
        return f"{value:.1f}{unit}"
    return f"{value:.1f}{unit} <span class=note>[{low * scale:.1f}, {high * scale:.1f}]</span>"


def _nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def _svg(figure: Any) -> str:
    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(figure)
    text = buffer.getvalue()
    return text[text.index("<svg"):]


def _arm_chart(card: dict[str, Any]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arms = list(card["arms"])
    figure, axes = plt.subplots(1, len(METRICS), figsize=(12, 3.2))
    for ax, (key, label, percent) in zip(axes, METRICS, strict=True):
        scale = 100.0 if percent else 1.0
        values: list[float] = []
        errors: list[list[float]] = [[], []]
        for arm in arms:
            estimate = card["arms"][arm][key]
            value = estimate["value"] if not _nan(estimate["value"]) else 0.0
            low = estimate["low"] if not _nan(estimate["low"]) else value
            high = estimate["high"] if not _nan(estimate["high"]) else value
            values.append(value * scale)
            errors[0].append(max(value - low, 0) * scale)
            errors[1].append(max(high - value, 0) * scale)
        ax.bar(arms, values, yerr=errors, capsize=4,
               color=["#9aa5b1" if a == "control" else "#2364aa" for a in arms])
        ax.set_title(label, fontsize=10)
        ax.tick_params(labelsize=9)
    figure.tight_layout()
    return _svg(figure)


def _uplift_chart(card: dict[str, Any]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows: list[tuple[str, float, float, float]] = []
    for arm, uplift in card["uplift"].items():
        for key, label, percent in UPLIFTS:
            estimate = uplift[key]
            if _nan(estimate["value"]):
                continue
            scale = 100.0 if percent else 1.0
            rows.append((f"{arm}: {label}", estimate["value"] * scale,
                         estimate["low"] * scale, estimate["high"] * scale))
    figure, ax = plt.subplots(figsize=(9, 0.5 + 0.45 * max(len(rows), 1)))
    for y, (_label, value, low, high) in enumerate(rows):
        ax.plot([low, high], [y, y], color="#2364aa", linewidth=2)
        ax.plot([value], [y], "o", color="#2364aa")
    ax.axvline(0, color="#b42318", linewidth=1, linestyle="--")
    ax.set_yticks(range(len(rows)), [r[0] for r in rows], fontsize=9)
    ax.invert_yaxis()
    ax.set_title("Uplift over control (95% intervals)", fontsize=10)
    figure.tight_layout()
    return _svg(figure)


def _offer_chart(card: dict[str, Any], top: int = 15) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    offers = sorted(card["offers"].items(), key=lambda kv: -kv[1]["offers_shown"])[:top]
    figure, ax = plt.subplots(figsize=(9, 0.5 + 0.35 * max(len(offers), 1)))
    names = [name for name, _ in offers]
    rates = [100 * (o["acceptance_rate"]["value"] if not _nan(o["acceptance_rate"]["value"])
                    else 0.0) for _, o in offers]
    ax.barh(names, rates, color="#2364aa")
    ax.invert_yaxis()
    ax.set_xlabel("acceptance of offers shown, %", fontsize=9)
    ax.set_title(f"The {len(offers)} most shown offers", fontsize=10)
    figure.tight_layout()
    return _svg(figure)


def _table(headers: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _group_rows(groups: dict[str, Any]) -> list[list[str]]:
    return [[html.escape(name), str(g["customers"]), str(g["offers_shown"]),
             _fmt(g["acceptance_rate"], True), _fmt(g["redemption_rate"], True),
             _fmt(g["retention_rate"], True), _fmt(g["nps"], False),
             _fmt(g["net_value_per_customer"], False)] for name, g in groups.items()]


GROUP_HEADERS = ["", "customers", "offers shown", "acceptance", "redemption", "retention", "NPS",
                 "net value / customer"]


VERSUS_ROWS = (("retention_rate", "retention rate (points)", True),
               ("retention_relative", "retention, relative lift", True),
               ("customers_accepting", "customers accepting an offer (points)", True),
               ("net_value_per_customer", "net value per customer", False),
               ("nps", "NPS", False))


def render(card: dict[str, Any], title: str = "Retention offers: what they achieved") -> str:
    """The whole page for a scorecard from ``scorecard.scorecard``."""
    cards = []
    for arm, uplift in card["uplift"].items():
        retention = uplift["retention_rate"]
        if not _nan(retention["value"]):
            sure = retention["low"] > 0 or retention["high"] < 0
            tone = ("good" if retention["value"] > 0 else "bad") if sure else ""
            cards.append(f"<div class=card>Retention uplift, {html.escape(arm)} vs control"
                         f"<b class='{tone}'>{100 * retention['value']:+.1f} pts</b>"
                         f"<span class=note>95% interval [{100 * retention['low']:.1f}, "
                         f"{100 * retention['high']:.1f}]</span></div>")
    overall = card["overall"]
    cards.append(f"<div class=card>Offers shown<b>{overall['offers_shown']:,}</b>"
                 f"<span class=note>{card['decisions']:,} decisions, {card['customers']:,} "
                 "customers</span></div>")
    cards.append(f"<div class=card>Acceptance<b>{_fmt(overall['acceptance_rate'], True)}</b></div>")
    segment_rows = []
    for segment, entry in card["segments"].items():
        for arm, metrics in entry.items():
            if arm != "uplift":
                segment_rows.append([f"{html.escape(segment)} / {html.escape(arm)}",
                                     *_group_rows({arm: metrics})[0][1:]])
    offer_rows = [[html.escape(name), str(o["offers_shown"]), _fmt(o["acceptance_rate"], True),
                   _fmt(o["redemption_rate"], True), f"{o['net_value_total']:,.0f}"]
                  for name, o in sorted(card["offers"].items(),
                                        key=lambda kv: -kv[1]["offers_shown"])]
    version_rows = [[html.escape(v), str(x["decisions"]), str(x["offers_shown"]),
                     _fmt(x["acceptance_rate"], True)] for v, x in card["versions"].items()]
    ope_rows = [[html.escape(v), str(x["decisions"]), _fmt(x["logging_policy_acceptance"], True),
                 _fmt(x["ips"], True), _fmt(x["snips"], True)]
                for v, x in card["off_policy"].items()]
    sections = [
        f"<h1>{html.escape(title)}</h1><p class=sub>{card['decisions']:,} decisions joined with "
        f"feedback within {card['attribution']['window_days']:g} days.</p>",
        f"<div class=cards>{''.join(cards)}</div>",
        "<h2>By arm</h2>", f"<figure id=plot-arms>{_arm_chart(card)}</figure>",
        _table(GROUP_HEADERS, _group_rows(card["arms"])),
    ]
    if card["uplift"]:
        sections += ["<h2>Uplift over control</h2>",
                     f"<figure id=plot-uplift>{_uplift_chart(card)}</figure>"]
    sections += ["<h2>By segment</h2>", _table(GROUP_HEADERS, segment_rows),
                 "<h2>By offer</h2>", f"<figure id=plot-offers>{_offer_chart(card)}</figure>",
                 _table(["offer", "shown", "acceptance", "redemption", "net value"], offer_rows),
                 "<h2>By model version</h2>",
                 _table(["version", "decisions", "offers shown", "acceptance"], version_rows)]
    versus = card.get("challenger_vs_champion") or {}
    if versus:
        sections += ["<h2>Challenger vs champion</h2>",
                     _table(["difference (challenger - champion)", "estimate [95% interval]"],
                            [[label, _fmt(versus[key], percent)]
                             for key, label, percent in VERSUS_ROWS]),
                     "<p class=note>Customers routed to the challenger version by the salted "
                     "hash against the champion's (arm treatment); control excluded.</p>"]
    if ope_rows:
        sections += ["<h2>Candidate versions, evaluated on logged decisions</h2>",
                     _table(["candidate", "decisions", "logged acceptance", "IPS", "SNIPS"],
                            ope_rows),
                     "<p class=note>Off-policy estimates: acceptance per shown offer had the "
                     "candidate decided; unbiased only where the serving policy explored.</p>"]
    sections += ["<h2>How these numbers are made</h2>",
                 f"<p class=note>{html.escape(card['attribution']['method'])}</p>",
                 "<p class=note>Intervals are 95%: Wilson for rates; differences with Wald/Welch"
                 " standard errors; relative lift by the delta method; NPS as the mean of +1/0/-1"
                 " per answer.</p>"]
    return (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>"
            f"{html.escape(title)}</title><style>{_STYLE}</style></head><body><main>"
            + "".join(sections) + "</main></body></html>")
