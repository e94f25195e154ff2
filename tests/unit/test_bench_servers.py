"""bench/servers: reading h2load's output and log, percentiles, and the report's arithmetic,
against answers worked out by hand."""

from __future__ import annotations

from typing import Any

import pytest

from bench.servers import h2load, report

OUTPUT = """starting benchmark...
finished in 1.00s, 2706.00 req/s, 1.22MB/s
requests: 2706 total, 2707 started, 2706 done, 2706 succeeded, 0 failed, 0 errored, 0 timeout
status codes: 2706 2xx, 0 3xx, 0 4xx, 0 5xx
traffic: 1.22MB (1274755) total, 8.00KB (8193) headers (space savings 96.26%), 1.06MB (1114872) data
                     min         max         mean         sd        +/- sd
time for request:      207us     12.26ms       361us       655us    98.23%
time for connect:       60us        60us        60us         0us   100.00%
"""


def test_h2load_summary_is_read() -> None:
    got = h2load.parse(OUTPUT)
    assert got["requests_per_second"] == 2706.0
    assert (got["done"], got["succeeded"], got["failed"], got["errored"]) == (2706, 2706, 0, 0)
    assert (got["min_ms"], got["max_ms"], got["mean_ms"], got["sd_ms"]) == \
        (0.207, 12.26, 0.361, 0.655)
    assert got["data_bytes"] == 1114872  # 412 bytes per answer: 1114872 / 2706


def test_h2load_output_without_a_summary_names_what_is_missing() -> None:
    with pytest.raises(ValueError, match="req/s"):
        h2load.parse("connect failed")


@pytest.mark.parametrize(("text", "ms"), [("254us", 0.254), ("1.81ms", 1.81), ("2.5s", 2500.0)])
def test_durations_in_milliseconds(text: str, ms: float) -> None:
    assert h2load.milliseconds(text) == pytest.approx(ms)


def test_nearest_rank_percentiles() -> None:
    values = [float(v) for v in range(1, 101)]  # 1..100
    assert h2load.percentile(values, 0.99) == 99.0
    assert h2load.percentile(values, 0.50) == 50.0
    assert h2load.percentile([3.0], 0.99) == 3.0
    assert h2load.percentile([1.0, 2.0, 3.0], 0.99) == 3.0  # ceil(2.97) = 3rd


def test_log_file_keeps_successes_in_ms_and_names_a_bad_line() -> None:
    text = "1700000000000000\t200\t350\n1700000000000400\t-1\t900\n1700000000000800\t200\t250\n"
    assert h2load.log_latencies(text) == [0.25, 0.35]
    with pytest.raises(ValueError, match="line 2"):
        h2load.log_latencies("1\t200\t3\nbroken\n")


def test_grpc_frame_prefix() -> None:
    assert h2load.grpc_frame(b"abc") == b"\x00\x00\x00\x00\x03abc"


def _run(target: str, in_flight: int, number: int, rps: float, cpu: float = 1.0,
         workers: int = 1) -> dict[str, Any]:
    return {"target": target, "in_flight": in_flight, "round": number, "workers": workers,
            "requests_per_second": rps, "server_cpu_seconds": cpu, "wall_seconds": 1.0,
            "requests_per_server_cpu_second": rps / cpu}


def test_recommend_is_compared_with_the_faster_echo_of_its_own_round() -> None:
    runs = [_run("echo_sync", 32, 1, 6000), _run("echo_aio", 32, 1, 4000),
            _run("recommend_aio", 32, 1, 3000),
            _run("echo_sync", 32, 2, 3000), _run("echo_aio", 32, 2, 4000),
            _run("recommend_aio", 32, 2, 2000)]
    assert report.versus_echo(runs, "recommend_aio", 32, "requests_per_second") == [0.5, 0.5]


def test_budget_scaling() -> None:
    one = _run("recommend_aio", 256, 1, 2000, cpu=1.0)
    # Two workers got 1.6 CPU s between them: 3,200 req/s is 2,000 per CPU second.
    two = _run("recommend_aio", 256, 1, 3200, cpu=1.6, workers=2)
    assert report.budget_scaling(one, two) == pytest.approx(2.0)
    # Each worker costing a third more CPU per request than one alone: 1.5x, not 2x.
    dearer = _run("recommend_aio", 256, 1, 2400, cpu=1.6, workers=2)
    assert report.budget_scaling(one, dearer) == pytest.approx(1.5)


def test_span() -> None:
    assert report.span([3845.2, 3712.0]) == "3,712-3,845"
    assert report.span([0.7, 0.7004], "{:.0%}") == "70%"
    assert report.span([]) == "-"


def test_tables_name_skipped_servers_and_flag_short_answers() -> None:
    runs = [dict(_run(t, c, 1, rps), client_cpu_us_per_request=30.0, mean_ms=0.3,
                 p99_ms=0.5, short_answers=(t == "echo_aio" and c == 256))
            for t, rps in (("echo_sync", 6000), ("echo_aio", 4000), ("recommend_aio", 3000))
            for c in (1, 32, 256)]
    results = {"machine": {"date": "d", "commit": "c", "cores": 2, "cpu": "x", "python": "3"},
               "command": "python -m bench.servers", "rounds": 1, "seconds": 1.0,
               "customer_id": "C0000000", "customers": 20000, "runs": runs,
               "targets": {"echo_sync": {"response_frame_bytes": 412}},
               "skipped": {"recommend_sync": "no setting"}}
    text = report.tables(results)
    assert "Recommend, sync: no setting" in text
    assert "short answers: echo_aio at 256" in text
    assert "| 32 in flight | 50% | 50% |" in text
    assert "median 50% (50%) | **missed**" in text
    assert "Below 90% of CPU 0" not in text  # share absent: not judged
    runs[4]["server_cpu_share"] = 0.5  # echo_aio at 32 in flight
    assert "compare per CPU second): echo_aio at 32 (50%)." in report.tables(results)


