"""``recsvc train``: read -> build -> per segment fit + evaluate -> quality gate -> publish."""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt
import redis

from recsvc.core import calibration, schema
from recsvc.core.config import Settings
from recsvc.core.errors import DataError, QualityGateError, RecsvcError
from recsvc.core.meta import EVERY_SHOWN_CELL, ModelMeta, SegmentMeta
from recsvc.ops import jobmetrics
from recsvc.store.control.registry import Registry, TrainLock, eviction_risk, redis_problem
from recsvc.store.reads.reader import connect
from training.calibrate import base_rate, global_calibration
from training.config import TrainConfig, load_config
from training.inputs import attributes
from training.inputs import data as data_module
from training.inputs import decisions as decision_log
from training.inputs import events as feedback_events
from training.inputs import profile as profile_module
from training.matrix import Cells, build_cells, global_popularity
from training.progress import Progress
from training.publish import PublishResult, SegmentArtifact, batched, check_finite, publish
from training.report import print_summary
from training.tune import EXPOSURE, SegmentResult, train_segment

log = logging.getLogger(__name__)

EXIT_OK, EXIT_FAILED, EXIT_GATE = 0, 1, 3  # 3: the quality gate refused the version


@dataclass
class Run:
    """The configuration of a run and the time it spent per phase."""

    config: TrainConfig
    phases: dict[str, float] = field(default_factory=dict)
    global_calibration: dict[str, Any] | None = None  # p_accept of global popularity

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        log.info("phase %s ...", name)
        try:
            yield
        finally:
            self.phases[name] = self.phases.get(name, 0.0) + time.perf_counter() - started


def overall_ndcg(results: list[SegmentResult]) -> float | None:
    """Evaluated-customer-weighted ndcg@10 of the served strategies (None: nothing evaluated)."""
    weight = sum(r.evaluated for r in results)
    if not weight:
        return None
    return sum(r.served_ndcg * r.evaluated for r in results) / weight


def customer_batches(data: data_module.Dataset, cells: list[Cells], results: list[SegmentResult],
                     batch_size: int, negative_weight: float = -1.0,
                     positive_only: bool = False,
                     attributes: npt.NDArray[np.uint32] | None = None,
                     ) -> Iterator[list[tuple[str, bytes]]]:
    """(customer id, format-2 record) pairs, ``batch_size`` at a time, segment by segment.

    A customer gets a vector only if the final fit saw at least one of their cells; the others
    (no history, or only cells the matrix drops) are served by their segment's popularity. A
    customer with a vector also carries the confidence row the fit saw (exact fold-in later); in
    a segment of the exposure model, which sees every shown cell, every cell.
    ``attributes`` (customers x K, by dataset customer index) fills the attributes section.
    """
    all_ids = data.customer_ids.to_pylist()
    for s, (segment_cells, result) in enumerate(zip(cells, results, strict=True)):
        n = segment_cells.shape[0]
        accepted = segment_cells.accepted
        acc_bounds, acc_bytes = _rows_packed(
            n, segment_cells.rows[accepted],
            segment_cells.offers[segment_cells.cols[accepted]].astype(schema.UINT32_LE))
        if result.factors is not None and result.params is not None:
            negative = negative_weight if result.params.negative_impressions else None
            values = segment_cells.values(negative)
            if result.params.model == EXPOSURE:  # fit on every shown cell: all are kept
                used = np.ones(len(values), dtype=bool)
                has_history = np.bincount(segment_cells.rows, minlength=n) > 0
            else:
                used = values > 0 if positive_only else values != 0
                has_history = segment_cells.trained_rows(negative, positive_only)
            users = np.ascontiguousarray(result.factors.users, dtype=schema.FLOAT32_LE)
            check_finite(f"segment {s} customer vectors", users)  # before any is written
            dim = users.shape[1]
            vec_bytes = users.tobytes()
            cell_bounds, cell_offer_bytes, cell_conf_bytes = _rows_packed(
                n, segment_cells.rows[used],
                segment_cells.offers[segment_cells.cols[used]].astype(schema.UINT32_LE),
                values[used].astype(schema.FLOAT32_LE))
        else:
            dim, vec_bytes, has_history = 0, b"", np.zeros(n, dtype=bool)
            cell_bounds, cell_offer_bytes, cell_conf_bytes = np.zeros(n + 1, np.int64), b"", b""
        ids = [all_ids[i] for i in segment_cells.customers.tolist()]
        attrs = (b"", 0) if attributes is None or not attributes.shape[1] else (
            np.ascontiguousarray(attributes[segment_cells.customers],
                                 dtype=schema.UINT32_LE).tobytes(), attributes.shape[1])
        yield from batched(_segment_records(
            s, ids, has_history, dim, vec_bytes, (acc_bounds, acc_bytes),
            (cell_bounds, cell_offer_bytes, cell_conf_bytes), attrs), batch_size)


