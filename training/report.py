"""The readable summary of a training run (the JSON report holds the same and more)."""

from __future__ import annotations

from typing import Any

from training.calibrate import reliability_lines


def _fmt(metrics: dict[str, float] | None) -> str:
    if not metrics:
        return "-"
    line = (f"p@10 {metrics['precision_at_10']:.3f} ndcg@10 {metrics['ndcg_at_10']:.3f} "
            f"cov {metrics['coverage']:.2f}")
    if "debiased_precision_at_10" in metrics:  # naive | de-biased, side by side
        line += (f" | de-biased p@10 {metrics['debiased_precision_at_10']:.3f} ndcg@10 "
                 f"{metrics['debiased_ndcg_at_10']:.3f}")
    if "exploration_precision_at_10" in metrics:  # | the exploration slice (uniform exposure)
        line += (f" | exploration p@10 {metrics['exploration_precision_at_10']:.3f} ndcg@10 "
                 f"{metrics['exploration_ndcg_at_10']:.3f} "
                 f"({int(metrics['exploration_customers']):,} customers)")
    return line


def _evaluation_line(evaluation: dict[str, Any] | None) -> list[str]:
    """Which metric chose, and where the de-biased metric's propensities came from."""
    if not evaluation:
        return []
    held = evaluation["held_out_pairs"]
    line = (f"  chosen on {evaluation['selected_on']} (validation); test propensities: logged "
            f"{evaluation['logged_propensity_pairs']:,} of {held:,} held-out pairs, estimated "
            f"{evaluation['estimated_propensity_pairs']:,}")
    if evaluation.get("exploration_customers"):
        line += (f"; exploration slice {evaluation['exploration_customers']:,} customers, "
                 f"{evaluation['exploration_pairs']:,} held-out pairs (reported, not selected "
                 "on)")
    return [line]


def _entry_lines(entries: list[dict[str, Any]]) -> list[str]:
    lines = []
    for entry in entries:
        where = "lines" if "lines" in entry else "rows"
        shown = ", ".join(map(str, entry[where][:5]))
        more = " ..." if entry["count"] > 5 else ""
        seen = entry.get("seen")
        if isinstance(seen, dict):
            more += "; seen: " + ", ".join(f"{v!r} x{n:,}" for v, n in list(seen.items())[:5])
        elif seen:
            more += f"; e.g. {seen[0]!r}"
        lines.append(f"  {entry['file']}: {entry['kind']} x{entry['count']:,} "
                     f"({where} {shown}{more})")
    return lines


def _check_lines(checks: dict[str, Any] | None) -> list[str]:
    """The data checks side by side: active version's data | this run's | verdict."""
    if not checks:
        return []
    verdict = "passed" if checks["passed"] else "FORCED" if checks["forced"] else "REFUSED"
    lines = [f"data checks against {checks['against'] or 'absolute minimums'}: {verdict}"]
    for check in checks["checks"]:
        lines.append(f"  {'ok  ' if check['passed'] else 'FAIL'} {check['name']}: "
                     f"{check['message']}")
    return lines


def summary_lines(report: dict[str, Any]) -> list[str]:
    lines = [f"training run: {report.get('status', '?')}"]
    rows = report.get("rows_read")
    if rows:
        lines.append("rows read: " + ", ".join(f"{k} {v:,}" for k, v in rows.items()))
    for warning in report.get("warnings", []):
        lines.append(f"WARNING: {warning}")
    for key, title in (("bad_rows", "bad rows skipped"),
                       ("invalid_values", "invalid values read as missing (rows kept)")):
        section = report.get(key, {})
        if section.get("total"):
            lines.append(f"{title}: {section['total']:,}")
            lines.extend(_entry_lines(section["by_file_and_kind"]))
    converted = report.get("ts_converted_to_seconds")
    if converted:
        lines.append("ts converted to seconds: " + ", ".join(
            f"{n:,} rows in {unit}" for unit, n in converted.items()))
    ignored = report.get("ignored", {}).get("offer_not_open_to_customer_segment")
    if ignored:
        lines.append(f"interactions ignored (offer not open to the customer's segment): "
                     f"{ignored:,}")
    lines.extend(_check_lines(report.get("data_checks")))
    joined = report.get("decision_log")
    if joined:
        lines.append(f"decision log: {joined['decisions_read']:,} decisions; "
                     f"{joined['interactions_joined']:,} of "
                     f"{joined['interactions_with_decision_id']:,} interactions with a "
                     f"decision_id joined ({joined['interactions_explored']:,} explored)")
    for seg in report.get("segments", []):
        params = seg.get("params") or {}
        chosen = (f"factors {params['factors']} reg {params['regularization']} alpha "
                  f"{params['alpha']} it {params['iterations']} neg "
                  f"{'on' if params['negative_impressions'] else 'off'}") if params else "-"
        lines.append(f"segment {seg['name']}: {seg['customers']:,} customers, {seg['offers']} "
                     f"offers, {seg['interactions']:,} interactions")
        lines.append(f"  strategy {seg['strategy']} (blend weight {seg['blend_weight']}); "
                     f"params: {chosen}; evaluated {seg['evaluated_customers']:,} customers")
        lines.append(f"  model    {_fmt(seg.get('model_metrics'))}")
        lines.append(f"  baseline {_fmt(seg.get('baseline_metrics'))}")
        lines.append(f"  served   {_fmt(seg.get('metrics'))}")
        lines.extend(_evaluation_line(seg.get("evaluation")))
        if seg.get("implicit_default_metrics"):
            lines.append(f"  implicit ALS, default settings (never served) "
                         f"{_fmt(seg['implicit_default_metrics'])}")
        lines.extend(reliability_lines(seg["name"], seg.get("calibration_reliability")))
        for note in seg.get("notes", []):
            lines.append(f"  note: {note}")
    if report.get("global_calibration_reliability"):
        lines.extend(reliability_lines("global popularity",
                                       report["global_calibration_reliability"]))
    if report.get("overall_ndcg_at_10") is not None:
        lines.append(f"overall served ndcg@10: {report['overall_ndcg_at_10']:.4f}")
    gate = report.get("quality_gate")
    if gate:
        lines.append(f"quality gate: {'passed' if gate['passed'] else 'REFUSED'}: "
                     f"{gate['message']}")
    if report.get("forced"):
        lines.append("FORCED (--force): " + ", ".join(report["forced"]) + " overridden")
    phases = report.get("phases", {})
    if phases:
        lines.append("phases (s): " + ", ".join(f"{k} {v:.2f}" for k, v in phases.items()))
    if "publish_customers_per_second" in report:
        lines.append(f"publish rate: {report['publish_customers_per_second']:,} customers/s")
    if "peak_rss_mib" in report:
        lines.append(f"peak memory: {report['peak_rss_mib']:,} MiB")
    if report.get("version"):
        state = "active" if report.get("activated") else "published, not activated"
        lines.append(f"version {report['version']} ({state}; previous "
                     f"{report.get('previous_version') or '-'})")
    return lines


def print_summary(report: dict[str, Any]) -> None:
    import sys

    print("\n".join(summary_lines(report)), file=sys.stdout, flush=True)