def _tables_of(targets: tuple[tuple[str, int], ...]) -> str:
    """The report of one round where each target answers its req/s at every concurrency."""
    runs = [dict(_run(t, c, 1, rps), client_cpu_us_per_request=30.0, mean_ms=0.3, p99_ms=0.5)
            for t, rps in targets for c in (1, 32, 256)]
    return report.tables({
        "machine": {"date": "d", "commit": "c", "cores": 2, "cpu": "x", "python": "3"},
        "command": "python -m bench.servers", "rounds": 1, "seconds": 1.0,
        "customer_id": "C0000000", "customers": 20000, "runs": runs, "targets": {}})


def test_the_floor_is_compared_with_the_echo_and_recommend_with_the_floor() -> None:
    text = _tables_of((("echo_sync", 6000), ("echo_aio", 4000), ("echo_sync_redis", 4000),
                       ("recommend_sync", 2000)))
    # the floor beside Recommend against the faster echo, and Recommend against the floor
    assert "| 32 in flight | 67% | 67% | 33% | 33% |" in text
    assert "| req/s over the floor (sync echo + Recommend's Redis read) | Recommend, sync |" in text
    assert "| 32 in flight | 0.50x |" in text
    assert "median 67% of the fastest echo (67%) | - |" in text
    assert "Recommend, sync:  at 32" not in text  # no target row for the floor ratio


def test_the_ceiling_is_a_yardstick_beside_the_floor_without_a_target_of_its_own() -> None:
    text = _tables_of((("echo_sync", 6000), ("echo_sync_redis", 4800),
                       ("ceiling_sync", 4200), ("recommend_sync", 2000)))
    assert "| 32 in flight | 80% | 80% | 70% | 70% | 33% | 33% |" in text
    assert "the ceiling of a native decision (Recommend, sync, decision replayed) at 32 in " \
           "flight, for scale | median 70% of the fastest echo (70%) | - |" in text
    assert "| req/s over the floor (sync echo + Recommend's Redis read) | Recommend, sync, " \
           "decision replayed | Recommend, sync |" in text
    assert "| 32 in flight | 0.88x | 0.42x |" in text
    assert "decision replayed >= 70%" not in text and "decision replayed p99" not in text
    from bench.servers import plan

    found, _ = plan.targets({}, 12, models=("aio", "sync"), ceiling=True)
    assert found[-1].command == ["bench.servers.ceiling"]
    assert found[-1].env["RECSVC_SYNC_THREADS"] == "12"
    found, _ = plan.targets({}, None, models=("aio", "sync"), log_cost=True, ceiling=True)
    assert [(t.key, t.env.get("RECSVC_DECISION_LOG")) for t in found[-2:]] == [
        ("ceiling_sync", None), ("ceiling_sync_without_log", "0")]


def test_recommend_runs_per_server_model_recsvc_knows() -> None:
    from bench.servers import plan

    env = {"RECSVC_PORT": "1"}
    found, skipped = plan.targets(env, 12, models=("aio",))
    assert [t.key for t in found] == ["echo_sync", "echo_aio", "echo_sync_redis",
                                      "recommend_aio"]
    assert found[2].command == ["bench.servers.echo_sync", "--redis-read"]
    assert "RECSVC_SERVER_MODEL" not in found[-1].env  # a setting this recsvc would ignore
    assert "RECSVC_SERVER_MODEL" in skipped["recommend_sync"]
    found, skipped = plan.targets(env, 12, models=("aio", "sync"))
    assert not skipped
    by_key = {t.key: t.env for t in found}
    assert by_key["recommend_aio"]["RECSVC_SERVER_MODEL"] == "aio"
    assert by_key["recommend_sync"]["RECSVC_SERVER_MODEL"] == "sync"
    assert by_key["recommend_sync"]["RECSVC_SYNC_THREADS"] == "12"
    assert "RECSVC_SYNC_THREADS" not in by_key["recommend_aio"]


def test_unpinned_table_compares_each_model_with_the_earlier_commit_round_by_round() -> None:
    from bench.servers import unpinned

    def rows(*rps: int) -> list[dict[str, int]]:
        return [{"requests_per_second": r, "server_cpu_us_per_request": 500} for r in rps]

    out = {"cpus": "0,1", "load_average_before": 0.5, "load_average_after": 0.7, "rounds": 2,
           "seconds": 5, "customers": 1000, "command": "python -m bench.servers.unpinned",
           "runs": {"aio, 32 in flight": rows(1800, 2000), "aio, 256 in flight": rows(1700, 1700),
                    "recommend_before_abc123, 32 in flight": rows(2000, 2000),
                    "recommend_before_abc123, 256 in flight": rows(1700, 2125)}}
    text = unpinned.table(out)
    assert "| aio | 1,700-2,000 req/s |" not in text  # 32 and 256 are columns of their own
    assert "| aio | 1,800-2,000 req/s | 1,700 req/s | 500 µs |" in text
    assert "| req/s over before abc123, same round | 32 in flight | 256 in flight |" in text
    assert "| aio | 0.90x-1.00x | 0.80x-1.00x |" in text
