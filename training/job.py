"""``recsvc train``: read -> build -> per segment fit + evaluate -> quality gate -> publish."""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import numpy.typing as npt

from recsvc.core import calibration, schema
from recsvc.core.config import Settings
from recsvc.core.errors import DataError, QualityGateError, RecsvcError
from recsvc.store.reader import connect
from recsvc.store.registry import Registry, TrainLock
from training import data as data_module
from training.calibrate import base_rate, global_calibration
from training.config import TrainConfig, load_config
from training.matrix import Cells, build_cells, global_popularity
from training.progress import Progress
from training.publish import PublishResult, SegmentArtifact, batched, publish
from training.report import print_summary
from training.tune import SegmentResult, train_segment

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
                     positive_only: bool = False) -> Iterator[list[tuple[str, bytes]]]:
    """(customer id, record) pairs, ``batch_size`` at a time, segment by segment.

    A customer gets a vector only if the final fit saw at least one of their cells; the others
    (no history, or only cells the matrix drops) are served by their segment's popularity.
    """
    all_ids = data.customer_ids.to_pylist()
    for s, (segment_cells, result) in enumerate(zip(cells, results, strict=True)):
        n = segment_cells.shape[0]
        accepted = segment_cells.accepted
        acc_rows = segment_cells.rows[accepted]
        acc_offers = segment_cells.offers[segment_cells.cols[accepted]].astype(schema.UINT32_LE)
        order = np.argsort(acc_rows, kind="stable")
        acc_offers = acc_offers[order]
        bounds = np.searchsorted(acc_rows[order], np.arange(n + 1))
        acc_bytes = acc_offers.tobytes()
        if result.factors is not None and result.params is not None:
            has_history = segment_cells.trained_rows(
                negative_weight if result.params.negative_impressions else None, positive_only)
            users = np.ascontiguousarray(result.factors.users, dtype=schema.FLOAT32_LE)
            dim = users.shape[1]
            vec_bytes = users.tobytes()
        else:
            dim, vec_bytes, has_history = 0, b"", np.zeros(n, dtype=bool)
        ids = [all_ids[i] for i in segment_cells.customers.tolist()]
        yield from batched(_segment_records(s, ids, bounds, has_history, dim, vec_bytes,
                                            acc_bytes), batch_size)


def _segment_records(segment_index: int, ids: list[str], bounds: npt.NDArray[np.int64],
                     has_history: npt.NDArray[np.bool_], dim: int, vec_bytes: bytes,
                     acc_bytes: bytes) -> Iterator[tuple[str, bytes]]:
    """(id, record) of one segment's customers, in bulk from the packed vectors and accepts."""
    lo_list, hi_list = bounds[:-1].tolist(), bounds[1:].tolist()
    history = has_history.tolist()
    width = 4 * dim
    for row, customer_id in enumerate(ids):
        lo, hi = lo_list[row], hi_list[row]
        d = dim if history[row] else 0
        yield customer_id, (schema.pack_record_header(segment_index, d, hi - lo)
                            + (vec_bytes[row * width:(row + 1) * width] if d else b"")
                            + acc_bytes[4 * lo:4 * hi])


def _meta(run: Run, data: data_module.Dataset, results: list[SegmentResult], version: str,
          overall: float | None, previous: str | None) -> dict[str, Any]:
    return {
        "version": version,
        "trained_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "data_fingerprint": data.fingerprint,
        "parameters": {"algorithm": run.config.algorithm, "config": run.config.as_dict()},
        "overall_ndcg_at_10": overall,
        "previous_version": previous,
        "segments": [segment_report(r) for r in results],
        "global_calibration": run.global_calibration,
    }


def segment_report(result: SegmentResult) -> dict[str, Any]:
    return {
        "name": result.name,
        "customers": result.customers,
        "offers": result.offers,
        "interactions": result.interactions,
        "strategy": result.strategy,
        "blend_weight": result.blend_weight,
        "params": None if result.params is None else result.params.as_dict(),
        "factors": 0 if result.factors is None else int(result.factors.items.shape[1]),
        "evaluated_customers": result.evaluated,
        "metrics": result.metrics.get("served"),
        "model_metrics": result.metrics.get("model"),
        "baseline_metrics": result.metrics.get("baseline"),
        "notes": result.notes,
        "implicit_default_metrics": result.metrics.get("implicit_default"),
        "calibration": result.calibration,
        "popularity_calibration": result.popularity_calibration,
        "calibration_reliability": result.reliability,
        "fit_seconds": round(result.fit_seconds, 3),
        "evaluate_seconds": round(result.evaluate_seconds, 3),
    }


