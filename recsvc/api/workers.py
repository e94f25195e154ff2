"""Several server processes on one port: start them, pass signals on, pin each to a CPU.

Used by ``recsvc serve --workers N`` and by the benchmark's echo server. Stdlib only.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
from types import FrameType

log = logging.getLogger(__name__)


def run_workers(command: list[str], env: dict[str, str], count: int) -> int:
    """Run ``count`` copies of ``command``, each told to reuse the port and pinned to a CPU.

    SIGTERM and SIGINT are passed on to every copy; returns the worst exit code. The benchmark's
    echo starts its workers the same way.
    """
    cpus = sorted(os.sched_getaffinity(0))
    children = [subprocess.Popen(command, env=dict(env, _RECSVC_WORKER="1",
                                                   _RECSVC_CPU=str(cpus[i % len(cpus)])))
                for i in range(count)]

    def forward(signum: int, frame: FrameType | None) -> None:
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    return max((child.wait() for child in children), default=0)


def is_worker() -> bool:
    """True in a process started by ``run_workers`` (it shares the port with its siblings)."""
    return os.environ.get("_RECSVC_WORKER") == "1"


def pin_worker_cpu() -> None:
    """A worker started by ``run_workers`` runs on its own CPU (less cache and GIL churn)."""
    cpu = os.environ.get("_RECSVC_CPU")
    if cpu is not None:
        try:
            os.sched_setaffinity(0, {int(cpu)})
        except OSError:
            log.warning("cannot pin worker to CPU %s", cpu)