def _rows_packed(n: int, rows: npt.NDArray[np.int32], *columns: npt.NDArray[Any]
                 ) -> tuple[Any, ...]:
    """Bounds of each row's entries (n + 1) and each column's values as bytes, in row order."""
    order = np.argsort(rows, kind="stable")
    bounds = np.searchsorted(rows[order], np.arange(n + 1))
    return (bounds, *(column[order].tobytes() for column in columns))


def _segment_records(segment_index: int, ids: list[str], has_history: npt.NDArray[np.bool_],
                     dim: int, vec_bytes: bytes, accepted: tuple[npt.NDArray[np.int64], bytes],
                     cells: tuple[npt.NDArray[np.int64], bytes, bytes],
                     attributes: tuple[bytes, int]) -> Iterator[tuple[str, bytes]]:
    """(id, record) of one segment's customers, in bulk from packed arrays: the same bytes as
    ``schema.encode_customer_record`` (tests/unit/test_records.py checks it byte for byte)."""
    acc_lo, acc_hi = accepted[0][:-1].tolist(), accepted[0][1:].tolist()
    cell_lo, cell_hi = cells[0][:-1].tolist(), cells[0][1:].tolist()
    acc_bytes, cell_offers, cell_conf = accepted[1], cells[1], cells[2]
    attr_bytes, k = attributes
    history = has_history.tolist()
    width = 4 * dim
    for row, customer_id in enumerate(ids):
        lo, hi = acc_lo[row], acc_hi[row]
        d = dim if history[row] else 0
        c_lo, c_hi = (cell_lo[row], cell_hi[row]) if d else (0, 0)
        yield customer_id, (schema.pack_record_header(segment_index, d, hi - lo, c_hi - c_lo, k)
                            + (vec_bytes[row * width:(row + 1) * width] if d else b"")
                            + acc_bytes[4 * lo:4 * hi]
                            + cell_offers[4 * c_lo:4 * c_hi] + cell_conf[4 * c_lo:4 * c_hi]
                            + attr_bytes[4 * k * row:4 * k * (row + 1)])


def _meta(run: Run, data: data_module.Dataset, results: list[SegmentResult], version: str,
          overall: float | None, previous: str | None,
          checked: dict[str, Any] | None = None) -> ModelMeta:
    """The version's metadata; ``checked`` adds the data profile, the quality and what was
    forced (kept verbatim in the typed metadata's ``extra``)."""
    return ModelMeta(
        version=version,
        trained_at=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        data_fingerprint=data.fingerprint,
        parameters={"algorithm": run.config.algorithm, "config": run.config.as_dict()},
        overall_ndcg_at_10=overall,
        previous_version=previous,
        segments=tuple(segment_meta(r) for r in results),
        extra={**(checked or {}), "global_calibration": run.global_calibration},
    )


def segment_meta(result: SegmentResult) -> SegmentMeta:
    return SegmentMeta(
        name=result.name,
        customers=result.customers,
        offers=result.offers,
        interactions=result.interactions,
        strategy=result.strategy,
        blend_weight=result.blend_weight,
        params=None if result.params is None else {
            **result.params.as_dict(),
            # customer_batches publishes every shown cell for these: the fold-in may solve them
            **({EVERY_SHOWN_CELL: True} if result.params.model == EXPOSURE else {})},
        factors=0 if result.factors is None else int(result.factors.items.shape[1]),
        evaluated_customers=result.evaluated,
        metrics=result.metrics.get("served"),
        model_metrics=result.metrics.get("model"),
        baseline_metrics=result.metrics.get("baseline"),
        notes=result.notes,
        fit_seconds=round(result.fit_seconds, 3),
        evaluate_seconds=round(result.evaluate_seconds, 3),
        # Issue 13: the competitor's metrics and p_accept (recsvc.core.calibration's maps).
        extra={"implicit_default_metrics": result.metrics.get("implicit_default"),
               "calibration": result.calibration,
               "popularity_calibration": result.popularity_calibration,
               "calibration_reliability": result.reliability, "evaluation": result.evaluation},
    )


