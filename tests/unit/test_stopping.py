"""The signal-driven stop takes no lock in its handler: signals that arrive while the main thread
waits, one after the other or both at once, always end the wait."""

from __future__ import annotations

import subprocess
import sys
import time

from recsvc.core.stopping import SignalStop

STRESS = """
import os, signal, threading, time
from recsvc.core.stopping import SignalStop

for i in range(300):
    stop = SignalStop().install()
    def twice(pause=(i % 3) * 0.0005):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(pause)
        os.kill(os.getpid(), signal.SIGINT)
    threading.Thread(target=twice).start()
    assert stop.wait(timeout=5), i
print("stopped 300 times")
"""


def test_wait_ends_on_set_or_timeout_and_names_the_signal() -> None:
    stop = SignalStop()
    started = time.monotonic()
    assert stop.wait(timeout=0.12) is False and not stop.is_set()
    assert time.monotonic() - started >= 0.12
    stop.set()
    assert stop.wait() is True and stop.is_set()
    assert stop.signal_name == "a stop request"


def test_two_signals_at_any_moment_always_end_the_wait() -> None:
    result = subprocess.run([sys.executable, "-c", STRESS], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert "stopped 300 times" in result.stdout
