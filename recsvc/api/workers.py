"""Several server processes on one port: start them, pass signals on, pin each to a CPU.

Used by ``recsvc serve --workers N`` and by the benchmark's echo server. Stdlib only.
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import socket
import subprocess
from types import FrameType

from recsvc.core.errors import ListenError

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


def check_can_listen(host: str, port: int) -> None:
    """Raise ListenError (one line) unless this process could listen on ``host:port`` now.

    Bound without SO_REUSEPORT, so a port another server shares through SO_REUSEPORT counts as
    in use too (grpcio would otherwise join it silently). Port 0 always passes.
    """
    if port == 0:
        return
    address = host.strip("[]")
    try:
        infos = socket.getaddrinfo(address, port, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ListenError(f"--host / RECSVC_HOST: cannot resolve {host!r} ({exc.strerror})"
                          ) from None
    family, kind, proto, _, sockaddr = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as grpcio does
        try:
            probe.bind(sockaddr)
        except OSError as exc:
            if exc.errno == errno.EADDRNOTAVAIL:
                raise ListenError(f"--host / RECSVC_HOST: {host} is not an address of this "
                                  f"machine ({exc.strerror})") from None
            raise ListenError(f"--port / RECSVC_PORT: cannot listen on {host}:{port} "
                              f"({exc.strerror}); choose another port or stop what holds it"
                              ) from None
