"""`recsvc serve --workers N` supervises its workers (issue 18, point 7): real processes, real
SIGKILL."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from tests.integration import observe
from training import localredis

pytestmark = pytest.mark.integration

STARTED = re.compile(r"worker (\d+) started \(pid (\d+)\)")


class Serve:
    """A `recsvc serve --workers 2` process whose log lines are collected as they come."""

    def __init__(self, redis_url: str, prefix: str, **env: str) -> None:
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            [sys.executable, "-m", "recsvc", "serve", "--workers", "2"],
            env=dict(os.environ, RECSVC_REDIS_URL=redis_url, RECSVC_KEY_PREFIX=prefix,
                     RECSVC_HOST="127.0.0.1", RECSVC_PORT=str(localredis.free_port()), **env),
            stderr=subprocess.PIPE, text=True)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stderr:  # type: ignore[union-attr]
            self.lines.append(line.rstrip())

    def wait_for(self, pattern: str, after: int = 0, timeout: float = 30.0) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.lines[after:]:
                found = re.search(pattern, line)
                if found:
                    return found
            time.sleep(0.05)
        raise AssertionError(f"no line matching {pattern!r} in:\n" + "\n".join(self.lines))

    def worker_pid(self, slot: int) -> int:
        """The pid of the latest start of worker ``slot``."""
        pids = [int(m.group(2)) for m in map(STARTED.search, self.lines)
                if m and int(m.group(1)) == slot]
        return pids[-1]


@pytest.fixture
def serve(redis_server: localredis.LocalRedis, prefix: str) -> Iterator[type[Serve]]:
    started: list[Serve] = []

    def make(**env: str) -> Serve:
        server = Serve(redis_server.url, prefix, **env)
        started.append(server)
        return server

    yield make  # type: ignore[misc]
    for server in started:
        if server.process.poll() is None:
            # SIGTERM first: the parent stops its workers (a SIGKILL would orphan them when a
            # test fails midway).
            server.process.terminate()
            try:
                server.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.process.kill()
                server.process.wait()


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_killed_worker_is_logged_and_restarted_and_sigterm_still_stops_cleanly(
        serve: type[Serve]) -> None:
    server = serve()
    server.wait_for(r"worker 1 started")
    server.wait_for(r"recsvc listening")
    victim = server.worker_pid(0)
    os.kill(victim, signal.SIGKILL)
    server.wait_for(rf"worker 0 \(pid {victim}\) killed by SIGKILL; restarting it in 0\.5 s")
    replacement = int(server.wait_for(rf"worker 0 started \(pid (?!{victim}\))(\d+)\)").group(1))
    assert replacement != victim and alive(replacement)
    other = server.worker_pid(1)
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(timeout=30) == 0
    assert not alive(replacement) and not alive(other)


def test_a_worker_that_keeps_dying_stops_the_server_with_exit_5(serve: type[Serve]) -> None:
    server = serve(RECSVC_WORKER_MAX_DEATHS="2")
    server.wait_for(r"worker 1 started")
    other = server.worker_pid(1)
    first = server.worker_pid(0)
    os.kill(first, signal.SIGKILL)
    server.wait_for(rf"worker 0 \(pid {first}\) killed by SIGKILL; restarting")
    second = int(server.wait_for(rf"worker 0 started \(pid (?!{first}\))(\d+)\)").group(1))
    os.kill(second, signal.SIGKILL)
    assert server.process.wait(timeout=30) == 5
    server.wait_for(r"worker 0 .* killed by SIGKILL: 2 deaths in 60 s; stopping the other "
                    r"workers and exiting 5")
    assert not alive(other)


def worker_pids(port: int) -> set[int]:
    """The pid series of recsvc_worker_started_timestamp_seconds in the parent's /metrics."""
    return {int(dict(labels)["pid"]) for name, labels in observe.scrape(port)
            if name == "recsvc_worker_started_timestamp_seconds"}


def test_a_dead_workers_gauges_leave_the_metrics_when_it_is_restarted(
        serve: type[Serve]) -> None:
    """Multiprocess gauges live in a file per pid: the parent removes the dead pid's files, so
    /metrics never keeps a dead worker's values (its counters stay: they counted real calls)."""
    metrics_port = localredis.free_port()
    server = serve(RECSVC_METRICS_PORT=str(metrics_port))
    server.wait_for(r"worker 1 started")

    def wait_for_pids(expected: Callable[[], set[int]]) -> None:
        deadline = time.monotonic() + 30
        while (seen := worker_pids(metrics_port)) != expected():
            assert time.monotonic() < deadline, (seen, expected(), server.lines)
            time.sleep(0.1)

    wait_for_pids(lambda: {server.worker_pid(0), server.worker_pid(1)})
    victim = server.worker_pid(0)
    os.kill(victim, signal.SIGKILL)
    replacement = int(server.wait_for(rf"worker 0 started \(pid (?!{victim}\))(\d+)\)").group(1))
    wait_for_pids(lambda: {replacement, server.worker_pid(1)})
    assert victim not in worker_pids(metrics_port)
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(timeout=30) == 0


def test_two_sigterms_in_a_row_stop_the_parent_and_every_worker(serve: type[Serve]) -> None:
    """A second signal during the stop must not hang anything: a handler that took the lock
    the main thread was re-acquiring once left a worker running forever
    (recsvc/core/stopping.py)."""
    server = serve()
    server.wait_for(r"worker 1 started")
    server.wait_for(r"recsvc listening")
    workers = [server.worker_pid(0), server.worker_pid(1)]
    server.process.send_signal(signal.SIGTERM)
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(timeout=30) == 0
    assert not any(alive(pid) for pid in workers)
