"""The concurrency cap as a synchronous server's threads use it: calls beyond the cap refused,
and with ``working`` at most that many of the admitted calls working at once."""

from __future__ import annotations

import threading
import time

from recsvc.api.guard import CallLimiter


def test_admitted_calls_beyond_working_wait_their_turn_counted_in_flight() -> None:
    limiter = CallLimiter(5, working=2)
    inside, most, seen = 0, 0, []
    lock = threading.Lock()

    def call() -> None:
        nonlocal inside, most
        assert limiter.enter()
        with lock:
            inside += 1
            most = max(most, inside)
            seen.append(limiter.in_flight)
        time.sleep(0.05)
        with lock:
            inside -= 1
        limiter.leave()

    threads = [threading.Thread(target=call) for _ in range(5)]
    for thread in threads:
        thread.start()
    time.sleep(0.02)
    assert limiter.in_flight == 5  # the three waiting for a turn are in flight too
    assert not limiter.enter()  # the cap counts them: a sixth call is refused at once
    for thread in threads:
        thread.join()
    assert most == 2 and len(seen) == 5
    assert limiter.in_flight == 0