def run_training(args: argparse.Namespace, settings: Settings, report: dict[str, Any],
                 say: Callable[[str], None] = print) -> None:
    """The whole run; fills ``report`` as it goes (so a failed run still reports its phases)."""
    config = load_config(args.config, args.seed)
    run = Run(config)
    report["phases"] = run.phases
    client = connect(settings, timeout_ms=30_000)
    keys = schema.keys_for(settings)
    registry = Registry(client, keys)
    paths = {"customers": args.customers, "offers": args.offers,
             "interactions": args.interactions}
    report["inputs"] = paths
    forced: list[str] = []  # the checks --force overrode, in the report and the metadata
    risk = eviction_risk(client)
    if risk:
        report.setdefault("warnings", []).append(risk)
        say(f"warning: {risk}")
    with TrainLock(client, keys, config.publish.lock_ttl_seconds) as lock, \
            tempfile.TemporaryDirectory(prefix="recsvc-train-") as workdir:
        registry.collect_garbage(keep=set())  # leftovers of killed runs
        active, _ = registry.pointers()
        active_meta = _read_meta(client, keys, active)
        with run.phase("read"):
            # Logged feedback joins the tables (training/inputs/events.py); its cutoff goes in meta.
            tables = feedback_events.for_training(client, keys, args.customers, args.offers,
                                                  args.interactions, workdir)
            report["feedback"] = tables.report
            data = data_module.load(tables.customers, args.offers, tables.interactions,
                                    config.weight_cap, bool(getattr(args, "decisions", None)))
            if getattr(args, "decisions", None):  # logged propensities, the exploration slice
                report["inputs"] = {**paths, "decisions": args.decisions}
                report["decision_log"] = decision_log.attach(data, args.decisions)
        profile = _check_input(data, paths, active, active_meta, config, args, report, say)
        if report["data_checks"]["forced"]:
            forced.append("data_checks")
        attrs = attributes.build(data)  # offer rules are checked here, before any fit
        with run.phase("build"):
            cells = build_cells(data, config)
            data.drop_interactions()
        results: list[SegmentResult] = []
        progress = Progress(len(cells), "segments")
        for name, segment_cells in zip(data.segment_names, cells, strict=True):
            result = train_segment(name, segment_cells, config, on_step=progress.note)
            run.phases["fit"] = run.phases.get("fit", 0.0) + result.fit_seconds
            run.phases["evaluate"] = run.phases.get("evaluate", 0.0) + result.evaluate_seconds
            if result.competitor_seconds:
                run.phases["competitors"] = (run.phases.get("competitors", 0.0)
                                             + result.competitor_seconds)
            results.append(result)
            progress.advance(1)
        progress.close()
        for result in results:  # a segment without shown cells: the overall acceptance rate
            if result.calibration is None:
                result.calibration = calibration.constant(base_rate(cells))
        overall = overall_ndcg(results)
        report["segments"] = [segment_meta(r).as_dict() for r in results]
        report["overall_ndcg_at_10"] = overall
        measured = quality(results)
        report["quality"] = measured
        gate = _quality_gate(active, active_meta, measured, config, args.force)
        report["quality_gate"] = gate
        if not gate["passed"]:
            raise QualityGateError(gate["message"])
        if gate.get("forced"):
            forced.append("quality_gate")
        report["forced"] = forced
        checked = {"data_profile": profile, "quality": measured, "forced": forced}
        version = schema.new_version_id()
        with run.phase("publish"), _deleted_on_failure(registry, version, report):
            offer_index, offer_pop = global_popularity(data, cells)
            run.global_calibration, report["global_calibration_reliability"] = \
                global_calibration(cells, offer_index, offer_pop, config.seed)
            artifacts = [SegmentArtifact(c.offers, r.popularity,
                                         None if r.factors is None else r.factors.items)
                         for c, r in zip(cells, results, strict=True)]
            total = len(data.customer_segment)
            bar = Progress(total, "customers published")
            meta = _meta(run, data, results, version, overall, active,
                         {**checked, "feedback_cutoff": tables.report["cutoff"]})
            outcome: PublishResult = publish(
                client, keys, version, ModelMeta.from_dict(attributes.extend_meta(
                    meta.as_dict(), attrs, cells, config.decisioning)),
                data.offers, artifacts, SegmentArtifact(offer_index, offer_pop, None),
                customer_batches(data, cells, results, config.publish.batch_size,
                                 config.negative_impression_weight,
                                 positive_only=config.positive_cells_only,
                                 attributes=attrs.matrix), total,
                lock, activate=not args.no_activate, expected_active=active,
                progress=bar.advance)
            bar.close()
        report["version"] = outcome.version
        report["activated"] = outcome.activated
        report["previous_version"] = outcome.previous
        report["deleted_versions"] = outcome.deleted
        report["publish_customers_per_second"] = round(outcome.customers_per_second)
        report["feedback"]["trimmed"] = feedback_events.trim(client, keys)
        if lock.lapses:
            report.setdefault("warnings", []).append(
                f"the training lock lapsed {lock.lapses} time(s) and was taken back (heartbeats "
                "came later than lock_ttl_seconds: an overloaded machine?)")


