"""A throwaway ``redis-server`` on a free port, for tests, ``make demo`` and ``make bench``.

Never touches the Redis on 6379: it starts its own process with no persistence and the
``noeviction`` policy a model store wants, and stops it afterwards.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass

INSTALL_HINT = "redis-server not found: install it with `apt-get install redis-server`"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_cluster_port() -> int:
    """A free port at most 55535 whose cluster bus port (+10000) is free too."""
    while True:
        port = free_port()
        if port > 55535:
            continue
        with socket.socket() as bus:
            try:
                bus.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        return port


@dataclass
class LocalRedis:
    process: subprocess.Popen[bytes]
    port: int
    workdir: str
    persist: bool = False
    appendfsync: str = "always"

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def pause(self) -> None:
        """SIGSTOP: the server hangs (connections stay open, nothing answers)."""
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.process.send_signal(signal.SIGCONT)

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(timeout=10)

    def restart(self) -> None:
        """Start again on the same port and folder after ``kill`` (with ``persist``, the
        append-only file brings the data back)."""
        self.process = _launch(self.port, self.workdir, self.persist, "0", self.appendfsync)
        _wait_ready(self.process, self.port)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.resume()
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
        shutil.rmtree(self.workdir, ignore_errors=True)


def start(port: int | None = None, maxmemory: str = "0", persist: bool = False,
          appendfsync: str = "always") -> LocalRedis:
    """A fresh redis-server; ``persist`` turns on an append-only file, fsynced ``appendfsync``
    ("always", or "everysec": what a process crash cannot lose, at a fraction of the cost)."""
    port = port or free_port()
    workdir = tempfile.mkdtemp(prefix="recsvc-redis-")
    process = _launch(port, workdir, persist, maxmemory, appendfsync)
    _wait_ready(process, port)
    return LocalRedis(process, port, workdir, persist, appendfsync)


def _launch(port: int, workdir: str, persist: bool, maxmemory: str,
            appendfsync: str = "always", extra: tuple[str, ...] = ()) -> subprocess.Popen[bytes]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError(INSTALL_HINT)
    return subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "yes" if persist else "no", "--appendfsync", appendfsync,
         "--dir", workdir, "--maxmemory", maxmemory, "--maxmemory-policy", "noeviction",
         "--lazyfree-lazy-user-del", "yes", *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


# A master the others no longer hear from for this long is failed over to its replica.
CLUSTER_NODE_TIMEOUT_MS = 1000


@dataclass
class LocalCluster:
    """A throwaway Redis Cluster: ``masters`` masters with ``replicas`` replicas each, every node
    a ``LocalRedis`` of its own (``kill`` one to test a failover)."""

    nodes: list[LocalRedis]
    masters: int

    @property
    def url(self) -> str:
        """One node's URL: cluster clients discover the others from it."""
        return self.nodes[0].url

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def wait_ok(self, timeout: float = 30.0) -> None:
        """Until every live node says ``cluster_state:ok`` (all slots served, a failover done)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(_cluster_ok(n.port) for n in self.nodes if n.process.poll() is None):
                return
            time.sleep(0.1)
        raise RuntimeError(f"redis cluster not ok within {timeout:g} s")


def start_cluster(masters: int = 3, replicas: int = 0) -> LocalCluster:
    """A fresh cluster of ``masters`` (every slot assigned) and ``replicas`` per master, built
    with ``redis-cli --cluster create``; ``cluster_state:ok`` on every node before it returns."""
    cli = shutil.which("redis-cli")
    if cli is None:
        raise RuntimeError("redis-cli not found: install it with `apt-get install redis-tools`")
    nodes: list[LocalRedis] = []
    try:
        for _ in range(masters * (1 + replicas)):
            port = free_cluster_port()
            workdir = tempfile.mkdtemp(prefix="recsvc-cluster-")
            extra = ("--cluster-enabled", "yes", "--cluster-config-file",
                     os.path.join(workdir, "nodes.conf"),
                     "--cluster-node-timeout", str(CLUSTER_NODE_TIMEOUT_MS))
            process = _launch(port, workdir, False, "0", extra=extra)
            _wait_ready(process, port)
            nodes.append(LocalRedis(process, port, workdir))
        created = subprocess.run(
            [cli, "--cluster", "create", *(f"127.0.0.1:{n.port}" for n in nodes),
             "--cluster-replicas", str(replicas), "--cluster-yes"],
            capture_output=True, text=True, timeout=60)
        if created.returncode != 0:
            raise RuntimeError(f"redis-cli --cluster create failed: {created.stdout[-1000:]}"
                               f"{created.stderr[-1000:]}")
        cluster = LocalCluster(nodes, masters)
        cluster.wait_ok()
        if replicas:
            _wait_replicas(nodes, masters * replicas)
        return cluster
    except BaseException:
        for node in nodes:
            node.stop()
        raise


def _cluster_ok(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"CLUSTER INFO\r\n")
            return b"cluster_state:ok" in sock.recv(4096)
    except OSError:
        return False


def _wait_replicas(nodes: list[LocalRedis], count: int, timeout: float = 30.0) -> None:
    """Until ``count`` replicas have finished their first sync with their master."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        synced = 0
        for node in nodes:
            try:
                with socket.create_connection(("127.0.0.1", node.port), timeout=0.5) as sock:
                    sock.sendall(b"INFO replication\r\n")
                    info = sock.recv(8192)
            except OSError:
                continue
            if b"role:slave" in info and b"master_link_status:up" in info:
                synced += 1
        if synced >= count:
            return
        time.sleep(0.1)
    raise RuntimeError(f"redis cluster replicas not in sync within {timeout:g} s")


def _wait_ready(process: subprocess.Popen[bytes], port: int) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(16).startswith(b"+PONG"):
                    return
        except OSError:
            if process.poll() is not None:
                break
            time.sleep(0.05)
    process.kill()
    raise RuntimeError(f"redis-server did not start on port {port}")


def answers(url: str) -> bool:
    """True when a Redis at ``url`` answers PING within a second."""
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1).ping())
    except (redis.RedisError, ValueError):
        return False


if __name__ == "__main__":  # `python -m training.localredis`: start one and print its URL
    server = start()
    print(server.url, os.getpid(), flush=True)
    try:
        signal.pause()
    finally:
        server.stop()