def run_training(args: argparse.Namespace, settings: Settings, report: dict[str, Any],
                 say: Callable[[str], None] = print) -> None:
    """The whole run; fills ``report`` as it goes (so a failed run still reports its phases)."""
    config = load_config(args.config, args.seed)
    run = Run(config)
    report["phases"] = run.phases
    client = connect(settings, timeout_ms=30_000)
    keys = schema.Keys(settings.key_prefix)
    registry = Registry(client, keys)
    report["inputs"] = {"customers": args.customers, "offers": args.offers,
                        "interactions": args.interactions}
    with TrainLock(client, keys, config.publish.lock_ttl_seconds) as lock:
        registry.collect_garbage(keep=set())  # leftovers of killed runs
        with run.phase("read"):
            data = data_module.load(args.customers, args.offers, args.interactions,
                                    config.weight_cap)
        report["rows_read"] = data.rows_read
        report["bad_rows"] = {"total": data.bad.total, "by_file_and_kind": data.bad.as_list(),
                              "row_numbers": "1-based data rows; CSV line = row + 1"}
        report["ignored"] = {"offer_not_open_to_customer_segment": data.ineligible}
        if data.bad.total:
            say(f"bad rows: {data.bad.total} "
                + ", ".join(f"{e['kind']}={e['count']}" for e in data.bad.as_list()))
            if args.strict:
                raise DataError(f"--strict: {data.bad.total} bad rows (see the report); "
                                "nothing was published")
        if not len(data.customer_segment):
            raise DataError("no valid customers: nothing to train")
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
        report["segments"] = [segment_report(r) for r in results]
        report["overall_ndcg_at_10"] = overall
        active, _ = registry.pointers()
        gate = _quality_gate(client, keys, active, overall, config, args.force)
        report["quality_gate"] = gate
        if not gate["passed"]:
            raise QualityGateError(gate["message"])
        version = schema.new_version_id()
        with run.phase("publish"):
            offer_index, offer_pop = global_popularity(data, cells)
            run.global_calibration, report["global_calibration_reliability"] = \
                global_calibration(cells, offer_index, offer_pop, config.seed)
            artifacts = [SegmentArtifact(c.offers, r.popularity,
                                         None if r.factors is None else r.factors.items)
                         for c, r in zip(cells, results, strict=True)]
            total = len(data.customer_segment)
            bar = Progress(total, "customers published")
            outcome: PublishResult = publish(
                client, keys, version, _meta(run, data, results, version, overall, active),
                data.offers, artifacts, SegmentArtifact(offer_index, offer_pop, None),
                customer_batches(data, cells, results, config.publish.batch_size,
                                 config.negative_impression_weight,
                                 positive_only=config.positive_cells_only), total,
                lock, activate=not args.no_activate, expected_active=active,
                progress=bar.advance)
            bar.close()
        report["version"] = outcome.version
        report["activated"] = outcome.activated
        report["previous_version"] = outcome.previous
        report["deleted_versions"] = outcome.deleted
        report["publish_customers_per_second"] = round(outcome.customers_per_second)


def _quality_gate(client: Any, keys: schema.Keys, active: str | None, overall: float | None,
                  config: TrainConfig, force: bool) -> dict[str, Any]:
    tolerance = config.publish.quality_tolerance
    if active is None:
        return {"passed": True, "message": "no active version to compare with"}
    raw = client.get(keys.meta(active))
    before = None if raw is None else json.loads(raw).get("overall_ndcg_at_10")
    if before is None or overall is None:
        return {"passed": True, "message": "no comparable overall ndcg@10", "active": active}
    drop = before - overall
    passed = drop <= tolerance or force
    message = (f"overall ndcg@10 {overall:.4f} vs active {active} {before:.4f} "
               f"(drop {drop:+.4f}, tolerance {tolerance})")
    if drop > tolerance:
        message += "; activated anyway (--force)" if force else \
            "; refusing to publish a worse version (use --force to override)"
    return {"passed": passed, "message": message, "active": active, "active_ndcg_at_10": before,
            "new_ndcg_at_10": overall, "tolerance": tolerance, "forced": force and drop > tolerance}


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
    except KeyboardInterrupt:
        error = RecsvcError("interrupted")
    report["status"] = "ok" if code == EXIT_OK else "failed"
    if error is not None:
        report["error"] = f"{type(error).__name__}: {error}"
    report["seconds_total"] = round(time.perf_counter() - started, 3)
    report["peak_rss_mib"] = round(
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    report["phases"] = {k: round(v, 3) for k, v in report.get("phases", {}).items()}
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
