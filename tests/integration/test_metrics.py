"""/metrics of a real `recsvc serve --workers 2`, scraped during load: the numbers add up."""

from __future__ import annotations

import glob
import threading
import time
from pathlib import Path

import grpc
import pytest
import redis

from recsvc.core import schema
from recsvc.v1 import offers_pb2 as pb
from recsvc.v1 import offers_pb2_grpc as pb_grpc
from tests.integration import observe
from tests.integration.helpers import FAST_CONFIG, cli, train_args
from training import localredis

pytestmark = pytest.mark.integration

CONFIG = FAST_CONFIG.replace("blend_weights = [0.0, 0.5, 1.0]", "blend_weights = [1.0]")


def test_metrics_of_two_workers_add_up_to_the_calls_made(
        tmp_path: Path, redis_server: localredis.LocalRedis, prefix: str) -> None:
    ids = observe.planted(tmp_path / "data", "M")
    (tmp_path / "config.toml").write_text(CONFIG)
    prom = tmp_path / "textfile" / "recsvc_train.prom"
    trained = cli(train_args(tmp_path / "data", tmp_path / "config.toml", "--metrics-file",
                             str(prom)), redis_server.url, prefix)
    assert trained.returncode == 0, trained.stderr
    assert 'recsvc_train_outcome{outcome="ok"} 1.0' in prom.read_text()
    assert 'recsvc_train_phase_seconds{phase="fit"}' in prom.read_text()
    version = trained.stdout.strip().splitlines()[-1]
    client = redis.Redis.from_url(redis_server.url)
    keys = schema.Keys(prefix)
    for shard, count in ((2, 3), (50, 1)):  # events in the log: 4, the longest shard 3
        for _ in range(count):
            client.xadd(keys.events(shard), {"customer": "c"})
    before = set(glob.glob("/tmp/recsvc-metrics-*"))
    # Generous Redis timeouts: on a busy test machine a 50 ms one can expire, and this test
    # wants exact counts, not failure handling.
    with observe.serve(redis_server.url, prefix, tmp_path / "serve.log", workers=2,
                       extra_env={"RECSVC_REDIS_TIMEOUT_MS": "1000",
                                  "RECSVC_EVENTS_MAX_PER_SHARD": "10"}) as server:
        made = {"known": 0, "unknown": 0, "invalid": 0, "info": 0}
        lock = threading.Lock()
        scrapes: list[float] = []
        stop = threading.Event()

        def load(n: int) -> None:
            # A channel per thread: SO_REUSEPORT spreads connections over both workers.
            with grpc.insecure_channel(f"127.0.0.1:{server.port}",
                                       options=[("grpc.use_local_subchannel_pool", 1)]) as ch:
                stub = pb_grpc.RetentionOfferServiceStub(ch)
                for i in range(60):
                    kind = ("known", "unknown", "invalid", "info")[(i + n) % 4]
                    try:
                        if kind == "known":
                            stub.Recommend(pb.RecommendRequest(customer_id=ids[i]), timeout=10)
                        elif kind == "unknown":
                            stub.Recommend(pb.RecommendRequest(customer_id=f"nobody-{i}"),
                                           timeout=10)
                        elif kind == "invalid":
                            stub.Recommend(pb.RecommendRequest(customer_id="x", limit=1000),
                                           timeout=10)
                        else:
                            stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=10)
                    except grpc.RpcError as exc:
                        assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT and \
                            kind == "invalid", exc
                    with lock:
                        made[kind] += 1

        def scraper() -> None:
            while not stop.is_set():
                samples = observe.scrape(server.metrics_port)
                scrapes.append(observe.total(samples, "recsvc_rpc_total"))
                time.sleep(0.05)

        watcher = threading.Thread(target=scraper)
        watcher.start()
        threads = [threading.Thread(target=load, args=(n,)) for n in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        stop.set()
        watcher.join()
        samples = observe.scrape(server.metrics_port)

        total = observe.total
        assert len(scrapes) >= 2 and scrapes == sorted(scrapes)  # scraped during the load
        assert total(samples, "recsvc_rpc_total", method="Recommend", code="OK") == \
            made["known"] + made["unknown"]
        assert total(samples, "recsvc_rpc_total", method="Recommend",
                     code="INVALID_ARGUMENT") == made["invalid"]
        assert total(samples, "recsvc_rpc_total", method="GetModelInfo", code="OK") == \
            made["info"]
        assert total(samples, "recsvc_rpc_duration_seconds_count", method="Recommend") == \
            made["known"] + made["unknown"] + made["invalid"]
        assert total(samples, "recsvc_answers_total") == made["known"] + made["unknown"]
        assert total(samples, "recsvc_answers_total", strategy="global_popular") == \
            made["unknown"]
        assert total(samples, "recsvc_answers_total", arm="treatment") == \
            made["known"] + made["unknown"]  # no holdout configured: every answer is treatment
        assert total(samples, "recsvc_answers_total", strategy="personalized") == made["known"]
        # One round trip per answered Recommend (invalid ones never reach Redis).
        assert total(samples, "recsvc_redis_duration_seconds_count") == \
            made["known"] + made["unknown"]
        assert total(samples, "recsvc_redis_errors_total") == 0
        assert total(samples, "recsvc_model_info", version=version) == 1
        assert samples[("recsvc_redis_up", ())] == 1
        assert samples[("recsvc_redis_breaker_open", ())] == 0
        trained_at = samples[("recsvc_model_trained_timestamp_seconds", ())]
        assert 0 <= time.time() - trained_at < 3600
        # The streams, read by each worker's watcher every 5 s (off the request path).
        answered = made["known"] + made["unknown"]  # each answer is one decision-log entry
        deadline = time.monotonic() + 15
        while observe.total(samples, "recsvc_stream_length", stream="decisions") != answered:
            assert time.monotonic() < deadline, observe.total(
                samples, "recsvc_stream_length", stream="decisions")
            time.sleep(0.2)
            samples = observe.scrape(server.metrics_port)
        assert samples[("recsvc_stream_length", (("stream", "events"),))] == 4
        assert samples[("recsvc_events_log_fill_ratio", ())] == 0.3  # 3 of 10 in shard 2
        # Both workers answered: each wrote its own files.
        lines = server.lines()
        workers = {line["pid"] for line in lines if "listening" in str(line["event"])}
        assert len(workers) == 2
    client.close()
    after = set(glob.glob("/tmp/recsvc-metrics-*"))
    assert after <= before  # the run's directory is removed


def test_a_failed_training_run_writes_a_failed_outcome(
        tmp_path: Path, redis_server: localredis.LocalRedis, prefix: str) -> None:
    observe.planted(tmp_path / "data", "F")
    with open(tmp_path / "data" / "interactions.csv", "a") as handle:
        handle.write("PersonNobodyZq,a1,accept,1700000000\n")  # a bad row; --strict fails
    (tmp_path / "config.toml").write_text(CONFIG)
    prom = tmp_path / "recsvc_train.prom"
    result = cli(train_args(tmp_path / "data", tmp_path / "config.toml", "--strict",
                            "--metrics-file", str(prom)), redis_server.url, prefix)
    assert result.returncode == 1
    assert 'recsvc_train_outcome{outcome="failed"} 1.0' in prom.read_text()
    assert "recsvc_train_last_success_timestamp_seconds" not in prom.read_text()
