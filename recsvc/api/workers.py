"""Several server processes on one port: start them, keep them running, pass signals on, pin
each to a CPU; and the check that a port is free before any of them starts.

A worker that dies (a crash, the OOM killer, SIGKILL) is logged and restarted with a backoff; one
that keeps dying makes the parent stop the others and exit non-zero, so a supervisor above
(systemd, Kubernetes) sees the failure instead of a server quietly at reduced capacity.
With Prometheus multiprocess metrics (``PROMETHEUS_MULTIPROC_DIR`` in the workers' environment)
a dead worker's gauge files are removed as soon as its death is noticed, so /metrics never
keeps a dead pid's values (``recsvc.ops.endpoint.forget_process``).
Used by ``recsvc serve --workers N`` and by the benchmark's echo server.
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass

from recsvc.core.errors import ListenError
from recsvc.core.stopping import SignalStop
from recsvc.ops import endpoint, metrics

log = logging.getLogger(__name__)


EXIT_WORKERS_GAVE_UP = 5  # recsvc serve's exit code when a worker keeps dying


@dataclass(frozen=True)
class RestartPolicy:
    """A dead worker is restarted after ``backoff`` seconds, doubling per recent death up to
    ``backoff_max``; ``max_deaths`` deaths of one worker within ``window`` seconds make the
    parent stop the others and exit ``EXIT_WORKERS_GAVE_UP``: serving at reduced capacity in
    silence would hide a crash loop from whoever runs the service."""

    max_deaths: int = 5
    window: float = 60.0
    backoff: float = 0.5
    backoff_max: float = 8.0
    grace: float = 10.0  # for the others to stop when giving up
    poll: float = 0.1

    def delay(self, recent_deaths: int) -> float:
        return float(min(self.backoff_max, self.backoff * 2 ** (recent_deaths - 1)))


def describe_exit(code: int) -> str:
    """``killed by SIGKILL`` or ``exited with code 3``."""
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exited with code {code}"


class _Supervisor:
    """The parent's loop: start ``count`` workers, restart the dead ones, stop on a signal."""

    def __init__(self, command: list[str], env: dict[str, str], count: int,
                 policy: RestartPolicy, stopping: SignalStop) -> None:
        self.command, self.env, self.policy = command, env, policy
        self.cpus = sorted(os.sched_getaffinity(0))
        self.stopping = stopping
        self.children: dict[int, subprocess.Popen[bytes]] = {}
        self.deaths: dict[int, list[float]] = {slot: [] for slot in range(count)}
        self.restart_at: dict[int, float] = {}  # dead workers waiting for their backoff
        for slot in range(count):
            self._start(slot)

    def _start(self, slot: int) -> None:
        cpu = str(self.cpus[slot % len(self.cpus)])
        child = subprocess.Popen(self.command,
                                 env=dict(self.env, _RECSVC_WORKER="1", _RECSVC_CPU=cpu))
        self.children[slot] = child
        log.info("worker %d started (pid %d)", slot, child.pid)

    def _signal_alive(self, signum: int) -> None:
        for slot, child in self.children.items():
            if slot not in self.restart_at and child.poll() is None:
                child.send_signal(signum)

    def run(self) -> int:
        while not self.stopping.is_set():
            if self._reap(time.monotonic()):
                return self._give_up()
            now = time.monotonic()
            for slot, when in list(self.restart_at.items()):
                if now >= when and not self.stopping.is_set():
                    del self.restart_at[slot]
                    self._start(slot)
            self.stopping.wait(self.policy.poll)
        self._signal_alive(signal.SIGTERM)  # the stop reaches the workers from here
        codes = [child.wait() for slot, child in self.children.items()
                 if slot not in self.restart_at]
        # A worker still starting when our SIGTERM came dies of it before its handler exists:
        # that is the stop we asked for, not a failure.
        return max((0 if c == -signal.SIGTERM else 128 - c if c < 0 else c for c in codes),
                   default=0)

    def _reap(self, now: float) -> bool:
        """Note the workers that died; True when one died too often to go on."""
        for slot, child in self.children.items():
            if slot in self.restart_at or self.stopping.is_set():
                continue
            code = child.poll()
            if code is None:
                continue
            recent = [t for t in self.deaths[slot] if now - t < self.policy.window] + [now]
            self.deaths[slot] = recent
            if len(recent) >= self.policy.max_deaths:
                log.error("worker %d (pid %d) %s: %d deaths in %.0f s; stopping the other "
                          "workers and exiting %d rather than serve at reduced capacity",
                          slot, child.pid, describe_exit(code), len(recent),
                          self.policy.window, EXIT_WORKERS_GAVE_UP)
                return True
            self._forget(child.pid)
            delay = self.policy.delay(len(recent))
            log.error("worker %d (pid %d) %s; restarting it in %.1f s (death %d of %d allowed "
                      "in %.0f s)", slot, child.pid, describe_exit(code), delay, len(recent),
                      self.policy.max_deaths - 1, self.policy.window)
            self.restart_at[slot] = now + delay
        return False

    def _forget(self, pid: int) -> None:
        directory = self.env.get(endpoint.MULTIPROC_ENV)
        if directory:
            try:
                endpoint.forget_process(pid, directory)
            except OSError as exc:  # metrics must never stop the supervisor
                log.warning("cannot remove the metrics of dead worker pid %d: %s", pid, exc)

    def _give_up(self) -> int:
        self.stopping.set()
        self._signal_alive(signal.SIGTERM)
        deadline = time.monotonic() + self.policy.grace
        for slot, child in self.children.items():
            try:
                child.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("worker %d (pid %d) ignored SIGTERM; killing it", slot, child.pid)
                child.kill()
                child.wait()
        return EXIT_WORKERS_GAVE_UP


def run_workers(command: list[str], env: dict[str, str], count: int,
                policy: RestartPolicy | None = None) -> int:
    """Run ``count`` copies of ``command``, each told to reuse the port and pinned to a CPU,
    and keep them running (see RestartPolicy).

    SIGTERM and SIGINT are passed on to every copy; returns the worst exit code of the copies
    after a signal (0 after a clean stop), or EXIT_WORKERS_GAVE_UP when one kept dying. The
    benchmark's echo starts its workers the same way.
    """
    # Handled before the first worker starts (a stop then reaches every worker); the handler
    # takes no lock (recsvc/core/stopping.py says why).
    stopping = SignalStop().install()
    return _Supervisor(command, env, count, policy or RestartPolicy(), stopping).run()


def is_worker() -> bool:
    """True in a process started by ``run_workers`` (it shares the port with its siblings)."""
    return os.environ.get("_RECSVC_WORKER") == "1"


def worker_started() -> None:
    """In a worker: say so in the metrics (a series per live worker pid)."""
    if is_worker():
        metrics.worker_started(time.time())


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