@contextmanager
def _deleted_on_failure(registry: Registry, version: str,
                        report: dict[str, Any]) -> Iterator[None]:
    """A publish that fails (Redis out of memory, the lock lost, a read-back difference) deletes
    what it wrote at once rather than leaving it to the next run: under memory pressure those
    keys are what the next publish needs. Never the active version: that is untouched."""
    try:
        yield
    except (RecsvcError, redis.RedisError):
        try:
            active, previous = registry.pointers()
            if version not in (active, previous):
                registry.delete(version)
                report["deleted_versions"] = [version]
        except redis.RedisError:
            pass  # the next run's garbage collection deletes it
        raise


def _read_meta(client: Any, keys: schema.Keys, version: str | None) -> dict[str, Any] | None:
    """The metadata of ``version`` (None: no version, or no metadata)."""
    raw = None if version is None else client.get(keys.meta(version))
    # Parsed and validated by the typed metadata; the checks read its plain-dict view.
    return None if raw is None else ModelMeta.from_json(raw).as_dict()


def _check_input(data: data_module.Dataset, paths: dict[str, str], active: str | None,
                 active_meta: dict[str, Any] | None, config: TrainConfig,
                 args: argparse.Namespace, report: dict[str, Any],
                 say: Callable[[str], None]) -> dict[str, Any]:
    """Bad rows, invalid values, and the data profile against the active version's; returns
    the profile. Raises DataError (exit 1) or QualityGateError (exit 3, unless --force)."""
    report["rows_read"] = data.rows_read
    report["bad_rows"] = {"total": data.bad.total, "by_file_and_kind": data.bad.as_list(),
                          "row_numbers": "1-based data rows; CSV line = row + 1"}
    report["invalid_values"] = {"total": data.invalid_values.total,
                                "by_file_and_kind": data.invalid_values.as_list(),
                                "treated_as": "missing; the row is kept"}
    report["ignored"] = {"offer_not_open_to_customer_segment": data.ineligible}
    if data.ts_converted:
        report["ts_converted_to_seconds"] = data.ts_converted
        say("ts: converted to seconds: " + ", ".join(f"{n:,} rows in {unit}"
                                                     for unit, n in data.ts_converted.items()))
    if data.bad.total:
        say(f"bad rows: {data.bad.total} "
            + ", ".join(f"{e['kind']}={e['count']}" for e in data.bad.as_list()))
    if data.invalid_values.total:
        say(f"invalid values read as missing: {data.invalid_values.total} "
            + ", ".join(f"{e['kind']}={e['count']}" for e in data.invalid_values.as_list()))
    if args.strict and data.bad.total + data.invalid_values.total:
        raise DataError(f"--strict: {data.bad.total} bad rows and {data.invalid_values.total} "
                        "invalid values (see the report); nothing was published")
    profile = profile_module.build_profile(data, paths)
    report["data_profile"] = profile
    too_many = profile_module.bad_row_problems(profile, config.checks.max_bad_row_share)
    if too_many:
        raise DataError("too many bad rows: " + "; ".join(too_many)
                        + " (see the report; [checks] max_bad_row_share)")
    if not len(data.customer_segment):
        raise DataError("no valid customers: nothing to train")
    checks = profile_module.check_data(profile, active_meta, config.checks)
    failed = [c for c in checks if not c.passed]
    report["data_checks"] = {"against": active, "passed": not failed,
                             "forced": bool(failed) and args.force,
                             "checks": [c.as_dict() for c in checks]}
    if failed:
        message = "data checks failed: " + "; ".join(c.message for c in failed)
        if not args.force:
            raise QualityGateError(message + " (nothing published; --force overrides)")
        say(f"warning: {message}; going on anyway (--force)")
    return profile


def quality(results: list[SegmentResult]) -> dict[str, Any]:
    """Served and popularity-baseline ndcg@10 over the evaluated customers, and their ratio.

    Both are measured on the same split of the same data, so the lift compares like with like
    across runs whose data differ (new customers, a new month), where raw ndcg does not.
    """
    weight = sum(r.evaluated for r in results)
    served = sum(r.served_ndcg * r.evaluated for r in results)
    baseline = sum(r.metrics.get("baseline", {}).get("ndcg_at_10", 0.0) * r.evaluated
                   for r in results)
    lift = served / baseline if baseline > 0 else None
    return {"evaluated_customers": weight,
            "served_ndcg_at_10": round(served / weight, 6) if weight else None,
            "baseline_ndcg_at_10": round(baseline / weight, 6) if weight else None,
            "lift": None if lift is None else round(lift, 6)}


def _active_quality(meta: dict[str, Any]) -> dict[str, Any] | None:
    """The active version's quality; recomputed from its segments if it predates the field."""
    if "quality" in meta:
        return dict(meta["quality"])
    segments = meta.get("segments", [])
    weight = sum(s.get("evaluated_customers", 0) for s in segments)
    served = sum((s.get("metrics") or {}).get("ndcg_at_10", 0.0) * s.get("evaluated_customers", 0)
                 for s in segments)
    baseline = sum((s.get("baseline_metrics") or {}).get("ndcg_at_10", 0.0)
                   * s.get("evaluated_customers", 0) for s in segments)
    return {"lift": served / baseline} if weight and baseline > 0 else None


def _quality_gate(active: str | None, active_meta: dict[str, Any] | None,
                  measured: dict[str, Any], config: TrainConfig,
                  force: bool) -> dict[str, Any]:
    """Refuse when the lift over popularity falls by more than ``quality_tolerance``."""
    tolerance = config.publish.quality_tolerance
    if active is None or active_meta is None:
        return {"passed": True, "message": "no active version to compare with"}
    before = (_active_quality(active_meta) or {}).get("lift")
    now = measured.get("lift")
    if before is None or now is None:
        return {"passed": True, "active": active,
                "message": "no comparable lift over popularity (nothing evaluated)"}
    drop = before - now
    message = (f"lift over popularity (served / baseline ndcg@10, each on its own data) "
               f"{now:.3f} vs active {active} {before:.3f} (drop {drop:+.3f}, tolerance "
               f"{tolerance})")
    if drop > tolerance:
        message += "; activated anyway (--force)" if force else \
            "; refusing to publish a worse version (use --force to override)"
    return {"passed": drop <= tolerance or force, "message": message, "active": active,
            "active_lift": round(before, 6), "new_lift": now, "tolerance": tolerance,
            "forced": force and drop > tolerance}


def main(args: argparse.Namespace, settings: Settings) -> int:
    started = time.perf_counter()
    code = EXIT_FAILED
    error: RecsvcError | None = None
    report: dict[str, Any] = {}
    try:
        run_training(args, settings, report, say=lambda m: print(m, file=sys.stderr))
        code = EXIT_OK
    except QualityGateError as exc:
        code, error = EXIT_GATE, exc
    except RecsvcError as exc:
        error = exc
    except redis.RedisError as exc:
        error = RecsvcError(redis_problem(exc, settings.redis_url) + "; nothing was published")
    except KeyboardInterrupt:
        error = RecsvcError("interrupted")
    report["status"] = "ok" if code == EXIT_OK else "failed"
    if error is not None:
        report["error"] = f"{type(error).__name__}: {error}"
    if code == EXIT_GATE:
        report["status"] = "refused"
    report["seconds_total"] = round(time.perf_counter() - started, 3)
    report["peak_rss_mib"] = round(
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    report["phases"] = {k: round(v, 3) for k, v in report.get("phases", {}).items()}
    outcome = {EXIT_OK: "ok", EXIT_GATE: "gate_refused"}.get(code, "failed")
    jobmetrics.record(report, outcome, time.time(), getattr(args, "metrics_file", None),
                      settings.pushgateway_url)
    if args.report:
        os.makedirs(os.path.dirname(os.path.abspath(args.report)), exist_ok=True)
        with open(args.report, "w") as handle:
            json.dump(report, handle, indent=2)
    print_summary(report)
    if error is not None:
        print(f"recsvc train: {error}", file=sys.stderr)
        return code
    print(report["version"])
    return EXIT_OK
